// The simulator's /dev/xen/evtchn: the same contract as xen-sys's EvtchnDevice (drivers/xen/evtchn.c), with
// the hot path in shared memory. `fd` is an eventfd that is readable while ports are pending; readPending
// harvests this device's pending set (masking what it returns, as the kernel masks delivered ports); notify
// sets the peer's bit and writes the peer's eventfd, without a message to the simulator.
import { EventFd, mmap, munmap, MmapConstants } from "@xen-vhost/vmm-sys-util";
import { XenError, checkDomid, type EventChannelDevice } from "@xen-vhost/xen-sys";
import {
  EVTCHN_NR_PORTS, PAGE_SIZE, isPending, raisePending, reselect, takePending, type EndpointDescription,
} from "../layout.js";
import { closeAll, type SimRpc } from "./rpc.js";

/** A peer to notify: its pending set (if any) and its eventfd, both owned here. */
export class Peer implements Disposable {
  readonly port: number;
  readonly #eventFd: EventFd;
  readonly #page: ArrayBuffer | undefined;
  readonly #words: Uint32Array | undefined;
  readonly #base: number;

  /** Takes ownership of the fds the description references (the rest stay with the caller). */
  constructor(desc: EndpointDescription, fds: readonly number[]) {
    this.port = desc.port;
    this.#eventFd = EventFd.fromFd(fds[desc.eventFd]!);
    if (desc.pendingFd >= 0) {
      const pageOffset = desc.pendingOffset - (desc.pendingOffset % PAGE_SIZE);
      this.#page = mmap(PAGE_SIZE, { fd: fds[desc.pendingFd]!, offset: pageOffset, flags: MmapConstants.MAP_SHARED });
      this.#words = new Uint32Array(this.#page);
      this.#base = (desc.pendingOffset - pageOffset) / 4;
    } else {
      this.#base = 0;
    }
  }

