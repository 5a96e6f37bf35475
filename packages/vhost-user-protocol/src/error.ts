// One error class for the whole vhost-user stack (rust-vmm vhost's `Error` enum as a string-literal union).
// Front-end, back-end and the codec all throw it, so callers match on `kind` and ask `shouldReconnect`.
import { SysError } from "@xen-vhost/vmm-sys-util";

export type VhostUserErrorKind =
  /** The peer closed the connection (EOF) or the connection was closed locally. */
  | "Disconnected"
  /** The connection ended in the middle of a message. */
  | "PartialMessage"
  /** A message broke the protocol: unknown request, wrong size for its payload, bad flags, bad field. */
  | "InvalidMessage"
  /** A message larger than the configured maximum (or a payload beyond a spec limit). */
  | "OversizedMsg"
  /** A message carried fds it must not, or lacked fds it needs. */
  | "IncorrectFds"
  /** The peer does not offer a feature that is required (or acked a feature it did not offer). */
  | "FeatureMismatch"
  /** A request needs a protocol feature that was not negotiated. */
  | "InactiveFeature"
  /** A transient socket condition (EAGAIN/EINTR) surfaced where it could not be retried. */
  | "SocketRetry"
  /** The socket failed (ECONNRESET, EPIPE, ...). */
  | "SocketBroken"
  /** A caller passed a value the protocol cannot carry. */
  | "InvalidParam"
  /** The back-end answered a request with a non-zero status (REPLY_ACK or a u64 result). */
  | "BackendFailure"
  /** No reply within the configured time. */
  | "Timeout";

/** A vhost-user protocol error. `kind` says what went wrong; the message names the request and value. */
export class VhostUserError extends Error {
  override readonly name = "VhostUserError";
  readonly kind: VhostUserErrorKind;

  constructor(kind: VhostUserErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }

  /**
   * Whether a new connection could succeed where this one failed (rust-vmm `should_reconnect`): the peer
   * went away or the stream is unusable, as opposed to a bad argument or a missing feature that a new
   * connection would hit again.
   */
  get shouldReconnect(): boolean {
    switch (this.kind) {
      case "Disconnected":
      case "PartialMessage":
      case "SocketBroken":
      case "SocketRetry":
      case "Timeout":
      case "InvalidMessage":
      case "OversizedMsg":
      case "IncorrectFds":
        return true;
      case "FeatureMismatch":
      case "InactiveFeature":
      case "InvalidParam":
      case "BackendFailure":
        return false;
    }
  }
}

/**
 * The one errno classifier of the package: maps a failed socket call to a kind (EAGAIN/EINTR →
 * SocketRetry, peer gone → SocketBroken/Disconnected, anything else → SocketBroken), keeping the
 * SysError as `cause`.
 */
export function fromSysError(err: unknown, what: string): VhostUserError {
  if (err instanceof VhostUserError) return err;
  if (err instanceof SysError) {
    switch (err.code) {
      case "EAGAIN":
      case "EWOULDBLOCK":
      case "EINTR":
        return new VhostUserError("SocketRetry", `${what}: ${err.code}`, { cause: err });
      case "ENOTCONN":
      case "EBADF":
        return new VhostUserError("Disconnected", `${what}: ${err.code}`, { cause: err });
      default:
        return new VhostUserError("SocketBroken", `${what}: ${err.message}`, { cause: err });
    }
  }
  return new VhostUserError("SocketBroken", `${what}: ${String(err)}`, { cause: err });
}
