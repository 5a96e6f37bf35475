// The guest drivers' VirtioTransport on a vhost-user front-end, the way a KVM VMM (QEMU's vhost-user-net /
// vhost-user-fs devices) drives a backend: guest RAM in a memfd shared with SET_MEM_TABLE, rings where the
// driver put them, real kick/call eventfds. The VMM owns the device's config space (QEMU's `mac=`, `tag=`),
// so `config` is given here; the backend only sees the rings.
//
// The Frontend is asynchronous and the drivers are synchronous (guest code), so the device is brought up in
// two steps: `open` fetches the backend's features; the driver's init runs (probe, negotiate, queue setup,
// DRIVER_OK recorded); `activate()` then sends the features, the memory table and the rings, as QEMU's
// vhost_dev_start does when the guest writes DRIVER_OK. After that the data path needs no Frontend call:
// submit() writes the kick eventfd, waitUsed() polls the used ring.
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, type ChainSpec, type UsedElement } from "@xen-vhost/virtio-queue";
import { Frontend, fromCRegion } from "@xen-vhost/vhost-user-master";
import { SimError } from "../src/error.js";
import { GuestAllocator, sleepSync, type DeviceIdentity, type VirtioTransport } from "../src/guest/index.js";

const VIRTIO_F_VERSION_1 = 1n << 32n;
const F_PROTOCOL_FEATURES = 1n << 30n;

export interface VhostUserTransportOptions {
  deviceId: number;
  /** The device's config space as the VMM presents it. */
  config: Uint8Array;
  /** Guest RAM size (default 4 MiB at GPA 0). */
  memorySize?: number;
  /**
   * Feature bits the VMM's device model provides itself rather than the backend (QEMU's virtio-net offers
   * VIRTIO_NET_F_MAC and STATUS from its own config; vhost_net.c's user_feature_bits do not include them, so
   * they never reach the backend).
   */
  vmmFeatures?: bigint;
  /** Also ack the STATUS protocol feature (DPDK then waits for SET_STATUS DRIVER_OK). Default true. */
  status?: boolean;
}

interface Ring {
  queue: DriverQueue;
  size: number;
  kick: EventFd;
  call: EventFd;
}

export class VhostUserTransport implements VirtioTransport, Disposable {
  readonly fe: Frontend;
  readonly memory: GuestMemory;
  readonly alloc: GuestAllocator;
  readonly offered: bigint;
  features = 0n;
  driverOkSeen = false;
  readonly #opts: VhostUserTransportOptions;
  readonly #rings: Ring[] = [];

  private constructor(fe: Frontend, memory: GuestMemory, offered: bigint, opts: VhostUserTransportOptions) {
    this.fe = fe;
    this.memory = memory;
    this.offered = offered;
    this.#opts = opts;
    this.alloc = new GuestAllocator(0x1000n, BigInt(opts.memorySize ?? 4 << 20));
  }

  static async open(socket: string, opts: VhostUserTransportOptions): Promise<VhostUserTransport> {
    const fe = await Frontend.connect(socket, { timeoutMs: 3000, retry: { attempts: 100, initialDelayMs: 10, maxDelayMs: 100 } });
    try {
      const protocolFeatures = (["MQ", "REPLY_ACK", "CONFIGURE_MEM_SLOTS", ...(opts.status ?? true ? ["STATUS"] : [])]) as ("MQ" | "REPLY_ACK" | "CONFIGURE_MEM_SLOTS" | "STATUS")[];
      const n = await fe.negotiate({ setFeatures: false, protocolFeatures });
      const memory = GuestMemory.fromRanges([[0, opts.memorySize ?? 4 << 20]]);
      return new VhostUserTransport(fe, memory, n.offeredFeatures, opts);
    } catch (err) {
      fe.close();
      throw err;
    }
  }

