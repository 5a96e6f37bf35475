// The kernel's /dev/xen/evtchn (Linux include/uapi/xen/evtchn.h): the EventChannelDevice of PrivcmdTransport.
import { ioctl, read, write } from "@xen-vhost/vmm-sys-util";
import {
  EVTCHN_DEVICE, IOCTL_EVTCHN_BIND_INTERDOMAIN, IOCTL_EVTCHN_BIND_UNBOUND_PORT, IOCTL_EVTCHN_BIND_VIRQ,
  IOCTL_EVTCHN_NOTIFY, IOCTL_EVTCHN_RESTRICT_DOMID, IOCTL_EVTCHN_UNBIND, IoctlEvtchnBindInterdomain,
  IoctlEvtchnBindUnboundPort, IoctlEvtchnBindVirq, IoctlEvtchnNotify, IoctlEvtchnRestrictDomid, IoctlEvtchnUnbind,
} from "./abi/evtchn.js";
import { XenError } from "./error.js";
import { checkDomid, checkU32, closeQuietly, openDevice } from "./device.js";
import type { EventChannelDevice } from "./transport.js";

export class EvtchnDevice implements EventChannelDevice {
  #fd: number;
  readonly path: string;
  /** The IOCTL_EVTCHN_NOTIFY argument (struct ioctl_evtchn_notify { unsigned int port; }), reused per kick. */
  readonly #notifyArg = new Uint32Array(IoctlEvtchnNotify.size / 4);

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.path = path;
  }

  /** Opens the device nonblocking. @throws XenError DeviceMissing naming the node */
  static open(path: string = EVTCHN_DEVICE): EvtchnDevice {
    return new EvtchnDevice(openDevice(path, { nonblocking: true }), path);
  }

  get fd(): number {
    if (this.#fd < 0) throw XenError.closed("evtchn device");
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  #ioctl(name: string, request: number, arg: ArrayBufferView | number): number {
    try {
      return ioctl(this.fd, request, arg);
    } catch (err) {
      throw XenError.fromSysError(err, name, { path: this.path });
    }
  }

  bindInterdomain(remoteDomain: number, remotePort: number): number {
    checkDomid(remoteDomain, "remote domain");
    checkU32(remotePort, "remote port");
    const arg = IoctlEvtchnBindInterdomain.encode({ remote_domain: remoteDomain, remote_port: remotePort });
    return this.#ioctl("IOCTL_EVTCHN_BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN, arg);
  }

  bindUnboundPort(remoteDomain: number): number {
    checkDomid(remoteDomain, "remote domain");
    const arg = IoctlEvtchnBindUnboundPort.encode({ remote_domain: remoteDomain });
    return this.#ioctl("IOCTL_EVTCHN_BIND_UNBOUND_PORT", IOCTL_EVTCHN_BIND_UNBOUND_PORT, arg);
  }

  bindVirq(virq: number): number {
    checkU32(virq, "virq");
    return this.#ioctl("IOCTL_EVTCHN_BIND_VIRQ", IOCTL_EVTCHN_BIND_VIRQ, IoctlEvtchnBindVirq.encode({ virq }));
  }

  unbind(port: number): void {
    checkU32(port, "port");
    this.#ioctl("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND, IoctlEvtchnUnbind.encode({ port }));
  }

  /** IOCTL_EVTCHN_NOTIFY. Allocation-free: a device model calls it once per answered request. */
  notify(port: number): void {
    checkU32(port, "port");
    this.#notifyArg[0] = port;
    this.#ioctl("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY, this.#notifyArg);
  }

  restrict(domid: number): void {
    checkDomid(domid);
    this.#ioctl("IOCTL_EVTCHN_RESTRICT_DOMID", IOCTL_EVTCHN_RESTRICT_DOMID, IoctlEvtchnRestrictDomid.encode({ domid }));
  }

  readPending(max = 64): Uint32Array {
    if (!Number.isInteger(max) || max < 1 || max > 4096) throw new RangeError(`max ${max} must be 1..4096`);
    const buf = new Uint32Array(max);
    const n = this.readPendingInto(buf);
    return n === 0 ? new Uint32Array(0) : buf.slice(0, n);
  }

  /**
   * Reads up to `buffer.length` pending ports into `buffer` (each now masked) and returns how many; 0 when
   * none are pending. The allocation-free form of `readPending` for an event loop that reuses one buffer.
   * @throws RangeError for an empty buffer; XenError `Protocol` for a read that is not whole ports
   */
  readPendingInto(buffer: Uint32Array): number {
    if (!(buffer instanceof Uint32Array) || buffer.length === 0) throw new RangeError("buffer must be a non-empty Uint32Array");
    let n: number | null;
    try {
      n = read(this.fd, buffer);
    } catch (err) {
      throw XenError.fromSysError(err, "read evtchn", { path: this.path });
    }
    if (n === null || n === 0) return 0;
    if (n % 4 !== 0) {
      throw new XenError("Protocol", `read evtchn: short read of ${n} bytes (not whole ports)`, { op: "read evtchn", path: this.path });
    }
    return n / 4;
  }

  /** Writes the ports back (unmasks them). A Uint32Array is written as it is, without a copy. */
  unmask(ports: readonly number[] | Uint32Array): void {
    if (ports.length === 0) return;
    const buf = ports instanceof Uint32Array ? ports : Uint32Array.from(ports);
    let n: number | null;
    try {
      n = write(this.fd, buf);
    } catch (err) {
      throw XenError.fromSysError(err, "write evtchn (unmask)", { path: this.path });
    }
    if (n !== buf.byteLength) {
      throw new XenError("Protocol", `write evtchn (unmask): short write ${String(n)}/${buf.byteLength}`, {
        op: "write evtchn (unmask)",
        path: this.path,
      });
    }
  }

  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    closeQuietly(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

