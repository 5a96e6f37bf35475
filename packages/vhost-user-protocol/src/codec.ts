// Encoding and strict decoding of vhost-user messages. The decoder trusts nothing: the header's flags
// and size, the payload size for the request's kind, region counts and fd counts are all checked
// against the spec, and anything else is a VhostUserError naming the request and the value. A decoder
// that throws closes the fds it was given, so a hostile peer cannot make us leak descriptors.
import { close } from "@xen-vhost/vmm-sys-util";
import { VhostUserError } from "./error.js";
import { defaultQuirks, XenMmapFlags, type ProtocolQuirks } from "./features.js";
import { messageInfo, requestName, type Channel, type FdRule, type MessageInfo, type PayloadKind } from "./message.js";
import {
  VhostUserHeader, VhostUserHeaderFlag, VhostUserU64, VhostUserVringState, VhostUserVringAddr, VhostUserMemoryHeader,
  VhostUserMemoryRegion, VhostUserMemoryRegionXen, VhostUserLog, VhostUserIotlb, VhostUserConfigHeader,
  VhostUserVringArea, VhostUserInflight, VhostUserShared, VhostUserTransferDeviceState, VhostUserMMap,
  VhostUserShMemConfigHeader, VHOST_USER_MAX_CONFIG_SIZE, VHOST_USER_MAX_SHMEM_REGIONS, VHOST_USER_SHMEM_CONFIG_SIZE,
  VHOST_USER_VRING_NOFD_MASK,
} from "./structs.js";

/** The header size. */
export const HEADER_SIZE = VhostUserHeader.size;
/** rust-vmm vhost MAX_MSG_SIZE: the largest payload accepted by default (GET_SHMEM_CONFIG is 2056). */
export const MAX_MSG_SIZE = 0x1000;
/** rust-vmm vhost MAX_ATTACHED_FD_ENTRIES: the most fds accepted with one message by default. */
export const MAX_ATTACHED_FD_ENTRIES = 32;

/** A memory region as the wire carries it. `xen` is present only in 40-byte (XEN_MMAP) regions. */
export interface MemoryRegion {
  guestPhysAddr: bigint;
  memorySize: bigint;
  userAddr: bigint;
  mmapOffset: bigint;
  /** xen_mmap_flags (XenMmapFlags, NO_ADVANCE_MAP normalised to 0x100) and xen_mmap_data (domid). */
  xen?: { flags: number; domid: number };
}

/** A decoded payload; `kind` matches the table's PayloadKind. */
export type Payload =
  | { kind: "none" }
  | { kind: "u64"; value: bigint }
  | { kind: "vring-state"; index: number; num: number }
  | { kind: "vring-addr"; index: number; flags: number; desc: bigint; used: bigint; avail: bigint; log: bigint }
  | { kind: "memory"; regions: MemoryRegion[] }
  | { kind: "single-region"; region: MemoryRegion }
  | { kind: "log"; mmapSize: bigint; mmapOffset: bigint }
  | { kind: "iotlb"; iova: bigint; size: bigint; uaddr: bigint; perm: number; type: number }
  | { kind: "config"; offset: number; flags: number; data: Uint8Array }
  | { kind: "vring-area"; u64: bigint; size: bigint; offset: bigint }
  | { kind: "inflight"; mmapSize: bigint; mmapOffset: bigint; numQueues: number; queueSize: number }
  | { kind: "shared-object"; uuid: Uint8Array }
  | { kind: "device-state"; direction: number; phase: number }
  | { kind: "shmem-map"; shmid: number; fdOffset: bigint; shmOffset: bigint; len: bigint; flags: bigint }
  | { kind: "shmem-config"; memorySizes: bigint[] }
  | { kind: "crypto-session"; data: Uint8Array };

export type PayloadOf<K extends PayloadKind> = Extract<Payload, { kind: K }>;

export interface VhostUserHeaderValue {
  request: number;
  flags: number;
  size: number;
}

/** A whole message: header fields, payload and the fds that travel with it (owned by the holder). */
export interface VhostUserMessage {
  request: number;
  flags: number;
  payload: Payload;
  fds: number[];
}

