// The package's one error class (STYLE.md section 5). Hypervisor-level refusals travel as errno names and are
// turned into xen-sys XenErrors by the transport (so code above the transport sees what privcmd would give);
// SimError is for the simulator's own failures: a dead sim process, a malformed frame, a guest that hung.

export type SimErrorKind =
  /** The simulator process is gone or the socket broke. */
  | "Disconnected"
  /** A frame on the sim socket could not be decoded. */
  | "Protocol"
  /** The simulator or a guest process failed to start. */
  | "StartFailed"
  /** A guest program failed (its error is in the message). */
  | "GuestFailed"
  /** A wait (an ioreq answer, an interrupt) timed out. */
  | "Timeout"
  /** A bad option or argument. */
  | "InvalidArgument"
  /** The object was closed. */
  | "Closed";

export class SimError extends Error {
  override readonly name = "SimError";
  readonly kind: SimErrorKind;

  constructor(kind: SimErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }
}

/**
 * A refusal the simulated hypervisor answers with: an errno name, as Xen returns -errno. Thrown inside the
 * simulator, carried over the socket and re-thrown by the caller as a XenError.
 */
export class HypervisorError extends Error {
  override readonly name = "HypervisorError";
  readonly code: string;

  constructor(code: string, message?: string) {
    super(message ?? code);
    this.code = code;
  }
}

/** Shorthand for `throw new HypervisorError(code, message)`. */
export function refuse(code: string, message?: string): never {
  throw new HypervisorError(code, message);
}
