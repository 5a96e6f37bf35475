// The sim socket protocol: length-prefixed JSON frames with fds attached (SCM_RIGHTS). Control operations
// only: nothing on the event/ioreq hot path goes over this socket (see DESIGN notes in README.md).
//
// Frame: u32 LE byte length of the JSON body, u32 LE number of fds that travel with the frame, then the body.
// The fds are sent with the header in one sendmsg, so they arrive no later than the frame's first byte.
// Bytes travel as {"$b": base64}, bigints as {"$n": "decimal"}.
import { UnixStream, close as closeFd } from "@xen-vhost/vmm-sys-util";
import { SimError } from "./error.js";

export const FRAME_HEADER = 8;
/** Largest body accepted (a getdomaininfolist answer for 32752 domains fits). */
export const MAX_FRAME = 16 << 20;
/** Most fds one frame may carry. */
export const MAX_FDS = 64;

export interface Request {
  id: number;
  method: string;
  params: unknown;
}

export interface Response {
  id: number;
  ok: boolean;
  result?: unknown;
  /** errno name when the simulated hypervisor refused (ok false). */
  code?: string;
  message?: string;
}

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return { $n: value.toString() };
  if (value instanceof Uint8Array) return { $b: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  return value;
}

function reviver(_key: string, value: unknown): unknown {
  if (value !== null && typeof value === "object") {
    const o = value as Record<string, unknown>;
    if (typeof o["$n"] === "string" && Object.keys(o).length === 1) return BigInt(o["$n"]);
    if (typeof o["$b"] === "string" && Object.keys(o).length === 1) return new Uint8Array(Buffer.from(o["$b"], "base64"));
  }
  return value;
}

export function encodeFrame(message: unknown, nfds: number): Uint8Array {
  const body = Buffer.from(JSON.stringify(message, replacer), "utf8");
  if (body.length > MAX_FRAME) throw new SimError("Protocol", `frame of ${body.length} bytes exceeds ${MAX_FRAME}`);
  const out = new Uint8Array(FRAME_HEADER + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, body.length, true);
  v.setUint32(4, nfds, true);
  out.set(body, FRAME_HEADER);
  return out;
}

/** Reassembles frames from stream chunks, pairing each with its fds. */
export class FrameReader {
  #buf = new Uint8Array(0);
  readonly #fds: number[] = [];

  push(chunk: Uint8Array, fds: readonly number[]): void {
    this.#fds.push(...fds);
    const next = new Uint8Array(this.#buf.length + chunk.length);
    next.set(this.#buf);
    next.set(chunk, this.#buf.length);
    this.#buf = next;
  }

  /** The next complete frame, or undefined. @throws SimError "Protocol" for an oversized or malformed frame. */
  next(): { message: unknown; fds: number[] } | undefined {
    if (this.#buf.length < FRAME_HEADER) return undefined;
    const v = new DataView(this.#buf.buffer, this.#buf.byteOffset);
    const len = v.getUint32(0, true);
    const nfds = v.getUint32(4, true);
    if (len > MAX_FRAME || nfds > MAX_FDS) throw new SimError("Protocol", `bad frame header (length ${len}, ${nfds} fds)`);
    if (this.#buf.length < FRAME_HEADER + len) return undefined;
    if (this.#fds.length < nfds) throw new SimError("Protocol", `frame announces ${nfds} fds, ${this.#fds.length} arrived`);
    const body = this.#buf.subarray(FRAME_HEADER, FRAME_HEADER + len);
    this.#buf = this.#buf.slice(FRAME_HEADER + len);
    const fds = this.#fds.splice(0, nfds);
    let message: unknown;
    try {
      message = JSON.parse(Buffer.from(body).toString("utf8"), reviver);
    } catch (err) {
      for (const fd of fds) closeFd(fd);
      throw new SimError("Protocol", "frame body is not JSON", { cause: err });
    }
    return { message, fds };
  }

  /** Closes fds that arrived without a frame (on teardown). */
  dispose(): void {
    for (const fd of this.#fds.splice(0)) closeFd(fd);
  }
}

/** Sends a whole frame on a (blocking or nonblocking) stream, retrying short writes. */
export function sendFrame(stream: UnixStream, message: unknown, fds: readonly number[] = []): void {
  const frame = encodeFrame(message, fds.length);
  let off = 0;
  let first = true;
  let spins = 0;
  while (off < frame.length) {
    const n = stream.send(frame.subarray(off), first ? fds : []);
    if (n === null) {
      // Nonblocking socket full: the peer is a synchronous client blocked on recv, so it drains soon.
      if (++spins > 1_000_000) throw new SimError("Disconnected", "peer stopped reading the sim socket");
      continue;
    }
    first = false;
    off += n;
  }
}

/**
 * A blocking request/response client: one request in flight, as every XenTransport method is synchronous.
 * Used by SimTransport (the bridge side) and the simulated guest.
 */
export class BlockingClient implements Disposable {
  readonly #stream: UnixStream;
  readonly #reader = new FrameReader();
  readonly #chunk = new Uint8Array(64 * 1024);
  #nextId = 1;

  constructor(stream: UnixStream) {
    this.#stream = stream;
  }

  static connect(path: string): BlockingClient {
    let s: UnixStream;
    try {
      s = UnixStream.connect(path);
    } catch (err) {
      throw new SimError("Disconnected", `cannot connect to the simulator at ${path}`, { cause: err });
    }
    return new BlockingClient(s);
  }

  get closed(): boolean {
    return this.#stream.closed;
  }

  /**
   * Calls `method`; returns the result and the fds that came with it (the caller owns them).
   * @throws HypervisorRefusal (via `onRefusal`) when the sim answered with an errno.
   */
  call(method: string, params: unknown = {}, fds: readonly number[] = []): { result: unknown; fds: number[]; refused?: { code: string; message: string } } {
    if (this.#stream.closed) throw new SimError("Closed", "the simulator connection is closed");
    const id = this.#nextId++;
    try {
      sendFrame(this.#stream, { id, method, params } satisfies Request, fds);
    } catch (err) {
      throw err instanceof SimError ? err : new SimError("Disconnected", `sim socket send failed (${method})`, { cause: err });
    }
    for (;;) {
      const f = this.#reader.next();
      if (f) {
        const r = f.message as Response;
        if (r.id !== id) {
          for (const fd of f.fds) closeFd(fd);
          throw new SimError("Protocol", `response id ${r.id} for request ${id} (${method})`);
        }
        if (!r.ok) {
          for (const fd of f.fds) closeFd(fd);
          return { result: undefined, fds: [], refused: { code: r.code ?? "EIO", message: r.message ?? "" } };
        }
        return { result: r.result, fds: f.fds };
      }
      let got;
      try {
        got = this.#stream.recv(this.#chunk, MAX_FDS);
      } catch (err) {
        throw new SimError("Disconnected", `sim socket receive failed (${method})`, { cause: err });
      }
      if (got === null) continue;
      if (got.bytes === 0) throw new SimError("Disconnected", `the simulator closed the connection (${method})`);
      this.#reader.push(this.#chunk.subarray(0, got.bytes), got.fds);
    }
  }

  close(): void {
    this.#reader.dispose();
    this.#stream.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