/** What the codec needs to know about the connection. */
export interface CodecOptions {
  /** VHOST_USER_PROTOCOL_F_XEN_MMAP negotiated: memory regions are 40 bytes. */
  xenMmap: boolean;
  /** Largest payload accepted (default MAX_MSG_SIZE). */
  maxMessageSize: number;
  /** Most fds accepted with one message, and so most regions in SET_MEM_TABLE (default 32). */
  maxFds: number;
  quirks: ProtocolQuirks;
}

/** CodecOptions as callers give them: every field optional, quirks field by field. */
export type CodecSettings = Partial<Omit<CodecOptions, "quirks">> & { quirks?: Partial<ProtocolQuirks> | undefined };

export function codecOptions(o: CodecSettings = {}): CodecOptions {
  return {
    xenMmap: o.xenMmap ?? false,
    maxMessageSize: o.maxMessageSize ?? MAX_MSG_SIZE,
    maxFds: o.maxFds ?? MAX_ATTACHED_FD_ENTRIES,
    quirks: { ...defaultQuirks, ...o.quirks },
  };
}

const fixedSizes: Partial<Record<PayloadKind, number>> = {
  none: 0,
  u64: VhostUserU64.size,
  "vring-state": VhostUserVringState.size,
  "vring-addr": VhostUserVringAddr.size,
  log: VhostUserLog.size,
  iotlb: VhostUserIotlb.size,
  "vring-area": VhostUserVringArea.size,
  inflight: VhostUserInflight.size,
  "shared-object": VhostUserShared.size,
  "device-state": VhostUserTransferDeviceState.size,
  "shmem-map": VhostUserMMap.size,
  "shmem-config": VHOST_USER_SHMEM_CONFIG_SIZE,
};

const KNOWN_FLAGS = VhostUserHeaderFlag.VERSION_MASK | VhostUserHeaderFlag.REPLY | VhostUserHeaderFlag.NEED_REPLY;

// ---------------------------------------------------------------- header

/** Encodes a header. */
export function encodeHeader(h: VhostUserHeaderValue): Uint8Array {
  return VhostUserHeader.encode(h);
}

/**
 * Decodes and checks a 12-byte header: version 1, no reserved flag bits, size within `maxMessageSize`.
 * @throws VhostUserError InvalidMessage (bad version/flags), OversizedMsg (size too large)
 */
export function decodeHeader(buf: Uint8Array, opts: Pick<CodecOptions, "maxMessageSize"> = { maxMessageSize: MAX_MSG_SIZE }): VhostUserHeaderValue {
  if (buf.length < HEADER_SIZE) throw new VhostUserError("PartialMessage", `header of ${buf.length} bytes, need ${HEADER_SIZE}`);
  const h = VhostUserHeader.decode(buf);
  if ((h.flags & VhostUserHeaderFlag.VERSION_MASK) !== VhostUserHeaderFlag.VERSION)
    throw new VhostUserError("InvalidMessage", `request ${h.request}: unsupported version ${h.flags & VhostUserHeaderFlag.VERSION_MASK} in flags 0x${h.flags.toString(16)}`);
  if ((h.flags & ~KNOWN_FLAGS) !== 0)
    throw new VhostUserError("InvalidMessage", `request ${h.request}: reserved flag bits set in 0x${h.flags.toString(16)}`);
  if (h.size > opts.maxMessageSize)
    throw new VhostUserError("OversizedMsg", `request ${h.request}: payload of ${h.size} bytes exceeds the ${opts.maxMessageSize}-byte limit`);
  return h;
}

// ---------------------------------------------------------------- encode

function regionSize(xen: boolean): number {
  return xen ? VhostUserMemoryRegionXen.size : VhostUserMemoryRegion.size;
}

function xenFlagsToWire(flags: number, quirks: ProtocolQuirks): number {
  const noAdvance = (flags & (XenMmapFlags.NO_ADVANCE_MAP | XenMmapFlags.NO_ADVANCE_MAP_RUST_VMM)) !== 0;
  const base = flags & ~(XenMmapFlags.NO_ADVANCE_MAP | XenMmapFlags.NO_ADVANCE_MAP_RUST_VMM);
  if (!noAdvance) return base;
  return base | (quirks.xenNoAdvanceMap === "spec" ? XenMmapFlags.NO_ADVANCE_MAP : XenMmapFlags.NO_ADVANCE_MAP_RUST_VMM);
}

