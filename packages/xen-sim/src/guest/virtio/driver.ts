// The guest's virtio-mmio driver (virtio 1.2 section 4.2.3 "MMIO-specific Initialization And Device
// Operation", Linux drivers/virtio/virtio_mmio.c): probe, reset, feature negotiation, queue setup over
// virtio-queue's DriverQueue, DRIVER_OK, interrupt status + ACK, config reads under the generation check.
// Every register access is an MMIO access of the vCPU, i.e. an ioreq to whichever device model serves it.
//
// DMA modes: "foreign" hands the device guest physical addresses; "grant" grants every page the device must
// touch to the backend domain and hands it grant addresses (1 << 63 | ref << 12 | offset), as Linux's
// grant-dma-ops does for a `xen,grant-dma` device.
import { GuestAddress, type GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, VIRTQ_DESC_F_NEXT, type ChainSpec, type UsedElement } from "@xen-vhost/virtio-queue";
import * as R from "@xen-vhost/virtio-mmio";
import { SimError } from "../../error.js";
import { PAGE_SIZE } from "../../layout.js";
import type { Guest } from "../guest.js";
import type { Vcpu } from "../vcpu.js";
import { GuestAllocator } from "./allocator.js";
import type { DeviceIdentity, VirtioTransport } from "./transport.js";

export { GuestAllocator } from "./allocator.js";
export type { DeviceIdentity } from "./transport.js";

const S = R.VirtioStatus;

export interface VirtioMmioDriverOptions {
  /** The device's interrupt line; without it completions are polled. */
  irq?: number;
  dma?: "foreign" | "grant";
  /** Backend domain the grants are for (default 0). */
  backendDomid?: number;
  log?: (message: string) => void;
}

export class VirtioMmioDriver implements VirtioTransport {
  readonly base: bigint;
  readonly vcpu: Vcpu;
  readonly guest: Guest;
  readonly alloc: GuestAllocator;
  readonly dma: "foreign" | "grant";
  features = 0n;
  readonly queues: DriverQueue[] = [];
  readonly #opts: VirtioMmioDriverOptions;
  readonly #log: (m: string) => void;
  /** Grant refs of in-flight buffers, per queue and head. */
  readonly #inflightRefs = new Map<string, number[]>();
  interrupts = 0;

  constructor(guest: Guest, vcpu: Vcpu, base: bigint, options: VirtioMmioDriverOptions = {}) {
    this.guest = guest;
    this.vcpu = vcpu;
    this.base = base;
    this.alloc = GuestAllocator.forGuest(guest);
    this.dma = options.dma ?? "foreign";
    this.#opts = options;
    this.#log = options.log ?? (() => undefined);
  }

  get memory(): GuestMemory {
    return this.guest.memory;
  }

  r32(offset: number): number {
    return this.vcpu.read32(this.base + BigInt(offset));
  }

  w32(offset: number, value: number): void {
    this.vcpu.write32(this.base + BigInt(offset), value);
  }

  /** Reads the identification registers; throws unless this is a virtio-mmio v2 device. */
  probe(): DeviceIdentity {
    const id = {
      magic: this.r32(R.VIRTIO_MMIO_MAGIC_VALUE),
      version: this.r32(R.VIRTIO_MMIO_VERSION),
      deviceId: this.r32(R.VIRTIO_MMIO_DEVICE_ID),
      vendorId: this.r32(R.VIRTIO_MMIO_VENDOR_ID),
    };
    this.#log(`probe: magic 0x${id.magic.toString(16)} version ${id.version} device ${id.deviceId} vendor 0x${id.vendorId.toString(16)}`);
    if (id.magic !== R.VIRTIO_MMIO_MAGIC) throw new SimError("GuestFailed", `no virtio-mmio device at 0x${this.base.toString(16)} (magic 0x${id.magic.toString(16)})`);
    if (id.version !== 2) throw new SimError("GuestFailed", `virtio-mmio version ${id.version} (need 2)`);
    if (id.deviceId === 0) throw new SimError("GuestFailed", "device ID 0: placeholder, no device");
    return id;
  }

  /** Writes 0 to Status and waits for it to read back 0 (virtio 1.2 4.2.3.1 / 2.4). */
  reset(): void {
    this.w32(R.VIRTIO_MMIO_STATUS, 0);
    for (let i = 0; this.r32(R.VIRTIO_MMIO_STATUS) !== 0; i++) {
      if (i > 1000) throw new SimError("Timeout", "device did not reset");
    }
  }

  status(): number {
    return this.r32(R.VIRTIO_MMIO_STATUS);
  }

