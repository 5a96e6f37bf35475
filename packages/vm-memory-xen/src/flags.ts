// xen_mmap_flags of a vhost-user memory region (VHOST_USER_PROTOCOL_F_XEN_MMAP), docs/interop/vhost-user.rst
// "Memory region description": bit 0 foreign, bit 1 grant, bit 8 "no advance map". rust-vmm vm-memory
// (src/mmap/xen.rs `MmapXenFlags`) uses 0x8 for no-advance-map instead, and every rust-vmm-based backend
// rejects 0x100 (`from_bits` fails). Both encodings are offered here behind one switch; the default is the
// one deployed backends accept (reference §2.9). vhost-user-protocol's codec re-encodes on the wire
// according to its own quirk setting, so the two switches should agree.

/** The flag values (vhost-user.rst; rust-vmm `MmapXenFlags`). */
export const XenMmapFlag = {
  /** A plain fd mapping (rust-vmm `UNIX`). */
  UNIX: 0x0,
  /** Foreign mapping of guest frames through privcmd (bit 0). */
  FOREIGN: 0x1,
  /** Grant mapping through gntdev (bit 1). */
  GRANT: 0x2,
  /** rust-vmm vm-memory's value of "no advance map" (bit 3). */
  NO_ADVANCE_MAP_RUST_VMM: 0x8,
  /** The spec's value of "no advance map" (bit 8). */
  NO_ADVANCE_MAP_SPEC: 0x100,
} as const;

/** Which value NO_ADVANCE_MAP is sent as: "rust-vmm" (0x8, default, what deployed backends accept) or "spec" (0x100). */
export type NoAdvanceMapEncoding = "rust-vmm" | "spec";

/** The xen_mmap_flags value for a region. */
export function xenMmapFlags(kind: "foreign" | "grant", noAdvanceMap: boolean, encoding: NoAdvanceMapEncoding = "rust-vmm"): number {
  if (kind === "foreign") {
    if (noAdvanceMap) throw new RangeError("NO_ADVANCE_MAP is only valid with GRANT");
    return XenMmapFlag.FOREIGN;
  }
  if (!noAdvanceMap) return XenMmapFlag.GRANT;
  return XenMmapFlag.GRANT | (encoding === "spec" ? XenMmapFlag.NO_ADVANCE_MAP_SPEC : XenMmapFlag.NO_ADVANCE_MAP_RUST_VMM);
}

/** Decodes xen_mmap_flags, accepting either NO_ADVANCE_MAP value. @throws RangeError for anything else. */
export function parseXenMmapFlags(flags: number): { kind: "unix" | "foreign" | "grant"; noAdvanceMap: boolean } {
  const nam = XenMmapFlag.NO_ADVANCE_MAP_RUST_VMM | XenMmapFlag.NO_ADVANCE_MAP_SPEC;
  const noAdvanceMap = (flags & nam) !== 0;
  const base = flags & ~nam;
  if (base === XenMmapFlag.GRANT) return { kind: "grant", noAdvanceMap };
  if (!noAdvanceMap && base === XenMmapFlag.FOREIGN) return { kind: "foreign", noAdvanceMap };
  if (!noAdvanceMap && base === XenMmapFlag.UNIX) return { kind: "unix", noAdvanceMap };
  throw new RangeError(`xen_mmap_flags 0x${flags.toString(16)} is not UNIX, FOREIGN, GRANT or GRANT|NO_ADVANCE_MAP`);
}
