// The virtio-mmio version 2 transport (virtio 1.2 section 4.2) as a register file driven by guest MMIO
// accesses. It owns the transport state (feature selection, queue configuration, interrupt status, device
// status, config generation) and calls a VirtioDevice for what only the device knows.
//
// Every access comes from an untrusted guest: offsets, sizes and values are checked here, a bad access reads
// as all-ones (a missing device on most buses) or is ignored, is counted, and never throws.
import { EventEmitter } from "eventemitter3";
import type { ConfigValue, MaybePromise, QueueConfig, SharedMemoryRegion, VirtioDevice } from "./device.js";
import { shmRegisterValue } from "./shared-memory.js";
import * as R from "./registers.js";
import { noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";

const { VirtioStatus: S } = R;


export type AccessSize = 1 | 2 | 4 | 8;

export interface VirtioMmioOptions {
  /** VendorID register (default: "XVHO" in little-endian bytes). */
  vendorId?: number;
  /**
   * Checks a queue the driver marks ready: returns why it is unusable (e.g. "used ring outside guest RAM"),
   * or undefined. The bridge checks the rings against guest memory here.
   */
  validateQueue?: (queue: QueueConfig) => string | undefined;
  /**
   * The shared memory regions the driver sees (SHMSel/SHMLen/SHMBase), overriding the device's own
   * `sharedMemoryRegions`: the VMM owns guest-physical placement. Return [] to report every ID absent.
   */
  sharedMemoryRegions?: () => readonly SharedMemoryRegion[];
  logger?: Logger;
}

export interface VirtioMmioEvents {
  /** The interrupt line level changed (true: assert; false: every InterruptStatus bit was acknowledged). */
  interrupt: [level: boolean];
  /** The driver changed Status (after the transport applied it). */
  status: [status: number];
  /** The device entered DEVICE_NEEDS_RESET. */
  needsReset: [reason: string];
}

/** Counters readable at runtime. */
export interface VirtioMmioCounters {
  reads: number;
  writes: number;
  notifies: number;
  interrupts: number;
  configReads: number;
  configWrites: number;
  /** Accesses the spec forbids (bad size/alignment, write to a read-only register, queue registers while ready...). */
  badAccesses: number;
}

interface QueueState {
  size: number;
  ready: boolean;
  desc: bigint;
  avail: bigint;
  used: bigint;
  /** VIRTIO_F_RING_RESET: QueueReset reads 1 from a completed reset until the queue is re-enabled. */
  resetDone: boolean;
}

export const DEFAULT_VENDOR_ID = 0x4f485658; // bytes "XVHO"

const ALL_ONES: Record<AccessSize, ConfigValue> = { 1: 0xff, 2: 0xffff, 4: 0xffffffff, 8: 0xffff_ffff_ffff_ffffn };

function lo32(v: bigint): number {
  return Number(v & 0xffff_ffffn);
}

function hi32(v: bigint): number {
  return Number((v >> 32n) & 0xffff_ffffn);
}

function setLo32(v: bigint, x: number): bigint {
  return (v & ~0xffff_ffffn) | BigInt(x >>> 0);
}

function setHi32(v: bigint, x: number): bigint {
  return (v & 0xffff_ffffn) | (BigInt(x >>> 0) << 32n);
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

export class VirtioMmioTransport extends EventEmitter<VirtioMmioEvents> {
  readonly device: VirtioDevice;
  readonly vendorId: number;
  readonly counters: VirtioMmioCounters = {
    reads: 0, writes: 0, notifies: 0, interrupts: 0, configReads: 0, configWrites: 0, badAccesses: 0,
  };
  readonly #validateQueue: ((q: QueueConfig) => string | undefined) | undefined;
  readonly #shm: (() => readonly SharedMemoryRegion[]) | undefined;
  readonly #log: Logger;

  #status = 0;
  #deviceFeaturesSel = 0;
  #driverFeaturesSel = 0;
  #driverFeatures = 0n;
  /** The driver wrote a feature word beyond the two this transport knows, with bits set: FEATURES_OK fails. */
  #driverFeaturesInvalid = false;
  #queueSel = 0;
  #shmSel = 0;
  #interruptStatus = 0;
  #configGeneration = 0;
  #queues: QueueState[];
  /** Serializes accesses that wait for the device (activation, reset, async config). */
  #busy: Promise<unknown> | undefined;

  constructor(device: VirtioDevice, options: VirtioMmioOptions = {}) {
    super();
    this.device = device;
    this.vendorId = options.vendorId ?? DEFAULT_VENDOR_ID;
    this.#validateQueue = options.validateQueue;
    this.#shm = options.sharedMemoryRegions;
    this.#log = options.logger ?? noopLogger;
    this.#queues = Array.from({ length: device.numQueues }, () => this.#freshQueue());
  }

  get status(): number {
    return this.#status;
  }

  get interruptStatus(): number {
    return this.#interruptStatus;
  }

  get configGeneration(): number {
    return this.#configGeneration;
  }

  /** The features both sides agreed on (meaningful once FEATURES_OK is set). */
  get negotiatedFeatures(): bigint {
    return this.#driverFeatures;
  }

  /** Whether DRIVER_OK is set and the device is not waiting for a reset. */
  get running(): boolean {
    return (this.#status & S.DRIVER_OK) !== 0 && (this.#status & S.DEVICE_NEEDS_RESET) === 0;
  }

  /** The queues the driver enabled (QueueReady = 1). */
  readyQueues(): QueueConfig[] {
    const out: QueueConfig[] = [];
    this.#queues.forEach((q, index) => {
      if (q.ready) out.push({ index, size: q.size, desc: q.desc, avail: q.avail, used: q.used });
    });
    return out;
  }

  // ------------------------------------------------------------------ device-side signals

  /** The device used buffers: set the VRING bit and assert the line. */
  signalUsedBuffers(): void {
    this.#raise(R.VIRTIO_MMIO_INT_VRING);
  }

  /** The configuration changed (e.g. vhost-user CONFIG_CHANGE_MSG): bump ConfigGeneration, raise CONFIG. */
  signalConfigChange(): void {
    this.#configGeneration = (this.#configGeneration + 1) >>> 0;
    this.#raise(R.VIRTIO_MMIO_INT_CONFIG);
  }

  /**
   * Puts the device in DEVICE_NEEDS_RESET (virtio 1.2 section 2.1.2): after DRIVER_OK the driver is told
   * with a configuration change notification. Until the driver resets, notifications are ignored.
   */
  setNeedsReset(reason: string): void {
    if (this.#status & S.DEVICE_NEEDS_RESET) return;
    this.#log.warn("device needs reset", { reason });
    this.#status |= S.DEVICE_NEEDS_RESET;
    this.emit("needsReset", reason);
    if (this.#status & S.DRIVER_OK) this.#raise(R.VIRTIO_MMIO_INT_CONFIG);
  }

  #raise(bits: number): void {
    const before = this.#interruptStatus;
    this.#interruptStatus |= bits;
    this.counters.interrupts++;
    if (before === 0) this.emit("interrupt", true);
  }

  // ------------------------------------------------------------------ guest accesses

  /**
   * A guest read of `size` bytes at `offset` into the device's window. Returns the value (a bigint for
   * 8-byte reads), or a Promise when the device has to be asked (config space not cached). Never throws.
   */
  read(offset: number, size: AccessSize): MaybePromise<ConfigValue> {
    // While the device works on an earlier access (another vCPU's), later ones wait their turn.
    if (this.#busy) return this.#after(() => this.#readNow(offset, size));
    return this.#readNow(offset, size);
  }

  #readNow(offset: number, size: AccessSize): MaybePromise<ConfigValue> {
    this.counters.reads++;
    if (offset >= R.VIRTIO_MMIO_CONFIG) return this.#readConfig(offset - R.VIRTIO_MMIO_CONFIG, size);
    if (!this.#controlAccessOk(offset, size, "read")) return ALL_ONES[size] ?? 0xffffffff;
    return this.#readControl(offset);
  }

  /** A guest write. Returns a Promise when the device has to act (activation, reset, config). Never throws. */
  write(offset: number, size: AccessSize, value: ConfigValue): MaybePromise<void> {
    if (this.#busy) return this.#after(() => this.#writeNow(offset, size, value));
    return this.#writeNow(offset, size, value);
  }

  #writeNow(offset: number, size: AccessSize, value: ConfigValue): MaybePromise<void> {
    this.counters.writes++;
    if (offset >= R.VIRTIO_MMIO_CONFIG) return this.#writeConfig(offset - R.VIRTIO_MMIO_CONFIG, size, value);
    if (!this.#controlAccessOk(offset, size, "write")) return;
    const v = typeof value === "bigint" ? Number(value & 0xffff_ffffn) : value >>> 0;
    return this.#writeControl(offset, v);
  }

  #after<T>(fn: () => MaybePromise<T>): Promise<T> {
    return this.#track((this.#busy ?? Promise.resolve()).then(fn, fn));
  }

  #track<T>(p: Promise<T>): Promise<T> {
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.#busy = settled;
    void settled.then(() => {
      if (this.#busy === settled) this.#busy = undefined;
    });
    return p;
  }

  #bad(offset: number, size: number, what: string): void {
    this.counters.badAccesses++;
    this.#log.debug("bad register access", { register: R.registerName(offset), offset, size, what });
  }

  /** Control registers: "The driver MUST only use 32 bit wide and aligned reads and writes" (4.2.2.2). */
  #controlAccessOk(offset: number, size: number, what: string): boolean {
    if (size !== 4 || (offset & 3) !== 0 || offset < 0) {
      this.#bad(offset, size, `${what}: control registers take aligned 32-bit accesses`);
      return false;
    }
    return true;
  }

  /**
   * 4.2.2: an ID with no region reads as length -1. The transport's option wins over the device (the VMM
   * decides where, or whether, a backend's regions appear in the guest).
   */
  #sharedMemory(): readonly SharedMemoryRegion[] {
    return this.#shm?.() ?? this.device.sharedMemoryRegions?.() ?? [];
  }

  #queue(): QueueState | undefined {
    return this.#queues[this.#queueSel];
  }

  #readControl(offset: number): number {
    switch (offset) {
      case R.VIRTIO_MMIO_MAGIC_VALUE:
        return R.VIRTIO_MMIO_MAGIC;
      case R.VIRTIO_MMIO_VERSION:
        return 2;
      case R.VIRTIO_MMIO_DEVICE_ID:
        return this.device.deviceId;
      case R.VIRTIO_MMIO_VENDOR_ID:
        return this.vendorId;
      case R.VIRTIO_MMIO_DEVICE_FEATURES: {
        const f = this.device.features;
        return this.#deviceFeaturesSel === 0 ? lo32(f) : this.#deviceFeaturesSel === 1 ? hi32(f) : 0;
      }
      case R.VIRTIO_MMIO_QUEUE_NUM_MAX:
        return this.#queueSel < this.#queues.length ? this.device.queueMaxSize(this.#queueSel) >>> 0 : 0;
      case R.VIRTIO_MMIO_QUEUE_READY:
        return this.#queue()?.ready ? 1 : 0;
      case R.VIRTIO_MMIO_INTERRUPT_STATUS:
        return this.#interruptStatus;
      case R.VIRTIO_MMIO_STATUS:
        return this.#status;
      case R.VIRTIO_MMIO_CONFIG_GENERATION:
        return this.#configGeneration;
      case R.VIRTIO_MMIO_QUEUE_RESET:
        return this.#queue()?.resetDone ? 1 : 0;
      case R.VIRTIO_MMIO_SHM_LEN_LOW:
        return shmRegisterValue(this.#sharedMemory(), this.#shmSel, "lenLow");
      case R.VIRTIO_MMIO_SHM_LEN_HIGH:
        return shmRegisterValue(this.#sharedMemory(), this.#shmSel, "lenHigh");
      case R.VIRTIO_MMIO_SHM_BASE_LOW:
        return shmRegisterValue(this.#sharedMemory(), this.#shmSel, "baseLow");
      case R.VIRTIO_MMIO_SHM_BASE_HIGH:
        return shmRegisterValue(this.#sharedMemory(), this.#shmSel, "baseHigh");
      default:
        // Write-only and reserved registers: undefined by the spec; read as 0 and count.
        this.#bad(offset, 4, "read of a write-only or reserved register");
        return 0;
    }
  }

  #writeControl(offset: number, v: number): MaybePromise<void> {
    switch (offset) {
      case R.VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        this.#deviceFeaturesSel = v;
        return;
      case R.VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        this.#driverFeaturesSel = v;
        return;
      case R.VIRTIO_MMIO_DRIVER_FEATURES:
        if (this.#status & (S.FEATURES_OK | S.DRIVER_OK)) return this.#bad(offset, 4, "features written after FEATURES_OK");
        if (this.#driverFeaturesSel === 0) this.#driverFeatures = setLo32(this.#driverFeatures, v);
        else if (this.#driverFeaturesSel === 1) this.#driverFeatures = setHi32(this.#driverFeatures, v);
        else if (v !== 0) this.#driverFeaturesInvalid = true;
        return;
      case R.VIRTIO_MMIO_QUEUE_SEL:
        this.#queueSel = v;
        return;
      case R.VIRTIO_MMIO_QUEUE_NUM:
      case R.VIRTIO_MMIO_QUEUE_DESC_LOW:
      case R.VIRTIO_MMIO_QUEUE_DESC_HIGH:
      case R.VIRTIO_MMIO_QUEUE_AVAIL_LOW:
      case R.VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
      case R.VIRTIO_MMIO_QUEUE_USED_LOW:
      case R.VIRTIO_MMIO_QUEUE_USED_HIGH:
        return this.#writeQueueRegister(offset, v);
      case R.VIRTIO_MMIO_QUEUE_READY:
        return this.#writeQueueReady(v);
      case R.VIRTIO_MMIO_QUEUE_NOTIFY:
        return this.#notify(v);
      case R.VIRTIO_MMIO_INTERRUPT_ACK:
        return this.#ack(v);
      case R.VIRTIO_MMIO_STATUS:
        return this.#writeStatus(v);
      case R.VIRTIO_MMIO_SHM_SEL:
        this.#shmSel = v;
        return;
      case R.VIRTIO_MMIO_QUEUE_RESET:
        return this.#writeQueueReset(v);
      default:
        this.#bad(offset, 4, "write to a read-only or reserved register");
        return;
    }
  }

  #writeQueueRegister(offset: number, v: number): void {
    const q = this.#queue();
    if (!q) return this.#bad(offset, 4, `queue register with QueueSel ${this.#queueSel} (device has ${this.#queues.length})`);
    // 4.2.3.2: the driver must not change a queue's configuration while it is ready.
    if (q.ready) return this.#bad(offset, 4, "queue register written while QueueReady = 1");
    switch (offset) {
      case R.VIRTIO_MMIO_QUEUE_NUM:
        q.size = v;
        return;
      case R.VIRTIO_MMIO_QUEUE_DESC_LOW:
        q.desc = setLo32(q.desc, v);
        return;
      case R.VIRTIO_MMIO_QUEUE_DESC_HIGH:
        q.desc = setHi32(q.desc, v);
        return;
      case R.VIRTIO_MMIO_QUEUE_AVAIL_LOW:
        q.avail = setLo32(q.avail, v);
        return;
      case R.VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
        q.avail = setHi32(q.avail, v);
        return;
      case R.VIRTIO_MMIO_QUEUE_USED_LOW:
        q.used = setLo32(q.used, v);
        return;
      default:
        q.used = setHi32(q.used, v);
        return;
    }
  }

  #writeQueueReady(v: number): void {
    const q = this.#queue();
    if (!q) return this.#bad(R.VIRTIO_MMIO_QUEUE_READY, 4, `QueueReady with QueueSel ${this.#queueSel}`);
    if (v === 0) {
      q.ready = false;
      return;
    }
    if (v !== 1) return this.#bad(R.VIRTIO_MMIO_QUEUE_READY, 4, `QueueReady value ${v}`);
    if (q.ready) return;
    const problem = this.#queueProblem(this.#queueSel, q);
    if (problem) {
      // The driver configured a queue the device cannot use: a device error state (2.1.2).
      this.setNeedsReset(`queue ${this.#queueSel}: ${problem}`);
      return;
    }
    q.ready = true;
    q.resetDone = false;
  }

  #queueProblem(index: number, q: QueueState): string | undefined {
    const max = this.device.queueMaxSize(index);
    const packed = (this.#driverFeatures & R.bit(R.VirtioFeature.RING_PACKED)) !== 0n;
    if (q.size === 0 || q.size > max) return `size ${q.size} not in 1..${max}`;
    if (!packed && !isPowerOfTwo(q.size)) return `size ${q.size} is not a power of two`;
    // 2.7 (split): descriptor table 16-byte aligned, driver area 2, device area 4. Packed: 16, 4, 4.
    if (q.desc % 16n !== 0n) return `descriptor table 0x${q.desc.toString(16)} not 16-byte aligned`;
    if (q.avail % (packed ? 4n : 2n) !== 0n) return `driver area 0x${q.avail.toString(16)} misaligned`;
    if (q.used % 4n !== 0n) return `device area 0x${q.used.toString(16)} not 4-byte aligned`;
    return this.#validateQueue?.({ index, size: q.size, desc: q.desc, avail: q.avail, used: q.used });
  }

  #notify(v: number): void {
    const index = v & 0xffff; // with NOTIFICATION_DATA the upper bits carry the ring position
    const q = this.#queues[index];
    if (!this.running || !q?.ready) return this.#bad(R.VIRTIO_MMIO_QUEUE_NOTIFY, 4, `notify of queue ${index} not running`);
    this.counters.notifies++;
    this.device.notify(index, v);
  }

  #ack(v: number): void {
    const before = this.#interruptStatus;
    this.#interruptStatus &= ~v;
    if (before !== 0 && this.#interruptStatus === 0) this.emit("interrupt", false);
  }

  #writeStatus(v: number): MaybePromise<void> {
    if (v === 0) return this.#reset();
    v &= 0xff;
    // 2.1.1: the driver never clears a bit except by writing 0; DEVICE_NEEDS_RESET is the device's to set.
    const cleared = this.#status & ~v & ~S.DEVICE_NEEDS_RESET;
    if (cleared) this.#bad(R.VIRTIO_MMIO_STATUS, 4, `status write clears bits 0x${cleared.toString(16)}`);
    const added = v & ~this.#status & ~S.DEVICE_NEEDS_RESET;
    let next = this.#status | added;
    if (added & S.FEATURES_OK) {
      const problem = this.#featuresProblem();
      if (problem) {
        // 3.1.1: the device leaves FEATURES_OK clear; the driver reads Status back and gives up.
        this.#log.warn("driver features refused", { problem, features: `0x${this.#driverFeatures.toString(16)}` });
        next &= ~S.FEATURES_OK;
      }
    }
    if (added & S.DRIVER_OK && !(next & S.FEATURES_OK)) {
      this.#bad(R.VIRTIO_MMIO_STATUS, 4, "DRIVER_OK without FEATURES_OK");
      next &= ~S.DRIVER_OK;
    }
    this.#status = next;
    this.emit("status", this.#status);
    if (added & S.DRIVER_OK && next & S.DRIVER_OK && !(next & S.DEVICE_NEEDS_RESET)) return this.#activate();
  }

  #featuresProblem(): string | undefined {
    if (this.#driverFeaturesInvalid) return "feature bits beyond 63 set";
    const extra = this.#driverFeatures & ~this.device.features;
    if (extra) return `features 0x${extra.toString(16)} were not offered`;
    if (!(this.#driverFeatures & R.bit(R.VirtioFeature.VERSION_1))) return "VERSION_1 not accepted (legacy drivers are not supported)";
    return undefined;
  }

  #activate(): MaybePromise<void> {
    const queues = this.readyQueues();
    const fail = (err: unknown): void => {
      const reason = err instanceof Error ? err.message : String(err);
      this.#log.error("device activation failed", { reason });
      this.setNeedsReset(`activation failed: ${reason}`);
    };
    let r: MaybePromise<void>;
    try {
      r = this.device.activate(this.#driverFeatures, queues);
    } catch (err) {
      return fail(err);
    }
    if (r instanceof Promise) return this.#track(r.catch(fail));
  }

  #reset(): MaybePromise<void> {
    const wasRunning = this.#status !== 0;
    this.#status = 0;
    this.#driverFeatures = 0n;
    this.#driverFeaturesInvalid = false;
    this.#deviceFeaturesSel = 0;
    this.#driverFeaturesSel = 0;
    this.#queueSel = 0;
    this.#shmSel = 0;
    this.#queues = this.#queues.map(() => this.#freshQueue());
    const hadInterrupt = this.#interruptStatus !== 0;
    this.#interruptStatus = 0;
    if (hadInterrupt) this.emit("interrupt", false);
    this.emit("status", 0);
    if (!wasRunning) return;
    const fail = (err: unknown): void => {
      this.#log.error("device reset failed", { reason: err instanceof Error ? err.message : String(err) });
    };
    let r: MaybePromise<void>;
    try {
      r = this.device.reset();
    } catch (err) {
      return fail(err);
    }
    if (r instanceof Promise) return this.#track(r.catch(fail));
  }

  #writeQueueReset(v: number): MaybePromise<void> {
    const q = this.#queue();
    const index = this.#queueSel;
    const negotiated = (this.#driverFeatures & R.bit(R.VirtioFeature.RING_RESET)) !== 0n;
    if (!q || v !== 1 || !negotiated) return this.#bad(R.VIRTIO_MMIO_QUEUE_RESET, 4, "QueueReset without RING_RESET or bad queue");
    const done = (): void => {
      const fresh = this.#freshQueue();
      fresh.resetDone = true;
      this.#queues[index] = fresh;
    };
    let r: MaybePromise<void> | undefined;
    try {
      r = this.device.resetQueue?.(index);
    } catch (err) {
      return this.setNeedsReset(`queue ${index} reset failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (r instanceof Promise)
      return this.#track(
        r.then(done, (err: unknown) => this.setNeedsReset(`queue ${index} reset failed: ${String(err)}`)),
      );
    done();
  }

  #freshQueue(): QueueState {
    return { size: 0, ready: false, desc: 0n, avail: 0n, used: 0n, resetDone: false };
  }

  #configAccessOk(offset: number, size: number, what: string): boolean {
    if ((size !== 1 && size !== 2 && size !== 4 && size !== 8) || offset < 0 || offset + size > this.device.configSize) {
      this.#bad(R.VIRTIO_MMIO_CONFIG + offset, size, `${what} outside the ${this.device.configSize}-byte config space`);
      return false;
    }
    return true;
  }

  #readConfig(offset: number, size: AccessSize): MaybePromise<ConfigValue> {
    if (!this.#configAccessOk(offset, size, "config read")) return ALL_ONES[size] ?? 0xffffffff;
    this.counters.configReads++;
    const fail = (err: unknown): ConfigValue => {
      this.#log.warn("config read failed", { offset, size, reason: err instanceof Error ? err.message : String(err) });
      return ALL_ONES[size];
    };
    try {
      const r = this.device.readConfig(offset, size);
      return r instanceof Promise ? this.#track(r.catch(fail)) : r;
    } catch (err) {
      return fail(err);
    }
  }

  #writeConfig(offset: number, size: AccessSize, value: ConfigValue): MaybePromise<void> {
    if (!this.#configAccessOk(offset, size, "config write")) return;
    this.counters.configWrites++;
    const fail = (err: unknown): void => {
      this.#log.warn("config write failed", { offset, size, reason: err instanceof Error ? err.message : String(err) });
    };
    try {
      const r = this.device.writeConfig(offset, size, value);
      if (r instanceof Promise) return this.#track(r.catch(fail));
    } catch (err) {
      fail(err);
    }
  }
}