function writeRegion(view: DataView, off: number, r: MemoryRegion, o: CodecOptions): void {
  if (o.xenMmap) {
    const xen = r.xen ?? { flags: XenMmapFlags.UNIX, domid: 0 };
    checkXenFlags(xen.flags, "region");
    VhostUserMemoryRegionXen.write(view, off, {
      guest_phys_addr: r.guestPhysAddr, memory_size: r.memorySize, userspace_addr: r.userAddr, mmap_offset: r.mmapOffset,
      xen_mmap_flags: xenFlagsToWire(xen.flags, o.quirks), xen_mmap_data: xen.domid,
    });
  } else {
    if (r.xen) throw new VhostUserError("InactiveFeature", "a region with a Xen mapping needs VHOST_USER_PROTOCOL_F_XEN_MMAP");
    VhostUserMemoryRegion.write(view, off, {
      guest_phys_addr: r.guestPhysAddr, memory_size: r.memorySize, userspace_addr: r.userAddr, mmap_offset: r.mmapOffset,
    });
  }
}

/** Payload bytes of `p` (without header). */
export function encodePayload(p: Payload, opts: CodecSettings = {}): Uint8Array {
  const o = codecOptions(opts);
  try {
    return encodePayloadUnchecked(p, o);
  } catch (err) {
    if (err instanceof VhostUserError) throw err;
    throw new VhostUserError("InvalidParam", `${p.kind} payload: ${(err as Error).message}`, { cause: err });
  }
}

function encodePayloadUnchecked(p: Payload, o: CodecOptions): Uint8Array {
  switch (p.kind) {
    case "none":
      return new Uint8Array(0);
    case "u64":
      return VhostUserU64.encode({ u64: p.value });
    case "vring-state":
      return VhostUserVringState.encode({ index: p.index, num: p.num });
    case "vring-addr":
      return VhostUserVringAddr.encode({
        index: p.index, flags: p.flags, desc_user_addr: p.desc, used_user_addr: p.used, avail_user_addr: p.avail, log_guest_addr: p.log,
      });
    case "memory": {
      if (p.regions.length > o.maxFds)
        throw new VhostUserError("InvalidParam", `${p.regions.length} regions exceed the ${o.maxFds}-region limit of one SET_MEM_TABLE`);
      const rs = regionSize(o.xenMmap);
      const buf = new Uint8Array(VhostUserMemoryHeader.size + rs * p.regions.length);
      const view = new DataView(buf.buffer);
      VhostUserMemoryHeader.write(view, 0, { nregions: p.regions.length, padding: 0 });
      p.regions.forEach((r, i) => writeRegion(view, VhostUserMemoryHeader.size + i * rs, r, o));
      return buf;
    }
    case "single-region": {
      const buf = new Uint8Array(8 + regionSize(o.xenMmap));
      writeRegion(new DataView(buf.buffer), 8, p.region, o);
      return buf;
    }
    case "log":
      return VhostUserLog.encode({ mmap_size: p.mmapSize, mmap_offset: p.mmapOffset });
    case "iotlb":
      return VhostUserIotlb.encode({ iova: p.iova, size: p.size, uaddr: p.uaddr, perm: p.perm, type: p.type });
    case "config": {
      if (p.data.length > VHOST_USER_MAX_CONFIG_SIZE)
        throw new VhostUserError("InvalidParam", `config access of ${p.data.length} bytes exceeds ${VHOST_USER_MAX_CONFIG_SIZE}`);
      const buf = new Uint8Array(VhostUserConfigHeader.size + p.data.length);
      VhostUserConfigHeader.write(new DataView(buf.buffer), 0, { offset: p.offset, size: p.data.length, flags: p.flags });
      buf.set(p.data, VhostUserConfigHeader.size);
      return buf;
    }
    case "vring-area":
      return VhostUserVringArea.encode({ u64: p.u64, size: p.size, offset: p.offset });
    case "inflight":
      return VhostUserInflight.encode({ mmap_size: p.mmapSize, mmap_offset: p.mmapOffset, num_queues: p.numQueues, queue_size: p.queueSize });
    case "shared-object":
      if (p.uuid.length !== 16) throw new VhostUserError("InvalidParam", `uuid must be 16 bytes, got ${p.uuid.length}`);
      return VhostUserShared.encode({ uuid: p.uuid });
    case "device-state":
      return VhostUserTransferDeviceState.encode({ direction: p.direction, phase: p.phase });
    case "shmem-map":
      return VhostUserMMap.encode({ shmid: p.shmid, fd_offset: p.fdOffset, shm_offset: p.shmOffset, len: p.len, flags: p.flags });
    case "shmem-config": {
      if (p.memorySizes.length > VHOST_USER_MAX_SHMEM_REGIONS)
        throw new VhostUserError("InvalidParam", `${p.memorySizes.length} shared memory regions exceed ${VHOST_USER_MAX_SHMEM_REGIONS}`);
      const buf = new Uint8Array(VHOST_USER_SHMEM_CONFIG_SIZE);
      const view = new DataView(buf.buffer);
      VhostUserShMemConfigHeader.write(view, 0, { nregions: p.memorySizes.length, padding: 0 });
      p.memorySizes.forEach((s, i) => VhostUserU64.write(view, 8 + 8 * i, { u64: s }));
      return buf;
    }
    case "crypto-session":
      if (p.data.length < 8) throw new VhostUserError("InvalidParam", "a crypto session payload starts with the 8-byte session id");
      return p.data.slice();
  }
}

