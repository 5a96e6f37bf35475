// What a guest virtio device driver needs from its transport: the driver-side steps of virtio 1.2 section
// 3.1 "Device Initialization" plus buffer submission and completion. `VirtioMmioDriver` implements it over
// the simulated vCPU's MMIO (a Xen guest); the package's tests also implement it on a vhost-user front-end
// with memfd memory (a KVM VMM's view of the same device), so one driver runs against both.
import type { GuestMemory } from "@xen-vhost/vm-memory";
import type { ChainSpec, DriverQueue, UsedElement } from "@xen-vhost/virtio-queue";
import type { GuestAllocator } from "./allocator.js";

export interface DeviceIdentity {
  magic: number;
  version: number;
  deviceId: number;
  vendorId: number;
}

export interface VirtioTransport {
  /** Guest memory the rings and buffers live in. */
  readonly memory: GuestMemory;
  /** Allocator for rings and buffers in `memory`. */
  readonly alloc: GuestAllocator;
  /** The features negotiated by the last `negotiate` (0 before). */
  readonly features: bigint;
  /** Identifies the device; throws SimError "GuestFailed" when there is none. */
  probe(): DeviceIdentity;
  /** Reset, ACKNOWLEDGE, DRIVER, feature negotiation (VERSION_1 always wanted), FEATURES_OK; returns the result. */
  negotiate(wanted: bigint): bigint;
  readConfig32(offset: number): number;
  readConfig64(offset: number): bigint;
  /** `len` bytes of device config at `offset` (a consistent snapshot: generation-checked). */
  readConfigBytes(offset: number, len: number): Uint8Array;
  /** Sets queue `index` up with up to `size` entries and enables it. */
  setupQueue(index: number, size?: number): DriverQueue;
  driverOk(): void;
  /** Posts a chain of guest buffers (guest physical addresses) on queue `index` and notifies. Returns the head. */
  submit(index: number, chain: ChainSpec): number;
  /** Waits for the next used buffer of queue `index`. @throws SimError "Timeout" */
  waitUsed(index: number, timeoutMs?: number): UsedElement<unknown>;
  /** The next used buffer of queue `index` if there is one, without waiting. */
  pollUsed(index: number): UsedElement<unknown> | undefined;
  /** Writes 0 to the device status: the device stops using the rings. */
  reset(): void;
}
