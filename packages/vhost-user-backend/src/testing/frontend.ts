// A small, strict vhost-user front-end for tests of back-ends (ours, and the daemons built on it): it speaks
// through vhost-user-protocol's Connection, shares memfd guest memory and drives rings with virtio-queue's
// DriverQueue, the way a KVM VMM does. It is deliberately simple (one request at a time, no reconnect);
// @xen-vhost/vhost-user-master is the full front-end.
import { EventFd, UnixStream } from "@xen-vhost/vmm-sys-util";
import type { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, type ChainSpec, type UsedElement } from "@xen-vhost/virtio-queue";
import {
  Connection, FrontendReq, VhostUserError, VhostUserProtocolFeature, VhostUserHeaderFlag, ackExpectation, hasProtocolFeature, messageInfo, replyExpectation,
  type Expectation, type MemoryRegion, type Payload, type ProtocolFeatureName, type VhostUserMessage,
} from "@xen-vhost/vhost-user-protocol";

export interface TestRing {
  readonly index: number;
  readonly driver: DriverQueue<number>;
  readonly kick: EventFd;
  readonly call: EventFd;
}

export class TestFrontend implements Disposable {
  readonly conn: Connection;
  #waiting: { expect: Expectation; resolve: (m: VhostUserMessage) => void; reject: (e: Error) => void } | undefined;
  #chain: Promise<unknown> = Promise.resolve();
  protocolFeatures = 0n;
  /** Set once the connection closes, with the cause. */
  closedWith: VhostUserError | undefined;
  #closed: Promise<VhostUserError | undefined>;

  constructor(stream: UnixStream) {
    let onClose!: (c: VhostUserError | undefined) => void;
    this.#closed = new Promise((r) => (onClose = r));
    this.conn = new Connection(stream, {
      name: "test-frontend",
      expect: (h) =>
        this.#waiting && h.request === (this.#waiting.expect as { request: number }).request
          ? this.#waiting.expect
          : new VhostUserError("InvalidMessage", `unexpected message ${h.request} from the back-end`),
    });
    this.conn.on("message", (m) => {
      const w = this.#waiting;
      this.#waiting = undefined;
      w?.resolve(m);
    });
    this.conn.on("close", (cause) => {
      this.closedWith = cause;
      const w = this.#waiting;
      this.#waiting = undefined;
      w?.reject(cause ?? new VhostUserError("Disconnected", "closed"));
      onClose(cause);
    });
  }

  static connect(path: string): TestFrontend {
    return new TestFrontend(UnixStream.connect(path));
  }

  /** Resolves when the back-end closes the connection. */
  whenClosed(): Promise<VhostUserError | undefined> {
    return this.#closed;
  }