/** A whole message (header + payload) as one buffer; the fds travel separately with it. */
export function encodeMessage(msg: Pick<VhostUserMessage, "request" | "flags" | "payload">, opts: CodecSettings = {}): Uint8Array {
  const o = codecOptions(opts);
  const body = encodePayload(msg.payload, o);
  if (body.length > o.maxMessageSize)
    throw new VhostUserError("OversizedMsg", `payload of ${body.length} bytes exceeds the ${o.maxMessageSize}-byte limit`);
  const out = new Uint8Array(HEADER_SIZE + body.length);
  out.set(encodeHeader({ request: msg.request, flags: msg.flags, size: body.length }), 0);
  out.set(body, HEADER_SIZE);
  return out;
}

// ---------------------------------------------------------------- decode

/** What a received message is expected to be: a request from `channel`, or a reply to one. */
export type Expectation =
  | { type: "request"; channel: Channel }
  | { type: "reply"; channel: Channel; request: number; payloads: readonly PayloadKind[]; fds: FdRule };

function checkXenFlags(flags: number, what: string): number {
  const noAdvMask = XenMmapFlags.NO_ADVANCE_MAP | XenMmapFlags.NO_ADVANCE_MAP_RUST_VMM;
  const type = flags & ~noAdvMask;
  const noAdvance = (flags & noAdvMask) !== 0;
  if (type !== XenMmapFlags.UNIX && type !== XenMmapFlags.FOREIGN && type !== XenMmapFlags.GRANT)
    throw new VhostUserError("InvalidMessage", `${what}: xen_mmap_flags 0x${flags.toString(16)} is not one of UNIX/FOREIGN/GRANT (+NO_ADVANCE_MAP)`);
  if (noAdvance && type !== XenMmapFlags.GRANT)
    throw new VhostUserError("InvalidMessage", `${what}: NO_ADVANCE_MAP is only valid with GRANT (xen_mmap_flags 0x${flags.toString(16)})`);
  if ((flags & noAdvMask) === noAdvMask)
    throw new VhostUserError("InvalidMessage", `${what}: both NO_ADVANCE_MAP encodings set (0x${flags.toString(16)})`);
  return noAdvance ? type | XenMmapFlags.NO_ADVANCE_MAP : type;
}

function readRegion(view: DataView, off: number, o: CodecOptions, what: string): MemoryRegion {
  if (o.xenMmap) {
    const r = VhostUserMemoryRegionXen.read(view, off);
    return {
      guestPhysAddr: r.guest_phys_addr, memorySize: r.memory_size, userAddr: r.userspace_addr, mmapOffset: r.mmap_offset,
      xen: { flags: checkXenFlags(r.xen_mmap_flags, what), domid: r.xen_mmap_data },
    };
  }
  const r = VhostUserMemoryRegion.read(view, off);
  return { guestPhysAddr: r.guest_phys_addr, memorySize: r.memory_size, userAddr: r.userspace_addr, mmapOffset: r.mmap_offset };
}

