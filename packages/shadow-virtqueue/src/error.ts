// One error class for the package, with a string-literal kind (STYLE.md section 5). A ShadowQueue that
// meets one of these stops relaying (it is "broken"): the transport should set DEVICE_NEEDS_RESET for the
// device, while every other queue and device keeps running.

/**
 * - `GuestChain`: the guest's ring or a chain in it is malformed (loop, index past the table, buffer
 *   outside guest RAM, bad indirect table, avail idx running ahead...; cause: VirtqueueError).
 * - `ChainTooLarge`: a chain needs more shadow buffer space than the queue's whole pool.
 * - `GuestMemory`: copying to or from guest memory failed (region closed, grant mapping failed...;
 *   cause: GuestMemoryError).
 * - `Backend`: the backend broke the shadow ring (a used id that is not in flight, used idx running ahead;
 *   cause: VirtqueueError).
 * - `InvalidConfig`: the shadow layout or the guest ring configuration cannot work (cause: the details).
 * - `Closed`: the queue was closed.
 */
export type ShadowQueueErrorKind = "GuestChain" | "ChainTooLarge" | "GuestMemory" | "Backend" | "InvalidConfig" | "Closed";

export interface ShadowQueueErrorOptions extends ErrorOptions {
  /** The queue index the error is about. */
  queue?: number;
}

export class ShadowQueueError extends Error {
  override readonly name = "ShadowQueueError";
  readonly kind: ShadowQueueErrorKind;
  readonly queue: number | undefined;

  constructor(kind: ShadowQueueErrorKind, message: string, options: ShadowQueueErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.queue = options.queue;
  }

  /** Whether the guest is at fault (its driver must reset the device), as opposed to the backend or us. */
  get guestFault(): boolean {
    switch (this.kind) {
      case "GuestChain":
      case "ChainTooLarge":
      case "GuestMemory":
        return true;
      case "Backend":
      case "InvalidConfig":
      case "Closed":
        return false;
    }
  }
}
