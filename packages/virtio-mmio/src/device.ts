// What the transport needs from a device implementation. A vhost-user backend adapter (the bridge), an
// in-process device model, or a test device all implement this; the transport knows nothing about them.

/** One virtqueue as the driver configured it. Addresses are guest-physical (or grant-encoded) addresses. */
export interface QueueConfig {
  readonly index: number;
  readonly size: number;
  readonly desc: bigint;
  readonly avail: bigint;
  readonly used: bigint;
}

/** A shared memory region the device exposes through SHMSel/SHMLen/SHMBase. */
export interface SharedMemoryRegion {
  readonly id: number;
  readonly base: bigint;
  readonly length: bigint;
}

export type ConfigValue = number | bigint;
export type MaybePromise<T> = T | Promise<T>;

export interface VirtioDevice {
  /** DeviceID register (virtio 1.2 section 5). */
  readonly deviceId: number;
  /** Features offered to the driver, VERSION_1 included. */
  readonly features: bigint;
  /** Number of virtqueues. */
  readonly numQueues: number;
  /** QueueNumMax for a queue (0 = not available). */
  queueMaxSize(index: number): number;
  /** Bytes of configuration space; accesses past it read as all-ones and are ignored when written. */
  readonly configSize: number;
  /** A config-space read of 1, 2, 4 or 8 bytes (8 gives a bigint). May be async (a GET_CONFIG round trip). */
  readConfig(offset: number, size: 1 | 2 | 4 | 8): MaybePromise<ConfigValue>;
  /** A config-space write. */
  writeConfig(offset: number, size: 1 | 2 | 4 | 8, value: ConfigValue): MaybePromise<void>;
  /** DRIVER_OK was set: start the device with the negotiated features and the ready queues. A throw or
   * rejection puts the device in DEVICE_NEEDS_RESET. */
  activate(features: bigint, queues: readonly QueueConfig[]): MaybePromise<void>;
  /** The driver wrote 0 to Status: stop every queue and forget negotiated state. */
  reset(): MaybePromise<void>;
  /** The driver wrote QueueNotify. `value` is the raw register value (with NOTIFICATION_DATA it carries more
   * than the index). Not called when a kernel ioeventfd consumes the notification. */
  notify(queue: number, value: number): void;
  /** VIRTIO_F_RING_RESET: reset one queue. */
  resetQueue?(index: number): MaybePromise<void>;
  /** Shared memory regions (virtio 1.2 section 2.10), e.g. from vhost-user SHMEM_MAP / GET_SHMEM_CONFIG. */
  sharedMemoryRegions?(): readonly SharedMemoryRegion[];
}