function sizeError(what: string, kind: PayloadKind, got: number, want: string): VhostUserError {
  return new VhostUserError("InvalidMessage", `${what}: ${kind} payload must be ${want} bytes, got ${got}`);
}

/** Decodes `body` as `kind`, checking its size exactly. */
export function decodePayload(kind: PayloadKind, body: Uint8Array, opts: CodecSettings = {}, what: string = kind): Payload {
  const o = codecOptions(opts);
  const fixed = fixedSizes[kind];
  if (fixed !== undefined && body.length !== fixed) throw sizeError(what, kind, body.length, String(fixed));
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  switch (kind) {
    case "none":
      return { kind };
    case "u64":
      return { kind, value: VhostUserU64.read(view).u64 };
    case "vring-state": {
      const s = VhostUserVringState.read(view);
      return { kind, index: s.index, num: s.num };
    }
    case "vring-addr": {
      const a = VhostUserVringAddr.read(view);
      return { kind, index: a.index, flags: a.flags, desc: a.desc_user_addr, used: a.used_user_addr, avail: a.avail_user_addr, log: a.log_guest_addr };
    }
    case "memory": {
      if (body.length < VhostUserMemoryHeader.size) throw sizeError(what, kind, body.length, `at least ${VhostUserMemoryHeader.size}`);
      const { nregions } = VhostUserMemoryHeader.read(view);
      if (nregions === 0) throw new VhostUserError("InvalidMessage", `${what}: memory table with no regions`);
      if (nregions > o.maxFds) throw new VhostUserError("InvalidMessage", `${what}: ${nregions} regions exceed the limit of ${o.maxFds}`);
      const rs = regionSize(o.xenMmap);
      const want = VhostUserMemoryHeader.size + nregions * rs;
      if (body.length !== want) throw sizeError(what, kind, body.length, `${want} (${nregions} regions of ${rs})`);
      const regions: MemoryRegion[] = [];
      for (let i = 0; i < nregions; i++) regions.push(readRegion(view, VhostUserMemoryHeader.size + i * rs, o, `${what} region ${i}`));
      return { kind, regions };
    }
    case "single-region": {
      const want = 8 + regionSize(o.xenMmap);
      if (body.length !== want) throw sizeError(what, kind, body.length, String(want));
      return { kind, region: readRegion(view, 8, o, what) };
    }
    case "log": {
      const l = VhostUserLog.read(view);
      return { kind, mmapSize: l.mmap_size, mmapOffset: l.mmap_offset };
    }
    case "iotlb": {
      const t = VhostUserIotlb.read(view);
      return { kind, iova: t.iova, size: t.size, uaddr: t.uaddr, perm: t.perm, type: t.type };
    }
    case "config": {
      if (body.length < VhostUserConfigHeader.size) throw sizeError(what, kind, body.length, `at least ${VhostUserConfigHeader.size}`);
      const c = VhostUserConfigHeader.read(view);
      if (c.size > VHOST_USER_MAX_CONFIG_SIZE)
        throw new VhostUserError("InvalidMessage", `${what}: config size ${c.size} exceeds ${VHOST_USER_MAX_CONFIG_SIZE}`);
      if (body.length !== VhostUserConfigHeader.size + c.size)
        throw sizeError(what, kind, body.length, `${VhostUserConfigHeader.size + c.size} (12 + config size ${c.size})`);
      return { kind, offset: c.offset, flags: c.flags, data: body.slice(VhostUserConfigHeader.size) };
    }
    case "vring-area": {
      const a = VhostUserVringArea.read(view);
      return { kind, u64: a.u64, size: a.size, offset: a.offset };
    }
    case "inflight": {
      const i = VhostUserInflight.read(view);
      return { kind, mmapSize: i.mmap_size, mmapOffset: i.mmap_offset, numQueues: i.num_queues, queueSize: i.queue_size };
    }
    case "shared-object":
      return { kind, uuid: VhostUserShared.read(view).uuid };
    case "device-state": {
      const d = VhostUserTransferDeviceState.read(view);
      return { kind, direction: d.direction, phase: d.phase };
    }
    case "shmem-map": {
      const mm = VhostUserMMap.read(view);
      return { kind, shmid: mm.shmid, fdOffset: mm.fd_offset, shmOffset: mm.shm_offset, len: mm.len, flags: mm.flags };
    }
    case "shmem-config": {
      const { nregions } = VhostUserShMemConfigHeader.read(view);
      if (nregions > VHOST_USER_MAX_SHMEM_REGIONS)
        throw new VhostUserError("InvalidMessage", `${what}: ${nregions} shared memory regions exceed ${VHOST_USER_MAX_SHMEM_REGIONS}`);
      const memorySizes: bigint[] = [];
      for (let i = 0; i < nregions; i++) memorySizes.push(VhostUserU64.read(view, 8 + 8 * i).u64);
      return { kind, memorySizes };
    }
    case "crypto-session":
      if (body.length < 8) throw sizeError(what, kind, body.length, "at least 8");
      return { kind, data: body.slice() };
  }
}

