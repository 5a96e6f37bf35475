// Event channels (xen/common/event_channel.c) and the Linux /dev/xen/evtchn device semantics
// (drivers/xen/evtchn.c) for dom0's devices. Each device owns a pending set in a memfd and an eventfd;
// the simulator hands senders the receiver's pending set + eventfd at bind time, so events flow without it.
import { EventFd, ftruncate, memfdCreate, mmap, munmap, close as closeFd } from "@xen-vhost/vmm-sys-util";
import { DOMPAGE_PENDING, PAGE_SIZE, raisePending, type EndpointDescription } from "../layout.js";
import { refuse } from "../error.js";
import type { Domain, PortRec } from "./domain.js";

/** An open /dev/xen/evtchn of a dom0 client. */
export class EvtchnDeviceRec {
  readonly id: number;
  readonly domid: number;
  readonly eventFd = new EventFd();
  readonly memfd: number;
  readonly page: ArrayBuffer;
  readonly words: Uint32Array;
  readonly ports = new Set<number>();
  restrictDomid: number | undefined;

  constructor(id: number, domid: number) {
    this.id = id;
    this.domid = domid;
    this.memfd = memfdCreate(`xen-sim-evtchn-${id}`);
    ftruncate(this.memfd, PAGE_SIZE);
    this.page = mmap(PAGE_SIZE, { fd: this.memfd });
    this.words = new Uint32Array(this.page);
  }

  /** Raises `port` on this device (what Xen's set_pending + the kernel's upcall amount to). */
  raise(port: number): void {
    raisePending(this.words, 0, port);
    this.eventFd.write(1);
  }

  release(): void {
    this.eventFd.close();
    munmap(this.page);
    closeFd(this.memfd);
  }
}

/** An endpoint with the fds it needs, before fd indices are assigned for a message. */
export interface Endpoint {
  eventFd: number;
  pendingFd: number | undefined;
  pendingOffset: number;
  port: number;
}

/** Where events sent to (dom, port) go. */
export function endpointOf(dom: Domain, port: number, rec: PortRec): Endpoint {
  switch (rec.consumer.kind) {
    case "device":
      return { eventFd: rec.consumer.device.eventFd.fd, pendingFd: rec.consumer.device.memfd, pendingOffset: 0, port };
    case "ioreq":
      // A Xen-consumed channel (common/ioreq.c alloc_unbound_xen_event_channel): the notification wakes the
      // vCPU waiting in ioreq_send, nothing is pending in the guest's own set.
      return { eventFd: dom.vcpuWake[rec.consumer.vcpu]!.fd, pendingFd: undefined, pendingOffset: 0, port };
    case "guest":
      return { eventFd: dom.upcall.fd, pendingFd: dom.pageFd, pendingOffset: DOMPAGE_PENDING, port };
  }
}

/** Packs endpoints for a message: the descriptions reference `fds` by index. */
export function packEndpoints(eps: readonly (Endpoint | undefined)[]): { descs: (EndpointDescription | null)[]; fds: number[] } {
  const fds: number[] = [];
  const index = (fd: number): number => {
    const i = fds.indexOf(fd);
    if (i >= 0) return i;
    fds.push(fd);
    return fds.length - 1;
  };
  const descs = eps.map((e) =>
    e
      ? { eventFd: index(e.eventFd), pendingFd: e.pendingFd === undefined ? -1 : index(e.pendingFd), pendingOffset: e.pendingOffset, port: e.port }
      : null,
  );
  return { descs, fds };
}

/**
 * evtchn_bind_interdomain: binds a new local port of `local` to `remotePort` of `remote`, which must be
 * ECS_UNBOUND and offered to `local` (else EINVAL). Sets the new local port pending, as Xen does ("we may
 * have lost notifications on the remote unbound port").
 */
export function bindInterdomain(local: Domain, consumer: PortRec["consumer"], remote: Domain, remotePort: number): number {
  const r = remote.ports.get(remotePort);
  if (!r) return refuse("EINVAL", `port ${remotePort} of domain ${remote.domid} is not allocated`);
  if (r.state !== "unbound") return refuse("EINVAL", `port ${remotePort} of domain ${remote.domid} is not unbound`);
  if (r.remoteDomid !== local.domid) return refuse("EINVAL", `port ${remotePort} of domain ${remote.domid} is offered to domain ${r.remoteDomid}`);
  const lport = local.allocPort({ state: "interdomain", remoteDomid: remote.domid, remotePort, consumer });
  r.state = "interdomain";
  r.remotePort = lport;
  remote.touch();
  local.touch();
  return lport;
}

/** evtchn_close: the peer of an interdomain channel falls back to ECS_UNBOUND (offered to us again). */
export function closePort(dom: Domain, port: number, peerOf: (domid: number) => Domain | undefined): void {
  const rec = dom.ports.get(port);
  if (!rec) return refuse("EINVAL", `port ${port} is not allocated`);
  dom.ports.delete(port);
  if (rec.state === "interdomain") {
    const peer = peerOf(rec.remoteDomid);
    const pr = peer?.ports.get(rec.remotePort);
    if (peer && pr && pr.state === "interdomain" && pr.remotePort === port && pr.remoteDomid === dom.domid) {
      pr.state = "unbound";
      pr.remoteDomid = dom.domid;
      pr.remotePort = 0;
      peer.touch();
    }
  }
  dom.touch();
}
