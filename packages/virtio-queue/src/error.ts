// One error class for the package (rust-vmm virtio-queue's `Error` enum as a string-literal kind). Everything
// a guest (or a device, for the driver side) controls -- indices, descriptor addresses, lengths, flags --
// is validated and reported as a VirtqueueError; nothing a hostile ring contains can raise another error
// type or touch memory outside the guest's regions.

/**
 * - `InvalidConfig`: queue size not a power of two / too large, misaligned ring addresses, rings outside
 *   guest memory, or the queue is not ready.
 * - `InvalidAvailIdx`: the driver's avail idx moved more than the queue size past what was consumed.
 * - `InvalidUsedIdx`: (driver side) the device's used idx moved more than the queue size.
 * - `InvalidIndex`: a descriptor index (avail ring head, `next`, used id) outside the table.
 * - `DescriptorLoop`: a chain visits a descriptor twice.
 * - `ChainTooLong`: more descriptors than the configured maximum.
 * - `InvalidIndirect`: indirect table of bad length, nested indirect, indirect with NEXT, or indirect not
 *   negotiated.
 * - `ReadAfterWrite`: a device-readable descriptor after a device-writable one (virtio 1.2 2.7.4.2).
 * - `OutOfBounds`: a ring, table or buffer lies (partly) outside guest memory (cause: GuestMemoryError).
 * - `GuestMemory`: guest memory could not be accessed (closed, replaced...; cause: GuestMemoryError).
 * - `QueueFull`: (driver side) not enough free descriptors for a chain.
 * - `InvalidArgument`: a caller passed a chain the queue cannot express (empty, length > u32).
 */
export type VirtqueueErrorKind =
  | "InvalidConfig"
  | "InvalidAvailIdx"
  | "InvalidUsedIdx"
  | "InvalidIndex"
  | "DescriptorLoop"
  | "ChainTooLong"
  | "InvalidIndirect"
  | "ReadAfterWrite"
  | "OutOfBounds"
  | "GuestMemory"
  | "QueueFull"
  | "InvalidArgument";

export interface VirtqueueErrorOptions extends ErrorOptions {
  /** The head of the chain the error is about; the chain was consumed and should be returned used (len 0). */
  head?: number;
}

export class VirtqueueError extends Error {
  override readonly name = "VirtqueueError";
  readonly kind: VirtqueueErrorKind;
  /** Head index of the offending chain, if the error is about one chain (the queue moved past it). */
  readonly head: number | undefined;

  constructor(kind: VirtqueueErrorKind, message: string, options: VirtqueueErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.head = options.head;
  }
}