/** Picks the one payload kind a reply of `size` bytes can be (sizes of the allowed kinds differ). */
function pickKind(kinds: readonly PayloadKind[], size: number, what: string): PayloadKind {
  if (kinds.length === 1) return kinds[0]!;
  const exact = kinds.find((k) => fixedSizes[k] === size);
  if (exact) return exact;
  const variable = kinds.find((k) => fixedSizes[k] === undefined);
  if (variable) return variable;
  throw new VhostUserError("InvalidMessage", `${what}: reply of ${size} bytes fits none of ${kinds.join(", ")}`);
}

function expectedFds(rule: FdRule, payload: Payload): { min: number; max: number } {
  switch (rule.kind) {
    case "none":
      return { min: 0, max: 0 };
    case "exact":
      return { min: rule.n, max: rule.n };
    case "up-to":
      return { min: 0, max: rule.max };
    case "per-region": {
      const n = payload.kind === "memory" ? payload.regions.length : 0;
      return { min: n, max: n };
    }
    case "unless-nofd": {
      const v = payload.kind === "u64" ? payload.value : payload.kind === "vring-area" ? payload.u64 : 0n;
      const n = (v & BigInt(VHOST_USER_VRING_NOFD_MASK)) !== 0n ? 0 : 1;
      return { min: n, max: n };
    }
  }
}

/** The fd count a message of `info` with `payload` must carry (for senders). */
export function fdCountFor(rule: FdRule, payload: Payload): { min: number; max: number } {
  return expectedFds(rule, payload);
}

function checkSemantics(info: MessageInfo, channel: Channel, payload: Payload, what: string): void {
  // u64 of SET_VRING_KICK/CALL/ERR and the vring-area u64: bits 0-7 index, bit 8 no-fd, the rest reserved.
  if (info.fds.kind === "unless-nofd") {
    const v = payload.kind === "u64" ? payload.value : payload.kind === "vring-area" ? payload.u64 : 0n;
    if ((v & ~0x1ffn) !== 0n) throw new VhostUserError("InvalidMessage", `${what}: reserved bits set in 0x${v.toString(16)}`);
  }
  if (channel === "frontend" && info.name === "SET_DEVICE_STATE_FD" && payload.kind === "device-state") {
    if (payload.direction > 1) throw new VhostUserError("InvalidMessage", `${what}: transfer direction ${payload.direction} (0 save, 1 load)`);
    if (payload.phase !== 0) throw new VhostUserError("InvalidMessage", `${what}: transfer phase ${payload.phase} (only 0 = stopped)`);
  }
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      close(fd);
    } catch {
      // already closed or never ours: nothing else to do with it
    }
  }
}

/**
 * Decodes a message whose header was already read. Takes ownership of `fds`: on success they are in
 * the returned message, on any error they are closed before the throw.
 * @throws VhostUserError InvalidMessage (unknown request, wrong reply flag, wrong size, bad field),
 *   IncorrectFds (missing or extra fds), OversizedMsg
 */
export function decodeMessage(header: VhostUserHeaderValue, body: Uint8Array, fds: number[], expect: Expectation, opts: CodecSettings = {}): VhostUserMessage {
  try {
    return decodeMessageUnchecked(header, body, fds, expect, codecOptions(opts));
  } catch (err) {
    closeAll(fds);
    if (err instanceof VhostUserError) throw err;
    throw new VhostUserError("InvalidMessage", `request ${header.request}: ${(err as Error).message}`, { cause: err });
  }
}