  #setStatus(bits: number): void {
    this.w32(R.VIRTIO_MMIO_STATUS, this.status() | bits);
  }

  /** Reset, ACKNOWLEDGE, DRIVER, negotiate (VERSION_1 required), FEATURES_OK and its read-back. */
  negotiate(wanted: bigint): bigint {
    this.reset();
    this.#setStatus(S.ACKNOWLEDGE);
    this.#setStatus(S.DRIVER);
    let device = 0n;
    for (let sel = 0; sel < 2; sel++) {
      this.w32(R.VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
      device |= BigInt(this.r32(R.VIRTIO_MMIO_DEVICE_FEATURES) >>> 0) << BigInt(32 * sel);
    }
    const want = wanted | R.bit(R.VirtioFeature.VERSION_1) | (this.dma === "grant" ? R.bit(R.VirtioFeature.ACCESS_PLATFORM) : 0n);
    const features = device & want;
    if ((features & R.bit(R.VirtioFeature.VERSION_1)) === 0n) throw new SimError("GuestFailed", "device does not offer VIRTIO_F_VERSION_1");
    for (let sel = 0; sel < 2; sel++) {
      this.w32(R.VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
      this.w32(R.VIRTIO_MMIO_DRIVER_FEATURES, Number((features >> BigInt(32 * sel)) & 0xffff_ffffn));
    }
    this.#setStatus(S.FEATURES_OK);
    if ((this.status() & S.FEATURES_OK) === 0) throw new SimError("GuestFailed", "device refused the features (FEATURES_OK cleared)");
    this.features = features;
    this.#log(`features: device 0x${device.toString(16)}, negotiated 0x${features.toString(16)}`);
    return features;
  }

  /** The address the device must be given for [gpa, gpa+len): the GPA, or a grant address. */
  #dmaOf(gpa: bigint, len: number, readOnly: boolean, refs?: number[]): bigint {
    if (this.dma === "foreign") return gpa;
    const g = this.guest.grants.grantRange(gpa, len, { domid: this.#opts.backendDomid ?? 0, readOnly });
    refs?.push(...g.refs);
    return g.dma;
  }

  /** Sets queue `index` up with `size` entries (capped at QueueNumMax) and enables it. */
  setupQueue(index: number, size = 64): DriverQueue {
    this.w32(R.VIRTIO_MMIO_QUEUE_SEL, index);
    if (this.r32(R.VIRTIO_MMIO_QUEUE_READY) !== 0) throw new SimError("GuestFailed", `queue ${index} already ready`);
    const max = this.r32(R.VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (max === 0) throw new SimError("GuestFailed", `queue ${index} not available`);
    const n = Math.min(size, max);
    const layout = DriverQueue.layout(0n, n);
    const base = this.alloc.alloc(Number(layout.end) + PAGE_SIZE, PAGE_SIZE);
    const q = DriverQueue.create(this.memory, base, n);
    this.w32(R.VIRTIO_MMIO_QUEUE_NUM, n);
    const parts: [number, bigint, number, boolean][] = [
      [R.VIRTIO_MMIO_QUEUE_DESC_LOW, q.descTable.value, n * 16, true],
      [R.VIRTIO_MMIO_QUEUE_AVAIL_LOW, q.availRing.value, 6 + 2 * n, true],
      [R.VIRTIO_MMIO_QUEUE_USED_LOW, q.usedRing.value, 6 + 8 * n, false],
    ];
    for (const [reg, gpa, len, ro] of parts) {
      const a = this.#dmaOf(gpa, len, ro);
      this.w32(reg, Number(a & 0xffff_ffffn));
      this.w32(reg + 4, Number(a >> 32n));
    }
    this.w32(R.VIRTIO_MMIO_QUEUE_READY, 1);
    this.queues[index] = q;
    this.#log(`queue ${index}: ${n} entries (max ${max}), desc 0x${q.descTable.value.toString(16)} avail 0x${q.availRing.value.toString(16)} used 0x${q.usedRing.value.toString(16)}${this.dma === "grant" ? " (granted)" : ""}`);
    return q;
  }

  driverOk(): void {
    this.#setStatus(S.DRIVER_OK);
    this.#log(`status 0x${this.status().toString(16)} (DRIVER_OK)`);
  }

  /** A config-space read under the ConfigGeneration check (virtio 1.2 4.2.3.1... 2.5.1). */
  readConfig32(offset: number): number {
    for (;;) {
      const g1 = this.r32(R.VIRTIO_MMIO_CONFIG_GENERATION);
      const v = this.r32(R.VIRTIO_MMIO_CONFIG + offset);
      if (this.r32(R.VIRTIO_MMIO_CONFIG_GENERATION) === g1) return v;
    }
  }

  readConfig64(offset: number): bigint {
    for (;;) {
      const g1 = this.r32(R.VIRTIO_MMIO_CONFIG_GENERATION);
      const lo = this.r32(R.VIRTIO_MMIO_CONFIG + offset) >>> 0;
      const hi = this.r32(R.VIRTIO_MMIO_CONFIG + offset + 4) >>> 0;
      if (this.r32(R.VIRTIO_MMIO_CONFIG_GENERATION) === g1) return (BigInt(hi) << 32n) | BigInt(lo);
    }
  }

  /**
   * `len` config bytes from `offset` under the generation check. Byte-wide MMIO reads, as Linux's
   * vm_get() does for virtio 1 devices (virtio_mmio.c), so fields need no 32-bit alignment.
   */
  readConfigBytes(offset: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    for (;;) {
      const g1 = this.r32(R.VIRTIO_MMIO_CONFIG_GENERATION);
      for (let i = 0; i < len; i++) out[i] = Number(this.vcpu.read(this.base + BigInt(R.VIRTIO_MMIO_CONFIG + offset + i), 1));
      if (this.r32(R.VIRTIO_MMIO_CONFIG_GENERATION) === g1) return out;
    }
  }

  /** Posts a chain (GPAs of guest buffers), translating its addresses for the device, and kicks. */
  submit(index: number, chain: ChainSpec): number {
    const q = this.queues[index];
    if (!q) throw new SimError("InvalidArgument", `queue ${index} is not set up`);
    const head = q.add(chain, { publish: false });
    if (this.dma === "grant") {
      const refs: number[] = [];
      const bufs = [...(chain.readable ?? []).map((b) => [b, true] as const), ...(chain.writable ?? []).map((b) => [b, false] as const)];
      let d = head;
      for (const [b, ro] of bufs) {
        const at = q.descTable.value + BigInt(d * 16);
        this.memory.store64(at, this.#dmaOf(GuestAddress.from(b.addr).value, b.len, ro, refs));
        d = this.memory.load16(at + 14n);
        if ((this.memory.load16(at + 12n) & VIRTQ_DESC_F_NEXT) === 0) break;
      }
      this.#inflightRefs.set(`${index}:${head}`, refs);
    }
    q.publish();
    if (q.needsNotification()) this.w32(R.VIRTIO_MMIO_QUEUE_NOTIFY, index);
    return head;
  }

  /** Takes the next used buffer of queue `index` if there is one; ends grant access to its pages. */
  pollUsed(index: number): UsedElement<unknown> | undefined {
    const q = this.queues[index];
    if (!q) throw new SimError("InvalidArgument", `queue ${index} is not set up`);
    const u = q.getUsed();
    if (!u) return undefined;
    const key = `${index}:${u.id}`;
    for (const ref of this.#inflightRefs.get(key) ?? []) {
      if (!this.guest.grants.endAccess(ref)) throw new SimError("GuestFailed", `grant ${ref} still mapped by the backend after use`);
    }
    this.#inflightRefs.delete(key);
    return u;
  }

  /**
   * Waits for a used buffer on queue `index`: takes the interrupt (line, InterruptStatus, InterruptACK) when
   * an irq is configured, else polls the used ring. Ends grant access to the buffer's pages.
   */
  waitUsed(index: number, timeoutMs = 5000): UsedElement<unknown> {
    if (!this.queues[index]) throw new SimError("InvalidArgument", `queue ${index} is not set up`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Like vm_interrupt: an asserted line is read (InterruptStatus) and acknowledged before the used ring.
      if (this.#opts.irq !== undefined && this.guest.irqLevel(this.#opts.irq)) this.ackInterrupt();
      const u = this.pollUsed(index);
      if (u) return u;
      if (this.#opts.irq !== undefined) {
        if (!this.guest.waitForIrq(this.#opts.irq, Math.max(1, deadline - Date.now()))) throw new SimError("Timeout", `no interrupt on line ${this.#opts.irq}`);
      } else if (Date.now() > deadline) {
        throw new SimError("Timeout", `queue ${index}: no used buffer`);
      }
    }
  }

  /** Reads InterruptStatus and acknowledges it; returns the bits. */
  ackInterrupt(): number {
    const isr = this.r32(R.VIRTIO_MMIO_INTERRUPT_STATUS);
    if (isr !== 0) {
      this.w32(R.VIRTIO_MMIO_INTERRUPT_ACK, isr);
      this.interrupts++;
    }
    return isr;
  }
}