  /** Xen's evtchn_send for an interdomain channel: set pending at the peer, then the upcall. */
  notify(): void {
    if (this.#words) raisePending(this.#words, this.#base, this.port);
    this.#eventFd.write(1);
  }

  close(): void {
    this.#eventFd.close();
    if (this.#page) munmap(this.#page);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Builds a Peer from a description, closing every received fd (the Peer keeps its own eventfd). */
export function peerFrom(desc: EndpointDescription | null | undefined, fds: number[]): Peer | undefined {
  try {
    if (!desc) return undefined;
    const peer = new Peer(desc, fds);
    // The eventfd now belongs to the Peer; the memfd was only needed for mmap.
    closeAll(fds.filter((_, i) => i !== desc.eventFd));
    return peer;
  } catch (err) {
    closeAll(fds);
    throw err;
  }
}

export class SimEventChannelDevice implements EventChannelDevice {
  readonly #rpc: SimRpc;
  readonly #id: number;
  #eventFd: EventFd | undefined;
  readonly #page: ArrayBuffer;
  readonly #words: Uint32Array;
  readonly #masked = new Uint8Array(EVTCHN_NR_PORTS);
  /** Bound ports and their peers (undefined while the peer is unknown: unbound, virq). */
  readonly #ports = new Map<number, Peer | undefined>();

  private constructor(rpc: SimRpc, id: number, eventFd: EventFd, page: ArrayBuffer) {
    this.#rpc = rpc;
    this.#id = id;
    this.#eventFd = eventFd;
    this.#page = page;
    this.#words = new Uint32Array(page);
  }

  static open(rpc: SimRpc): SimEventChannelDevice {
    const { result, fds } = rpc.call<{ device: number }>("open /dev/xen/evtchn", "evtchn.open");
    try {
      const page = mmap(PAGE_SIZE, { fd: fds[1]!, flags: MmapConstants.MAP_SHARED });
      closeAll([fds[1]!]);
      return new SimEventChannelDevice(rpc, result.device, EventFd.fromFd(fds[0]!), page);
    } catch (err) {
      closeAll(fds);
      throw err;
    }
  }

  get fd(): number {
    if (!this.#eventFd) throw XenError.closed("evtchn device");
    return this.#eventFd.fd;
  }

  get closed(): boolean {
    return this.#eventFd === undefined;
  }

  #check(): EventFd {
    if (!this.#eventFd) throw XenError.closed("evtchn device");
    return this.#eventFd;
  }

  bindInterdomain(remoteDomain: number, remotePort: number): number {
    checkDomid(remoteDomain, "remote domain");
    this.#check();
    const { result, fds } = this.#rpc.call<{ port: number; endpoint: EndpointDescription | null }>(
      "IOCTL_EVTCHN_BIND_INTERDOMAIN", "evtchn.bindInterdomain", { device: this.#id, domid: remoteDomain, port: remotePort }, { domid: remoteDomain },
    );
    this.#ports.set(result.port, peerFrom(result.endpoint, fds));
    return result.port;
  }

  bindUnboundPort(remoteDomain: number): number {
    checkDomid(remoteDomain, "remote domain");
    this.#check();
    const { result } = this.#rpc.call<{ port: number }>("IOCTL_EVTCHN_BIND_UNBOUND_PORT", "evtchn.bindUnbound", { device: this.#id, domid: remoteDomain }, { domid: remoteDomain });
    this.#ports.set(result.port, undefined);
    return result.port;
  }

  bindVirq(virq: number): number {
    this.#check();
    const { result } = this.#rpc.call<{ port: number }>("IOCTL_EVTCHN_BIND_VIRQ", "evtchn.bindVirq", { device: this.#id, virq });
    this.#ports.set(result.port, undefined);
    return result.port;
  }

  unbind(port: number): void {
    this.#check();
    this.#rpc.call("IOCTL_EVTCHN_UNBIND", "evtchn.unbind", { device: this.#id, port });
    this.#ports.get(port)?.close();
    this.#ports.delete(port);
    this.#masked[port] = 0;
  }

  notify(port: number): void {
    this.#check();
    if (!this.#ports.has(port)) {
      throw new XenError("OperationFailed", `IOCTL_EVTCHN_NOTIFY: ENOTCONN (port ${port} is not bound here)`, { op: "IOCTL_EVTCHN_NOTIFY", code: "ENOTCONN", errno: 107 });
    }
    let peer = this.#ports.get(port);
    if (!peer) {
      // Not linked when we last looked (our unbound port, bound by the other side since): ask once.
      const { result, fds } = this.#rpc.call<{ endpoint: EndpointDescription | null }>("IOCTL_EVTCHN_NOTIFY", "evtchn.endpoint", { device: this.#id, port });
      peer = peerFrom(result.endpoint, fds);
      if (!peer) return; // evtchn_send on ECS_UNBOUND: nothing to do (common/event_channel.c)
      this.#ports.set(port, peer);
    }
    peer.notify();
  }

  restrict(domid: number): void {
    checkDomid(domid);
    this.#check();
    this.#rpc.call("IOCTL_EVTCHN_RESTRICT_DOMID", "evtchn.restrict", { device: this.#id, domid });
  }

  readPending(max = 64): Uint32Array {
    if (!Number.isInteger(max) || max < 1 || max > 4096) throw new RangeError(`max ${max} must be 1..4096`);
    const ev = this.#check();
    ev.read();
    const ports = takePending(this.#words, 0, (p) => this.#masked[p] === 1, max);
    for (const p of ports) this.#masked[p] = 1;
    // More than `max` pending: keep the fd readable so the caller comes back for the rest.
    if (ports.length === max) ev.write(1);
    return Uint32Array.from(ports);
  }

  unmask(ports: readonly number[] | Uint32Array): void {
    const ev = this.#check();
    let again = false;
    for (const p of ports) {
      if (!Number.isInteger(p) || p < 0 || p >= EVTCHN_NR_PORTS) continue;
      this.#masked[p] = 0;
      // evtchn_2l_unmask: an event that arrived while masked is delivered now.
      if (isPending(this.#words, 0, p)) {
        reselect(this.#words, 0, p);
        again = true;
      }
    }
    if (again) ev.write(1);
  }

  close(): void {
    const ev = this.#eventFd;
    if (!ev) return;
    this.#eventFd = undefined;
    for (const peer of this.#ports.values()) peer?.close();
    this.#ports.clear();
    try {
      if (!this.#rpc.client.closed) this.#rpc.call("close evtchn", "evtchn.close", { device: this.#id });
    } catch {
      // the simulator releases the device when the connection closes anyway
    }
    munmap(this.#page);
    ev.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