function decodeMessageUnchecked(header: VhostUserHeaderValue, body: Uint8Array, fds: number[], expect: Expectation, o: CodecOptions): VhostUserMessage {
  if (body.length !== header.size)
    throw new VhostUserError("PartialMessage", `request ${header.request}: ${body.length} of ${header.size} payload bytes`);
  if (header.size > o.maxMessageSize)
    throw new VhostUserError("OversizedMsg", `request ${header.request}: payload of ${header.size} bytes exceeds ${o.maxMessageSize}`);
  if (fds.length > o.maxFds)
    throw new VhostUserError("IncorrectFds", `request ${header.request}: ${fds.length} fds exceed the limit of ${o.maxFds}`);
  const isReply = (header.flags & VhostUserHeaderFlag.REPLY) !== 0;
  let kind: PayloadKind;
  let rule: FdRule;
  let info: MessageInfo | undefined;
  let what: string;
  if (expect.type === "request") {
    info = messageInfo(expect.channel, header.request);
    what = requestName(expect.channel, header.request);
    if (!info) throw new VhostUserError("InvalidMessage", `${what}: not a request this side accepts`);
    if (isReply) throw new VhostUserError("InvalidMessage", `${what}: request has the REPLY flag set`);
    kind = info.payload;
    rule = info.fds;
  } else {
    what = `reply to ${requestName(expect.channel, expect.request)}`;
    if (header.request !== expect.request)
      throw new VhostUserError("InvalidMessage", `${what}: reply names ${requestName(expect.channel, header.request)} instead`);
    if (!isReply) throw new VhostUserError("InvalidMessage", `${what}: REPLY flag missing (flags 0x${header.flags.toString(16)})`);
    if ((header.flags & VhostUserHeaderFlag.NEED_REPLY) !== 0)
      throw new VhostUserError("InvalidMessage", `${what}: a reply must not set NEED_REPLY`);
    kind = pickKind(expect.payloads, header.size, what);
    rule = expect.fds;
  }
  const payload = decodePayload(kind, body, o, what);
  const { min, max } = expectedFds(rule, payload);
  if (fds.length < min || fds.length > max) {
    const want = min === max ? String(min) : `${min}..${max}`;
    throw new VhostUserError("IncorrectFds", `${what}: carries ${fds.length} fd(s), expected ${want}`);
  }
  if (info) checkSemantics(info, expect.channel, payload, what);
  return { request: header.request, flags: header.flags, payload, fds };
}

/** Decodes a complete buffer (header + payload), e.g. in tests and fuzzing. Takes ownership of `fds`. */
export function decodeBuffer(buf: Uint8Array, fds: number[], expect: Expectation, opts: CodecSettings = {}): VhostUserMessage {
  const o = codecOptions(opts);
  let header: VhostUserHeaderValue;
  try {
    header = decodeHeader(buf, o);
  } catch (err) {
    closeAll(fds);
    throw err;
  }
  const body = buf.subarray(HEADER_SIZE);
  if (body.length !== header.size) {
    closeAll(fds);
    throw new VhostUserError(body.length < header.size ? "PartialMessage" : "InvalidMessage",
      `request ${header.request}: header says ${header.size} payload bytes, buffer holds ${body.length}`);
  }
  return decodeMessage(header, body, fds, expect, o);
}

/** Closes the fds of a message (e.g. one that is refused). */
export function closeMessageFds(msg: Pick<VhostUserMessage, "fds">): void {
  closeAll(msg.fds);
  msg.fds.length = 0;
}

/** The payload kinds and fds a reply to `info` may have, given what was negotiated. */
export function replyExpectation(channel: Channel, info: MessageInfo, negotiated: (f: NonNullable<MessageInfo["feature"]>) => boolean): Expectation | null {
  const r = info.reply;
  if (r.when === "always" || (r.when === "if-feature" && negotiated(r.feature)))
    return { type: "reply", channel, request: info.id, payloads: r.payloads, fds: r.fds };
  return null;
}

/** The REPLY_ACK expectation: a u64 status, no fds. */
export function ackExpectation(channel: Channel, request: number): Expectation {
  return { type: "reply", channel, request, payloads: ["u64"], fds: { kind: "none" } };
}
