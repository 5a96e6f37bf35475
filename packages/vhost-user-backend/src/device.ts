// What a device implements to be served over vhost-user (rust-vmm vhost-user-backend's `VhostUserBackend`
// trait): its features, queues, config space and a handler that runs when a queue has work. The framework
// (BackendHandler) does the protocol, memory and ring bookkeeping.
import type { GuestMemory } from "@xen-vhost/vm-memory";
import type { DescriptorChain } from "@xen-vhost/virtio-queue";

/** A queue as a device sees it while the front-end has it running. */
export interface DeviceVring {
  readonly index: number;
  /** Guest memory the chains' buffers point into. */
  readonly memory: GuestMemory;
  /** Chains available and not popped yet. */
  pending(): number;
  /**
   * Next chain, or null if none. Malformed chains (loops, bad indices, buffers outside memory) never reach
   * the device: the framework returns them used with length 0 and logs why.
   */
  pop(): DescriptorChain | null;
  /** Returns a chain to the driver with `len` bytes written to its device-writable buffers. */
  addUsed(head: number, len: number): void;
  /** Signals the call eventfd if the driver wants to hear about the used elements added so far. */
  signalUsedQueue(): void;
  /** Runs the device's queue handler again later (e.g. when a rate limit refills or an interrupt fires). */
  trigger(): void;
}

/** Services the framework offers a device. */
export interface DeviceContext {
  /** The queue if the front-end has started and enabled it, else undefined. */
  vring(index: number): DeviceVring | undefined;
  /**
   * Tells the front-end the config space changed (BACKEND_CONFIG_CHANGE_MSG on the backend-request channel).
   * Resolves false when no channel is set up (BACKEND_REQ/CONFIG not negotiated).
   */
  signalConfigChange(): Promise<boolean>;
}

export interface VhostUserDevice {
  /** For logs ("virtio-rng"). */
  readonly name: string;
  readonly numQueues: number;
  /** Largest queue size the device accepts (SET_VRING_NUM). */
  readonly maxQueueSize: number;
  /** Virtio features the device offers (transport bits included); the framework adds VHOST_USER_F_PROTOCOL_FEATURES. */
  readonly features: bigint;
  /**
   * Requests may be handed to the device again after a reconnect or a back-end restart (vhost-user
   * INFLIGHT_SHMFD): chains popped and not yet used when the connection went away come back from `pop()`
   * first, in the order they were first popped. Set it when handling a request twice is harmless (reads,
   * setting a state) or when the device holds requests (event queues) that must not be lost.
   */
  readonly inflightTracking?: boolean;
  /** Config space size; with a config space the CONFIG protocol feature is offered. */
  readonly configSize?: number;
  /** Reads `size` bytes of config at `offset` (range already checked against configSize). */
  getConfig?(offset: number, size: number): Uint8Array;
  /** Writes config (range checked). Throw to refuse. */
  setConfig?(offset: number, data: Uint8Array): void;
  /** The front-end acknowledged `features` (SET_FEATURES). */
  setFeatures?(features: bigint): void;
  /** Called once per connection before any queue runs. */
  attach?(ctx: DeviceContext): void;
  /**
   * The queue has work (kick, enable, or `trigger`): pop chains, handle them, `addUsed`. The framework
   * signals the call eventfd afterwards as EVENT_IDX says. Runs on the event loop; must not block.
   */
  handleQueue(vring: DeviceVring): void;
  /** A queue stopped (GET_VRING_BASE, reset, disconnect): drop chains held for it. */
  queueStopped?(index: number): void;
  /** The front-end went away or reset the device: back to the initial state. */
  reset?(): void;
  /**
   * The connection closed (the front-end went away or was dropped). When present it is called instead of
   * `reset()`: a device whose requests survive a reconnect (`inflightTracking`) keeps the state the guest
   * set up (line configuration...) and drops only what belonged to the connection. An explicit reset
   * (RESET_DEVICE, SET_STATUS 0) still calls `reset()`.
   */
  disconnected?(): void;
}
