// The XenStore wire format (xen/include/public/io/xs_wire.h): a 16-byte `struct xsd_sockmsg` header and up to
// XENSTORE_PAYLOAD_MAX bytes of payload, NUL-separated strings by convention. Shared by the client and the
// test server (and by packages/xen-sim's server).
import { XENSTORE_PAYLOAD_MAX, XsdSockmsg, xsTypeName } from "../abi/xs-wire.js";
import { XenStoreError } from "../error.js";

export interface XsMessage {
  type: number;
  reqId: number;
  txId: number;
  payload: Uint8Array;
}

const HEADER = XsdSockmsg.size;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: false });

/** Header + payload in one buffer. @throws XenStoreError E2BIG when the payload exceeds 4096 bytes */
export function encodeMessage(m: XsMessage): Uint8Array {
  if (m.payload.byteLength > XENSTORE_PAYLOAD_MAX) {
    throw new XenStoreError("Protocol", { op: (xsTypeName(m.type) ?? String(m.type)).toLowerCase(), code: "E2BIG" });
  }
  const out = new Uint8Array(HEADER + m.payload.byteLength);
  XsdSockmsg.write(new DataView(out.buffer), 0, { type: m.type, req_id: m.reqId, tx_id: m.txId, len: m.payload.byteLength });
  out.set(m.payload, HEADER);
  return out;
}

/** Reassembles messages from a byte stream (a socket may split or merge them arbitrarily). */
export class MessageReader {
  #buf = new Uint8Array(0);

  /** Bytes buffered that do not yet form a whole message (a short read so far). */
  get pending(): number {
    return this.#buf.byteLength;
  }

  /**
   * Adds bytes and returns every complete message.
   * @throws XenStoreError kind "Protocol" (E2BIG) on a header announcing more than XENSTORE_PAYLOAD_MAX bytes
   */
  push(chunk: Uint8Array): XsMessage[] {
    if (this.#buf.byteLength === 0) {
      this.#buf = chunk.slice();
    } else {
      const b = new Uint8Array(this.#buf.byteLength + chunk.byteLength);
      b.set(this.#buf);
      b.set(chunk, this.#buf.byteLength);
      this.#buf = b;
    }
    const out: XsMessage[] = [];
    let off = 0;
    while (this.#buf.byteLength - off >= HEADER) {
      const h = XsdSockmsg.read(new DataView(this.#buf.buffer, this.#buf.byteOffset + off, HEADER));
      if (h.len > XENSTORE_PAYLOAD_MAX) {
        throw new XenStoreError("Protocol", { op: "read message", code: "E2BIG" });
      }
      if (this.#buf.byteLength - off < HEADER + h.len) break;
      out.push({ type: h.type, reqId: h.req_id, txId: h.tx_id, payload: this.#buf.slice(off + HEADER, off + HEADER + h.len) });
      off += HEADER + h.len;
    }
    this.#buf = this.#buf.slice(off);
    return out;
  }
}

/** Payload of NUL-terminated strings: `strings("a", "b")` → "a\0b\0". */
export function strings(...parts: string[]): Uint8Array {
  return encoder.encode(parts.map((p) => `${p}\0`).join(""));
}

/** `path\0` followed by raw bytes (XS_WRITE: the value is not NUL-terminated). */
export function pathAndValue(path: string, value: Uint8Array): Uint8Array {
  const p = encoder.encode(`${path}\0`);
  const out = new Uint8Array(p.byteLength + value.byteLength);
  out.set(p);
  out.set(value, p.byteLength);
  return out;
}

/** Splits a payload on NULs, dropping the empty string after a trailing NUL. */
export function splitStrings(payload: Uint8Array): string[] {
  if (payload.byteLength === 0) return [];
  const parts = decoder.decode(payload).split("\0");
  if (parts[parts.length - 1] === "") parts.pop();
  return parts;
}

/** The first string of a payload (up to the first NUL). */
export function firstString(payload: Uint8Array): string {
  const nul = payload.indexOf(0);
  return decoder.decode(nul < 0 ? payload : payload.subarray(0, nul));
}

export function text(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

export function bytesOf(value: string | Uint8Array): Uint8Array {
  return typeof value === "string" ? encoder.encode(value) : value;
}

/** One XenStore permission: `n0` none, `r5` read, `w5` write, `b5` both, for domain 5. */
export interface XsPermission {
  domid: number;
  perm: "none" | "read" | "write" | "both";
}

const PERM_CHARS = { n: "none", r: "read", w: "write", b: "both" } as const;

export function parsePermission(s: string): XsPermission {
  const m = /^([nrwb])(\d+)$/.exec(s);
  if (!m) throw new RangeError(`bad XenStore permission ${JSON.stringify(s)}`);
  return { perm: PERM_CHARS[m[1] as keyof typeof PERM_CHARS], domid: Number(m[2]) };
}

export function formatPermission(p: XsPermission): string {
  const c = (Object.keys(PERM_CHARS) as (keyof typeof PERM_CHARS)[]).find((k) => PERM_CHARS[k] === p.perm);
  if (!c || !Number.isInteger(p.domid) || p.domid < 0 || p.domid > 0xffff) throw new RangeError(`bad XenStore permission ${JSON.stringify(p)}`);
  return `${c}${p.domid}`;
}
