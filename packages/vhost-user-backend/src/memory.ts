// The memory table a front-end hands over (SET_MEM_TABLE, or ADD_MEM_REG/REM_MEM_REG one region at a time),
// turned into a GuestMemory plus the front-end-virtual-address translation vring addresses need.
//
// Plain regions (no XEN_MMAP, or XEN_MMAP with xen_mmap_flags = UNIX) are shared mappings of the fd that came
// with the region. Xen regions (FOREIGN: guest pages mapped through privcmd; GRANT: grant references through
// gntdev, optionally NO_ADVANCE_MAP = map on demand) cannot be mapped by an agnostic package: they go to a
// `XenRegionMapper` the daemon is given at run time (vm-memory-xen provides one). Without a mapper for the
// region's type the region is refused with `NoXenMapper`, before anything is mapped.
//
// Ownership: every fd received with a region is closed by the table once the region is mapped (or refused).
// A mapper that needs the fd beyond `map()` dups it.
import { GuestMemory, MmapRegion, type GuestMemoryRegion } from "@xen-vhost/vm-memory";
import { close as closeFd, pageSize } from "@xen-vhost/vmm-sys-util";
import { XenMmapFlags, type MemoryRegion } from "@xen-vhost/vhost-user-protocol";
import { BackendError, hex } from "./error.js";

/** What a region mapper gets: the region as the front-end described it, and its fd (borrowed). */
export interface RegionDescription {
  readonly guestPhysAddr: bigint;
  readonly memorySize: bigint;
  /** The front-end's virtual address of the region (vring addresses are in this space). */
  readonly userAddr: bigint;
  readonly mmapOffset: bigint;
  /** The fd that came with the region; closed by the caller after `map` returns. */
  readonly fd: number;
}

/** The kind of a Xen region (vhost-user.rst "Memory region description", xen_mmap_flags). */
export type XenRegionType = "foreign" | "grant";

/** A Xen region: the description plus what XEN_MMAP adds. */
export interface XenRegionDescription extends RegionDescription {
  readonly type: XenRegionType;
  /** Grant regions only: map on demand instead of all at once (NO_ADVANCE_MAP, 0x8 or 0x100 on the wire). */
  readonly noAdvanceMap: boolean;
  /** xen_mmap_data: the guest's domain id. */
  readonly domid: number;
}

/**
 * The hook a Xen mapping package plugs in (rust-vmm vm-memory `MmapRegion::from_range` with `MmapXenFlags`).
 * A daemon gets one at run time (`--xen-mapper <module>`), so the same build serves memfd and Xen front-ends.
 */
export interface XenRegionMapper {
  /** For logs and errors ("vm-memory-xen"). */
  readonly name: string;
  /** Whether this mapper can map regions of `type` (with `noAdvanceMap`). */
  supports(type: XenRegionType, noAdvanceMap: boolean): boolean;
  /**
   * Maps the region. The returned region must start at `guestPhysAddr` and be `memorySize` bytes long, or
   * shorter when the rest of the described range cannot hold guest memory (`memorySize` may exceed 2^53: a
   * grant region spanning the grant address space, of which grant_ref_t reaches 2^44 bytes); it is closed
   * when the table drops it.
   * @throws anything: reported as BackendError `MapFailed` with the error as cause.
   */
  map(region: XenRegionDescription): GuestMemoryRegion;
}

/** What a module named by `--xen-mapper` exports. */
export interface XenRegionMapperModule {
  createXenRegionMapper(options?: Record<string, unknown>): XenRegionMapper | Promise<XenRegionMapper>;
}

/** Classifies the wire flags (already normalised by the codec: NO_ADVANCE_MAP is 0x100 there). */
export function xenRegionType(flags: number): { type: XenRegionType | "unix"; noAdvanceMap: boolean } {
  const noAdvanceMap = (flags & (XenMmapFlags.NO_ADVANCE_MAP | XenMmapFlags.NO_ADVANCE_MAP_RUST_VMM)) !== 0;
  const base = flags & ~(XenMmapFlags.NO_ADVANCE_MAP | XenMmapFlags.NO_ADVANCE_MAP_RUST_VMM);
  if (base === XenMmapFlags.FOREIGN) return { type: "foreign", noAdvanceMap };
  if (base === XenMmapFlags.GRANT) return { type: "grant", noAdvanceMap };
  if (base === XenMmapFlags.UNIX && !noAdvanceMap) return { type: "unix", noAdvanceMap };
  throw new BackendError("InvalidMemoryTable", `xen_mmap_flags ${hex(flags)} is not UNIX, FOREIGN or GRANT(+NO_ADVANCE_MAP)`);
}