  /**
   * Sends `name` and waits for its reply (or, with `ack` and REPLY_ACK negotiated, its u64 status).
   * Resolves with the reply message, or undefined for requests without one.
   */
  request(name: keyof typeof FrontendReq, payload: Payload = { kind: "none" }, fds: readonly number[] = [], options: { ack?: boolean } = {}): Promise<VhostUserMessage | undefined> {
    const run = async (): Promise<VhostUserMessage | undefined> => {
      const id = FrontendReq[name];
      const info = messageInfo("frontend", id)!;
      const own = replyExpectation("frontend", info, (f) => hasProtocolFeature(this.protocolFeatures, f));
      const ack = !own && (options.ack ?? false) && hasProtocolFeature(this.protocolFeatures, "REPLY_ACK");
      const expect = own ?? (ack ? ackExpectation("frontend", id) : undefined);
      const reply = expect
        ? new Promise<VhostUserMessage>((resolve, reject) => (this.#waiting = { expect, resolve, reject }))
        : undefined;
      this.conn.send({ request: id, flags: VhostUserHeaderFlag.VERSION | (ack ? VhostUserHeaderFlag.NEED_REPLY : 0), payload }, fds);
      return reply ? await reply : undefined;
    };
    const p = this.#chain.then(run, run);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  async u64(name: keyof typeof FrontendReq): Promise<bigint> {
    const m = await this.request(name);
    if (m?.payload.kind !== "u64") throw new Error(`${name}: no u64 reply`);
    return m.payload.value;
  }

  /** Sends a u64 request asking for REPLY_ACK (when negotiated) and returns the status (0n = ok). */
  async ack(name: keyof typeof FrontendReq, payload: Payload = { kind: "none" }, fds: readonly number[] = []): Promise<bigint | undefined> {
    const m = await this.request(name, payload, fds, { ack: true });
    return m?.payload.kind === "u64" ? m.payload.value : undefined;
  }

  /**
   * The usual start: features (all offered, or `features`), protocol features (`protocol` names that the
   * back-end offers; XEN_MMAP switches the codec to 40-byte regions), SET_OWNER.
   */
  async negotiate(options: { features?: bigint; protocol?: readonly ProtocolFeatureName[] } = {}): Promise<{ features: bigint; protocol: bigint }> {
    const features = await this.u64("GET_FEATURES");
    const acked = options.features ?? features;
    await this.request("SET_FEATURES", { kind: "u64", value: acked });
    const offered = await this.u64("GET_PROTOCOL_FEATURES");
    let want = 0n;
    for (const n of options.protocol ?? ["MQ", "REPLY_ACK", "CONFIG"]) {
      if (hasProtocolFeature(offered, n)) want |= 1n << BigInt(bitOf(n));
    }
    await this.request("SET_PROTOCOL_FEATURES", { kind: "u64", value: want });
    this.protocolFeatures = want;
    if (hasProtocolFeature(want, "XEN_MMAP")) this.conn.setCodec({ xenMmap: true });
    await this.ack("SET_OWNER");
    return { features, protocol: offered };
  }

  /** SET_MEM_TABLE with every region of `mem` (memfd regions: fds and user addresses from vm-memory). */
  setMemTable(mem: GuestMemory, xen?: (r: MemoryRegion) => MemoryRegion["xen"]): Promise<bigint | undefined> {
    const descs = mem.vhostUserRegions();
    const regions: MemoryRegion[] = descs.map((d) => {
      const r: MemoryRegion = { guestPhysAddr: d.guest_phys_addr, memorySize: d.memory_size, userAddr: d.userspace_addr, mmapOffset: d.mmap_offset };
      const x = xen?.(r);
      return x ? { ...r, xen: x } : r;
    });
    return this.ack("SET_MEM_TABLE", { kind: "memory", regions }, descs.map((d) => d.fd));
  }

  /**
   * Creates a ring at guest address `base` and hands it to the back-end: NUM, ADDR (front-end VAs), BASE,
   * CALL, KICK, ENABLE.
   */
  async setupRing(mem: GuestMemory, index: number, base: bigint, size: number, options: { eventIdx?: boolean; enable?: boolean } = {}): Promise<TestRing> {
    const driver = DriverQueue.create<number>(mem, base, size, { eventIdx: options.eventIdx ?? false, indirectMaxEntries: 4 });
    const va = (gpa: bigint): bigint => {
      for (const d of mem.vhostUserRegions())
        if (gpa >= d.guest_phys_addr && gpa < d.guest_phys_addr + d.memory_size) return d.userspace_addr + (gpa - d.guest_phys_addr);
      throw new Error(`gpa ${gpa} not in memory`);
    };
    const kick = new EventFd();
    const call = new EventFd();
    await this.ack("SET_VRING_NUM", { kind: "vring-state", index, num: size });
    await this.ack("SET_VRING_ADDR", {
      kind: "vring-addr", index, flags: 0, desc: va(driver.descTable.value), used: va(driver.usedRing.value), avail: va(driver.availRing.value), log: 0n,
    });
    await this.ack("SET_VRING_BASE", { kind: "vring-state", index, num: 0 });
    await this.ack("SET_VRING_CALL", { kind: "u64", value: BigInt(index) }, [call.fd]);
    await this.ack("SET_VRING_KICK", { kind: "u64", value: BigInt(index) }, [kick.fd]);
    if (options.enable ?? true) await this.ack("SET_VRING_ENABLE", { kind: "vring-state", index, num: 1 });
    return { index, driver, kick, call };
  }

  async getConfig(offset: number, size: number): Promise<Uint8Array | undefined> {
    const m = await this.request("GET_CONFIG", { kind: "config", offset, flags: 0, data: new Uint8Array(size) });
    return m?.payload.kind === "config" ? m.payload.data : undefined;
  }

  close(): void {
    this.conn.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function bitOf(n: ProtocolFeatureName): number {
  return VhostUserProtocolFeature[n];
}

/** Waits until `call` is signalled (polling its nonblocking counter on the event loop), or rejects after `ms`. */
export async function waitForCall(call: EventFd, ms = 2000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    if (call.read() !== null) return;
    if (Date.now() > until) throw new Error("timed out waiting for the call eventfd");
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Harvests used elements until `n` arrived (polling on the event loop), or rejects after `ms`. */
export async function collectUsed(ring: TestRing, n = 1, ms = 2000): Promise<UsedElement<number>[]> {
  const until = Date.now() + ms;
  const out: UsedElement<number>[] = [];
  for (;;) {
    out.push(...ring.driver.harvest(n - out.length));
    if (out.length >= n) return out;
    if (Date.now() > until) throw new Error(`timed out: ${out.length} of ${n} used element(s)`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Adds a chain and kicks (always: tests want the back-end to look). Returns the head. */
export function post(ring: TestRing, chain: ChainSpec, token?: number): number {
  const head = ring.driver.add(chain, token === undefined ? {} : { token });
  ring.kick.write(1);
  return head;
}
