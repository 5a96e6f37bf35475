// One error class for the back-end framework (rust-vmm vhost-user-backend's `Error` enum as a string-literal
// kind). Protocol violations by the front-end are VhostUserError (from vhost-user-protocol) and close the
// connection; a BackendError is a request that was well-formed but could not be carried out (a memory
// region that cannot be mapped, a vring index out of range...). With REPLY_ACK it becomes a non-zero
// status and the connection stays up.

/**
 * - `InvalidMemoryTable`: a region overlaps another, is empty, misaligned, or its fd cannot be used.
 * - `NoXenMapper`: a Xen foreign/grant region arrived and no region mapper for it was plugged in.
 * - `MapFailed`: mmap (or the Xen mapper) failed; the cause is the SysError/GuestMemoryError.
 * - `InvalidVring`: a vring index, size, address or base the device cannot use.
 * - `AddressTranslation`: a front-end virtual address (vring address) is in no region.
 * - `NotSupported`: a request for something this back-end does not implement.
 * - `ConfigAccess`: GET/SET_CONFIG outside the device's config space or to read-only fields.
 * - `Device`: the device handler failed.
 * - `InvalidParam`: a request value outside what the spec allows (a status that is not a byte...).
 * - `Socket`: creating, binding or connecting the vhost-user socket failed (cause: SysError).
 */
export type BackendErrorKind =
  | "InvalidMemoryTable"
  | "NoXenMapper"
  | "MapFailed"
  | "InvalidVring"
  | "AddressTranslation"
  | "NotSupported"
  | "ConfigAccess"
  | "Device"
  | "InvalidParam"
  | "Socket";

export class BackendError extends Error {
  override readonly name = "BackendError";
  readonly kind: BackendErrorKind;

  constructor(kind: BackendErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }
}

export function hex(v: bigint | number): string {
  return `0x${v.toString(16)}`;
}