interface Entry {
  readonly guestPhysAddr: bigint;
  readonly size: bigint;
  readonly userAddr: bigint;
  readonly mmapOffset: bigint;
  readonly region: GuestMemoryRegion;
  readonly kind: XenRegionType | "unix";
}

const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);

function closeQuietly(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // already closed: nothing more to release
  }
}

/** Maps one region; closes `fd` whatever happens. */
export function mapRegion(r: MemoryRegion, fd: number, mapper: XenRegionMapper | undefined): { region: GuestMemoryRegion; kind: XenRegionType | "unix" } {
  try {
    const where = `region ${hex(r.guestPhysAddr)}+${hex(r.memorySize)}`;
    if (r.memorySize === 0n) throw new BackendError("InvalidMemoryTable", `${where}: size 0`);
    if (r.guestPhysAddr + r.memorySize - 1n > 0xffff_ffff_ffff_ffffn)
      throw new BackendError("InvalidMemoryTable", `${where}: guest address + size wraps past 2^64`);
    if (r.userAddr + r.memorySize - 1n > 0xffff_ffff_ffff_ffffn)
      throw new BackendError("InvalidMemoryTable", `${where}: user address ${hex(r.userAddr)} + size wraps past 2^64`);
    const { type, noAdvanceMap } = r.xen ? xenRegionType(r.xen.flags) : { type: "unix" as const, noAdvanceMap: false };
    if (type === "unix") {
      // An mmap is at most 2^53 - 1 bytes here (and far less in practice). Xen regions may be described
      // larger (a NO_ADVANCE_MAP grant region spanning the grant address space): only the mapper can say
      // which part of such a range can hold guest memory, so they go to it as bigints.
      if (r.memorySize > MAX_SAFE_BIG) throw new BackendError("InvalidMemoryTable", `${where}: larger than 2^53 - 1 bytes`);
      const page = BigInt(pageSize());
      if (r.memorySize % page !== 0n || r.mmapOffset % page !== 0n)
        throw new BackendError("InvalidMemoryTable", `${where}: size and mmap_offset ${hex(r.mmapOffset)} must be multiples of the page size`);
      try {
        return { region: MmapRegion.fromFd(fd, r.guestPhysAddr, Number(r.memorySize), { fileOffset: r.mmapOffset }), kind: type };
      } catch (err) {
        throw new BackendError("MapFailed", `${where}: mmap of fd ${fd} at offset ${hex(r.mmapOffset)} failed: ${(err as Error).message}`, { cause: err });
      }
    }
    const name = noAdvanceMap ? `${type}+NO_ADVANCE_MAP` : type;
    if (!mapper)
      throw new BackendError("NoXenMapper", `${where}: Xen ${name} region (domid ${r.xen?.domid}) but no Xen region mapper is plugged in (start the daemon with --xen-mapper <module>)`);
    if (!mapper.supports(type, noAdvanceMap))
      throw new BackendError("NoXenMapper", `${where}: the Xen region mapper "${mapper.name}" cannot map ${name} regions`);
    let region: GuestMemoryRegion;
    try {
      region = mapper.map({
        guestPhysAddr: r.guestPhysAddr, memorySize: r.memorySize, userAddr: r.userAddr, mmapOffset: r.mmapOffset, fd,
        type, noAdvanceMap, domid: r.xen?.domid ?? 0,
      });
    } catch (err) {
      throw new BackendError("MapFailed", `${where}: ${mapper.name} failed to map the ${name} region: ${(err as Error).message}`, { cause: err });
    }
    // The mapper may return a prefix of the range (a grant region described beyond grant_ref_t's reach, or
    // larger than a region can be), never more and never elsewhere.
    if (region.guestBase.value !== r.guestPhysAddr || BigInt(region.size) > r.memorySize || region.size <= 0) {
      region.close();
      throw new BackendError("MapFailed", `${where}: ${mapper.name} returned a region at ${region.guestBase.toString()} of ${region.size} bytes`);
    }
    return { region, kind: type };
  } finally {
    closeQuietly(fd);
  }
}

/**
 * The front-end's memory: mapped regions, a GuestMemory over them, and VA → GPA translation.
 * Immutable: ADD/REM_MEM_REG build a new table (sharing the unchanged regions) and the old one is dropped
 * without closing them.
 */
