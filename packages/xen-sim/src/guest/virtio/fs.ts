// Guest virtio-fs driver (virtio 1.2 section 5.11): FUSE requests over virtqueues, as Linux's
// fs/fuse/virtio_fs.c sends them. Queue 0 is hiprio (FORGET, which has no reply), queue 1 the first request
// queue; each request is a device-readable part (fuse_in_header + arguments) and a device-writable part
// (fuse_out_header + reply). The tag and the number of request queues come from config space.
import { SimError } from "../../error.js";
import type { VirtioTransport } from "./transport.js";

// include/uapi/linux/fuse.h (protocol 7.31, what virtiofsd and Linux's virtio_fs speak at least).
export const FUSE_KERNEL_VERSION = 7;
export const FUSE_KERNEL_MINOR_VERSION = 31;
export const FUSE_ROOT_ID = 1n;
export const FuseOpcode = {
  LOOKUP: 1, FORGET: 2, GETATTR: 3, OPEN: 14, READ: 15, RELEASE: 18, INIT: 26, DESTROY: 38,
} as const;
export type FuseOpcode = (typeof FuseOpcode)[keyof typeof FuseOpcode];
/** struct fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding. */
export const FUSE_IN_HEADER_SIZE = 40;
/** struct fuse_out_header: len, error (negative errno), unique. */
export const FUSE_OUT_HEADER_SIZE = 16;
/** struct fuse_attr (88 bytes) inside fuse_entry_out (at 40) and fuse_attr_out (at 16). */
const FUSE_ATTR_SIZE = 88;
const FUSE_ENTRY_OUT_SIZE = 40 + FUSE_ATTR_SIZE;
const FUSE_ATTR_OUT_SIZE = 16 + FUSE_ATTR_SIZE;
/** struct fuse_init_out as of 7.36 (64 bytes); older servers answer with a prefix of it. */
const FUSE_INIT_OUT_SIZE = 64;
/** struct virtio_fs_config: tag[36], num_request_queues (le32). */
export const VIRTIO_FS_CONFIG = { tag: 0, tagLength: 36, numRequestQueues: 36 } as const;

const HIPRIO = 0;
const REQUEST = 1;

export interface FuseAttr {
  ino: bigint;
  size: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
}

export interface FuseEntry {
  nodeid: bigint;
  generation: bigint;
  attr: FuseAttr;
}

export interface FuseInitInfo {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  maxWrite: number;
}

/** A FUSE reply: `error` is 0 or a negative errno, `body` what followed the out header. */
export interface FuseReply {
  error: number;
  body: Uint8Array;
}

export interface VirtioFsOptions {
  /** Largest reply body the driver accepts, i.e. the biggest READ (default 64 KiB). */
  maxReply?: number;
  queueSize?: number;
  /** Send FUSE_INIT during init (default true). */
  mount?: boolean;
}

function attrOf(v: DataView, at: number): FuseAttr {
  return {
    ino: v.getBigUint64(at, true), size: v.getBigUint64(at + 8, true), mode: v.getUint32(at + 60, true),
    nlink: v.getUint32(at + 64, true), uid: v.getUint32(at + 68, true), gid: v.getUint32(at + 72, true),
  };
}

const ERRNO_NAMES: Record<number, string> = { 1: "EPERM", 2: "ENOENT", 5: "EIO", 9: "EBADF", 13: "EACCES", 20: "ENOTDIR", 21: "EISDIR", 22: "EINVAL", 38: "ENOSYS" };

export class VirtioFsDriver {
  /** The mount tag from config space (what `mount -t virtiofs <tag>` names). */
  readonly tag: string;
  readonly numRequestQueues: number;
  #session: FuseInitInfo | undefined;
  readonly #drv: VirtioTransport;
  readonly #in: bigint;
  readonly #out: bigint;
  readonly #forgetBuf: bigint;
  readonly #maxReply: number;
  #unique = 1n;