  probe(): DeviceIdentity {
    return { magic: 0x74726976, version: 2, deviceId: this.#opts.deviceId, vendorId: 0 };
  }

  negotiate(wanted: bigint): bigint {
    // The device's features are the backend's (minus the vhost-user transport bit), as QEMU's vhost_get_features.
    const vmm = this.#opts.vmmFeatures ?? 0n;
    this.features = ((this.offered & ~F_PROTOCOL_FEATURES) | vmm) & (wanted | VIRTIO_F_VERSION_1);
    if ((this.features & VIRTIO_F_VERSION_1) === 0n) throw new SimError("GuestFailed", "backend does not offer VIRTIO_F_VERSION_1");
    return this.features;
  }

  readConfigBytes(offset: number, len: number): Uint8Array {
    if (offset + len > this.#opts.config.length) return new Uint8Array(len);
    return this.#opts.config.slice(offset, offset + len);
  }

  readConfig32(offset: number): number {
    return new DataView(this.readConfigBytes(offset, 4).buffer).getUint32(0, true);
  }

  readConfig64(offset: number): bigint {
    return new DataView(this.readConfigBytes(offset, 8).buffer).getBigUint64(0, true);
  }

  setupQueue(index: number, size = 64): DriverQueue {
    if (this.#rings[index]) throw new SimError("GuestFailed", `queue ${index} already set up`);
    const layout = DriverQueue.layout(0n, size);
    const base = this.alloc.alloc(Number(layout.end), 4096);
    const queue = DriverQueue.create(this.memory, base, size);
    this.#rings[index] = { queue, size, kick: new EventFd(), call: new EventFd() };
    return queue;
  }

  driverOk(): void {
    this.driverOkSeen = true;
  }

  /** vhost_dev_start: SET_FEATURES, the memory table, every ring, SET_STATUS DRIVER_OK. */
  async activate(): Promise<void> {
    if (!this.driverOkSeen) throw new SimError("GuestFailed", "the driver has not set DRIVER_OK");
    const vmmOnly = (this.#opts.vmmFeatures ?? 0n) & ~this.offered;
    await this.fe.setFeatures((this.features & ~vmmOnly) | (this.offered & F_PROTOCOL_FEATURES));
    await this.fe.setMemory(this.memory.vhostUserRegions().map(fromCRegion));
    for (const [i, r] of this.#rings.entries()) {
      if (!r) continue;
      const q = r.queue;
      await this.fe.setupVring(i, {
        num: r.size, desc: this.fe.userAddrOf(q.descTable.value), avail: this.fe.userAddrOf(q.availRing.value),
        used: this.fe.userAddrOf(q.usedRing.value), kick: r.kick.fd, call: r.call.fd,
      });
    }
    await this.fe.driverOk();
  }

  #ring(index: number): Ring {
    const r = this.#rings[index];
    if (!r) throw new SimError("InvalidArgument", `queue ${index} is not set up`);
    return r;
  }

  submit(index: number, chain: ChainSpec): number {
    const r = this.#ring(index);
    const head = r.queue.add(chain);
    if (r.queue.needsNotification()) r.kick.write(1);
    return head;
  }

  pollUsed(index: number): UsedElement<unknown> | undefined {
    return this.#ring(index).queue.getUsed();
  }

  waitUsed(index: number, timeoutMs = 5000): UsedElement<unknown> {
    const r = this.#ring(index);
    const deadline = Date.now() + timeoutMs;
    for (let spins = 0; ; spins++) {
      const u = r.queue.getUsed();
      if (u) return u;
      r.call.read(); // drain the interrupt; the used ring is the truth
      if (Date.now() > deadline) throw new SimError("Timeout", `queue ${index}: no used buffer from the backend`);
      if (spins > 1000) sleepSync(0.2);
    }
  }

  reset(): void {
    // A real reset goes through GET_VRING_BASE (async); tests call stop() instead.
  }

  /** Stops the rings (GET_VRING_BASE) as a device reset would. */
  async stop(): Promise<void> {
    for (const [i, r] of this.#rings.entries()) if (r) await this.fe.getVringBase(i);
  }

  close(): void {
    this.fe.close();
    for (const r of this.#rings) {
      r?.kick.close();
      r?.call.close();
    }
    this.memory.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