export class MemoryTable implements Disposable {
  readonly #entries: readonly Entry[];
  readonly memory: GuestMemory;
  #closed = false;

  private constructor(entries: readonly Entry[]) {
    this.#entries = entries;
    // Overlapping guest ranges are refused by GuestMemory (RegionOverlap).
    this.memory = new GuestMemory(entries.map((e) => e.region), { ownsRegions: false });
  }

  /** An empty table (before SET_MEM_TABLE). */
  static empty(): MemoryTable {
    return new MemoryTable([]);
  }

  /**
   * Maps every region of a SET_MEM_TABLE. Takes ownership of `fds` (one per region): all are closed, and
   * on failure every region mapped so far is unmapped.
   * @throws BackendError InvalidMemoryTable, NoXenMapper, MapFailed
   */
  static fromRegions(regions: readonly MemoryRegion[], fds: readonly number[], mapper: XenRegionMapper | undefined): MemoryTable {
    const entries: Entry[] = [];
    let i = 0;
    try {
      if (fds.length !== regions.length)
        throw new BackendError("InvalidMemoryTable", `${regions.length} regions but ${fds.length} fds`);
      for (; i < regions.length; i++) entries.push(entry(regions[i]!, fds[i]!, mapper));
      return MemoryTable.#build(entries);
    } catch (err) {
      for (let j = i + 1; j < fds.length; j++) closeQuietly(fds[j]!);
      for (const e of entries.reverse()) e.region.close();
      throw err;
    }
  }

  static #build(entries: Entry[]): MemoryTable {
    try {
      return new MemoryTable(entries);
    } catch (err) {
      throw new BackendError("InvalidMemoryTable", (err as Error).message, { cause: err });
    }
  }

  get regionCount(): number {
    return this.#entries.length;
  }

  /** Region kinds, for logs and tests. */
  get kinds(): readonly (XenRegionType | "unix")[] {
    return this.#entries.map((e) => e.kind);
  }

  /**
   * ADD_MEM_REG: a new table with one more region. The region's fd is closed. This table's regions are
   * shared with the new one (drop this one with `release()`, not `close()`).
   */
  withRegion(r: MemoryRegion, fd: number, mapper: XenRegionMapper | undefined): MemoryTable {
    const e = entry(r, fd, mapper);
    try {
      return MemoryTable.#build([...this.#entries, e]);
    } catch (err) {
      e.region.close();
      throw err;
    }
  }

  /**
   * REM_MEM_REG: a new table without the region matching `r` (guest address, size and user address, as the
   * spec says). Returns the new table and the removed region, which the caller closes once nothing uses it.
   */
  withoutRegion(r: MemoryRegion): { table: MemoryTable; removed: GuestMemoryRegion } {
    const idx = this.#entries.findIndex(
      (e) => e.guestPhysAddr === r.guestPhysAddr && e.size === r.memorySize && e.userAddr === r.userAddr,
    );
    if (idx < 0)
      throw new BackendError("InvalidMemoryTable", `REM_MEM_REG: no region at ${hex(r.guestPhysAddr)}+${hex(r.memorySize)} (user ${hex(r.userAddr)})`);
    const rest = this.#entries.filter((_, i) => i !== idx);
    return { table: MemoryTable.#build(rest), removed: this.#entries[idx]!.region };
  }

  /**
   * Front-end virtual address → guest physical address (vring addresses are front-end VAs unless
   * VIRTIO_F_ACCESS_PLATFORM or GPA_ADDRESSES): the whole `[va, va+len)` must fall in one region.
   * @throws BackendError AddressTranslation
   */
  vaToGpa(va: bigint, len: number): bigint {
    for (const e of this.#entries) {
      if (va >= e.userAddr && va - e.userAddr + BigInt(len) <= e.size) return e.guestPhysAddr + (va - e.userAddr);
    }
    throw new BackendError("AddressTranslation", `front-end address ${hex(va)} (+${len}) is in no memory region`);
  }

  /** Forgets the regions without closing them (they live on in a successor table). */
  release(): void {
    this.#closed = true;
  }

  /** Unmaps every region. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const e of this.#entries) e.region.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function entry(r: MemoryRegion, fd: number, mapper: XenRegionMapper | undefined): Entry {
  const { region, kind } = mapRegion(r, fd, mapper);
  return { guestPhysAddr: r.guestPhysAddr, size: r.memorySize, userAddr: r.userAddr, mmapOffset: r.mmapOffset, region, kind };
}