  private constructor(drv: VirtioTransport, tag: string, numRequestQueues: number, maxReply: number) {
    this.#drv = drv;
    this.tag = tag;
    this.numRequestQueues = numRequestQueues;
    this.#maxReply = maxReply;
    this.#in = drv.alloc.alloc(4096, 4096);
    this.#out = drv.alloc.alloc(FUSE_OUT_HEADER_SIZE + maxReply, 4096);
    this.#forgetBuf = drv.alloc.alloc(FUSE_IN_HEADER_SIZE + 8, 64);
  }

  /**
   * Probes (device ID 26), reads the tag, sets up hiprio and one request queue, DRIVER_OK (virtio_fs_probe),
   * then FUSE_INIT unless `options.mount` is false (Linux sends it at mount time: call `mount()` then).
   */
  static init(drv: VirtioTransport, options: VirtioFsOptions = {}): VirtioFsDriver {
    const maxReply = options.maxReply ?? 64 * 1024;
    if (!Number.isInteger(maxReply) || maxReply < FUSE_ENTRY_OUT_SIZE || maxReply > 1 << 20) throw new RangeError(`maxReply ${maxReply}`);
    const id = drv.probe();
    if (id.deviceId !== 26) throw new SimError("GuestFailed", `device ${id.deviceId} is not virtio-fs (26)`);
    drv.negotiate(0n);
    const raw = drv.readConfigBytes(VIRTIO_FS_CONFIG.tag, VIRTIO_FS_CONFIG.tagLength);
    const nul = raw.indexOf(0);
    const tag = new TextDecoder().decode(raw.subarray(0, nul < 0 ? raw.length : nul));
    const numRequestQueues = drv.readConfig32(VIRTIO_FS_CONFIG.numRequestQueues);
    // virtio_fs.c virtio_fs_read_tag / virtio_fs_setup_vqs: an empty tag or no request queue is refused.
    if (tag.length === 0) throw new SimError("GuestFailed", "virtio-fs device has an empty tag");
    // virtio_fs_read_tag: newlines are refused (they break mount(8) lines and the sysfs/uevent tag).
    if (tag.includes("\n")) throw new SimError("GuestFailed", "virtio-fs tag contains a newline");
    if (numRequestQueues < 1) throw new SimError("GuestFailed", `virtio-fs num_request_queues ${numRequestQueues}`);
    drv.setupQueue(HIPRIO, options.queueSize ?? 64);
    drv.setupQueue(REQUEST, options.queueSize ?? 64);
    drv.driverOk();
    const fs = new VirtioFsDriver(drv, tag, numRequestQueues, maxReply);
    if (options.mount ?? true) fs.mount();
    return fs;
  }

  /** What FUSE_INIT answered. @throws SimError "InvalidArgument" before mount() */
  get session(): FuseInitInfo {
    if (!this.#session) throw new SimError("InvalidArgument", "virtio-fs: not mounted (no FUSE_INIT yet)");
    return this.#session;
  }

  get mounted(): boolean {
    return this.#session !== undefined;
  }

  /** FUSE_INIT (fuse_send_init at mount time). Once per session. */
  mount(): FuseInitInfo {
    if (this.#session) throw new SimError("InvalidArgument", "virtio-fs: already mounted");
    this.#session = this.#init();
    return this.#session;
  }

  /**
   * Sends one FUSE request on the request queue and waits for its reply. A FUSE-level failure is a
   * negative `error`, not an exception; a malformed reply (wrong unique, length beyond the buffer) throws.
   */
  request(opcode: FuseOpcode, nodeid: bigint, args: Uint8Array, replyLen: number, timeoutMs = 5000): FuseReply {
    if (replyLen < 0 || replyLen > this.#maxReply) throw new RangeError(`reply length ${replyLen} (0..${this.#maxReply})`);
    if (FUSE_IN_HEADER_SIZE + args.length > 4096) throw new RangeError(`FUSE arguments of ${args.length} bytes`);
    const unique = this.#unique++;
    const mem = this.#drv.memory;
    mem.write(this.#in, this.#inHeader(opcode, nodeid, unique, args));
    mem.fill(this.#out, FUSE_OUT_HEADER_SIZE + replyLen, 0);
    const writable = [{ addr: this.#out, len: FUSE_OUT_HEADER_SIZE }];
    if (replyLen > 0) writable.push({ addr: this.#out + BigInt(FUSE_OUT_HEADER_SIZE), len: replyLen });
    const head = this.#drv.submit(REQUEST, { readable: [{ addr: this.#in, len: FUSE_IN_HEADER_SIZE + args.length }], writable });
    const used = this.#drv.waitUsed(REQUEST, timeoutMs);
    if (used.id !== head) throw new SimError("GuestFailed", `request queue returned head ${used.id}, expected ${head}`);
    const out = new DataView(mem.read(this.#out, FUSE_OUT_HEADER_SIZE).buffer);
    const len = out.getUint32(0, true);
    const error = out.getInt32(4, true);
    const gotUnique = out.getBigUint64(8, true);
    if (gotUnique !== unique) throw new SimError("GuestFailed", `FUSE reply for unique ${gotUnique}, expected ${unique}`);
    if (len < FUSE_OUT_HEADER_SIZE || len > FUSE_OUT_HEADER_SIZE + replyLen || len > used.len) {
      throw new SimError("GuestFailed", `FUSE reply length ${len} (used ${used.len}, buffer ${FUSE_OUT_HEADER_SIZE + replyLen})`);
    }
    if (error > 0 || error < -4095) throw new SimError("GuestFailed", `FUSE reply error ${error}`);
    return { error, body: mem.read(this.#out + BigInt(FUSE_OUT_HEADER_SIZE), len - FUSE_OUT_HEADER_SIZE) };
  }

  #inHeader(opcode: number, nodeid: bigint, unique: bigint, args: Uint8Array): Uint8Array {
    const b = new Uint8Array(FUSE_IN_HEADER_SIZE + args.length);
    const v = new DataView(b.buffer);
    v.setUint32(0, b.length, true);
    v.setUint32(4, opcode, true);
    v.setBigUint64(8, unique, true);
    v.setBigUint64(16, nodeid, true);
    // uid, gid, pid 0: the guest's root.
    b.set(args, FUSE_IN_HEADER_SIZE);
    return b;
  }

  #ok(name: string, r: FuseReply, min: number): DataView {
    if (r.error !== 0) throw new SimError("GuestFailed", `FUSE ${name}: ${ERRNO_NAMES[-r.error] ?? "errno"} (${r.error})`);
    if (r.body.length < min) throw new SimError("GuestFailed", `FUSE ${name}: reply of ${r.body.length} bytes (need ${min})`);
    return new DataView(r.body.buffer, r.body.byteOffset, r.body.byteLength);
  }

  #init(): FuseInitInfo {
    // struct fuse_init_in (7.31 layout): major, minor, max_readahead, flags.
    const a = new Uint8Array(16);
    const v = new DataView(a.buffer);
    v.setUint32(0, FUSE_KERNEL_VERSION, true);
    v.setUint32(4, FUSE_KERNEL_MINOR_VERSION, true);
    v.setUint32(8, 128 * 1024, true);
    const o = this.#ok("INIT", this.request(FuseOpcode.INIT, 0n, a, FUSE_INIT_OUT_SIZE), 24);
    const info = { major: o.getUint32(0, true), minor: o.getUint32(4, true), maxReadahead: o.getUint32(8, true), flags: o.getUint32(12, true), maxWrite: o.getUint32(20, true) };
    if (info.major !== FUSE_KERNEL_VERSION) throw new SimError("GuestFailed", `FUSE server speaks major version ${info.major}`);
    return info;
  }

  /** FUSE_LOOKUP of `name` in directory `parent`: one lookup reference on the node (see forget). */
  lookup(parent: bigint, name: string): FuseEntry {
    if (name.length === 0 || name.includes("/") || name.includes("\0")) throw new RangeError(`bad FUSE name ${JSON.stringify(name)}`);
    const o = this.#ok(`LOOKUP ${JSON.stringify(name)}`, this.request(FuseOpcode.LOOKUP, parent, new TextEncoder().encode(`${name}\0`), FUSE_ENTRY_OUT_SIZE), FUSE_ENTRY_OUT_SIZE);
    return { nodeid: o.getBigUint64(0, true), generation: o.getBigUint64(8, true), attr: attrOf(o, 40) };
  }

  /** FUSE_GETATTR. */
  getattr(nodeid: bigint): FuseAttr {
    return attrOf(this.#ok("GETATTR", this.request(FuseOpcode.GETATTR, nodeid, new Uint8Array(16), FUSE_ATTR_OUT_SIZE), FUSE_ATTR_OUT_SIZE), 16);
  }

  /** FUSE_OPEN with open(2) `flags` (default O_RDONLY); returns the file handle. */
  open(nodeid: bigint, flags = 0): bigint {
    const a = new Uint8Array(8);
    new DataView(a.buffer).setUint32(0, flags, true);
    return this.#ok("OPEN", this.request(FuseOpcode.OPEN, nodeid, a, 16), 16).getBigUint64(0, true);
  }

  /** FUSE_READ: up to `size` bytes at `offset` (fewer at end of file). */
  read(nodeid: bigint, fh: bigint, offset: bigint, size: number): Uint8Array {
    if (!Number.isInteger(size) || size < 1 || size > this.#maxReply) throw new RangeError(`read of ${size} bytes (1..${this.#maxReply})`);
    // struct fuse_read_in: fh, offset, size, read_flags, lock_owner, flags, padding.
    const a = new Uint8Array(40);
    const v = new DataView(a.buffer);
    v.setBigUint64(0, fh, true);
    v.setBigUint64(8, offset, true);
    v.setUint32(16, size, true);
    const r = this.request(FuseOpcode.READ, nodeid, a, size);
    this.#ok("READ", r, 0);
    return r.body;
  }

  /** FUSE_RELEASE of a handle from open. */
  release(nodeid: bigint, fh: bigint): void {
    // struct fuse_release_in: fh, flags, release_flags, lock_owner.
    const a = new Uint8Array(24);
    new DataView(a.buffer).setBigUint64(0, fh, true);
    this.#ok("RELEASE", this.request(FuseOpcode.RELEASE, nodeid, a, 0), 0);
  }

  /**
   * FUSE_FORGET on the hiprio queue (virtio_fs.c sends forgets there): drops `nlookup` lookup references.
   * FORGET has no reply; the device only returns the buffer.
   */
  forget(nodeid: bigint, nlookup = 1n, timeoutMs = 5000): void {
    const a = new Uint8Array(8);
    new DataView(a.buffer).setBigUint64(0, nlookup, true);
    const buf = this.#forgetBuf;
    this.#drv.memory.write(buf, this.#inHeader(FuseOpcode.FORGET, nodeid, this.#unique++, a));
    const head = this.#drv.submit(HIPRIO, { readable: [{ addr: buf, len: FUSE_IN_HEADER_SIZE + 8 }] });
    const used = this.#drv.waitUsed(HIPRIO, timeoutMs);
    if (used.id !== head) throw new SimError("GuestFailed", `hiprio queue returned head ${used.id}, expected ${head}`);
  }

  /** Looks `path` up from the root, opens it, reads it whole, releases and forgets it. */
  readFile(path: string, chunk = 16 * 1024): Uint8Array {
    const names = path.split("/").filter((p) => p.length > 0);
    if (names.length === 0) throw new RangeError("readFile needs a file path");
    let node = FUSE_ROOT_ID;
    const looked: bigint[] = [];
    try {
      for (const n of names) {
        node = this.lookup(node, n).nodeid;
        looked.push(node);
      }
      const fh = this.open(node);
      const parts: Uint8Array[] = [];
      let offset = 0n;
      try {
        for (;;) {
          const got = this.read(node, fh, offset, Math.min(chunk, this.#maxReply));
          if (got.length === 0) break;
          parts.push(got);
          offset += BigInt(got.length);
        }
      } finally {
        this.release(node, fh);
      }
      return Buffer.concat(parts);
    } finally {
      for (const n of looked) this.forget(n);
    }
  }
}
