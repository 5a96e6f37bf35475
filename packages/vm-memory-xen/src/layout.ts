// Where a domain's RAM is, in guest-physical addresses: what to foreign-map so a backend can reach any
// buffer the guest hands it. No hypercall returns another domain's memory map (XENMEM_memory_map,
// public/memory.h, answers for the *calling* domain only; XENMEM_set_memory_map is write-only and Arm has
// no e820 at all), so the layout is rebuilt from the rules the toolstack used to build the guest, sized
// from what Xen reports for the domain (XEN_DOMCTL_getdomaininfo) or from an explicit RAM size.
//
// Arm (xen/include/public/arch-arm.h; tools/libs/guest/xg_dom_arm.c `meminit`): RAM fills GUEST_RAM0
// (0x4000_0000, up to 3 GiB) first, then GUEST_RAM1 (0x2_0000_0000, up to 1016 GiB).
// x86 HVM/PVH (public/hvm/e820.h; libxl): RAM below HVM_BELOW_4G_RAM_END (0xF000_0000, i.e. a 256 MiB MMIO
// hole below 4 GiB), the rest from 4 GiB; HVM guests with emulated VGA (XEN_X86_EMU_VGA) have no RAM in the
// legacy VGA hole 0xA_0000..0xC_0000 (libxc skips populating it).
//
// Sizing. `tot_pages` counts every page the domain owns, not only RAM: on Arm the toolstack populates
// NR_MAGIC_PAGES = 4 pages at GUEST_MAGIC_BASE 0x3900_0000 (console, xenstore, memaccess, vuart;
// xg_dom_arm.c `alloc_magic_pages`), which is what xen-vhost-frontend's `nr_pages - 4` subtracts. But
// tot_pages also shrinks when the guest balloons out pages (holes appear anywhere in RAM, the banks do not
// move) and grows with ACPI tables on arm64 ACPI guests, so `tot_pages - 4` is right only for a freshly
// booted, unballooned guest. `max_pages` is balloon-independent: libxl sets it to the configured memory plus
// LIBXL_MAXMEM_CONSTANT (1 MiB of slack, libxl_internal.h; `libxl__arch_extra_memory`). The preferred source
// is the configured size itself (XenStore /local/domain/<id>/memory/static-max, KiB), passed as `ramBytes`;
// then `max_pages - 256` (or `max_pages` itself when the gap to tot_pages shows no libxl slack: dom0less,
// the simulator); then `tot_pages - 4`. The result says which was used.
import type { DomainInfo, XenArch } from "@xen-vhost/xen-sys";
import { XenMemoryError, hex } from "./error.js";
import { XEN_PAGE_SIZE } from "./grant-address.js";

/* public/arch-arm.h */
export const GUEST_RAM0_BASE = 0x4000_0000n;
export const GUEST_RAM0_SIZE = 0xc000_0000n;
export const GUEST_RAM1_BASE = 0x2_0000_0000n;
export const GUEST_RAM1_SIZE = 0xfe_0000_0000n;
export const GUEST_RAM_MAX = GUEST_RAM0_SIZE + GUEST_RAM1_SIZE;
export const GUEST_MAGIC_BASE = 0x3900_0000n;
/* tools/libs/guest/xg_dom_arm.c: #define NR_MAGIC_PAGES 4 */
export const NR_MAGIC_PAGES = 4n;
/* tools/libs/light/libxl_internal.h: #define LIBXL_MAXMEM_CONSTANT 1024 (KiB) */
export const LIBXL_MAXMEM_CONSTANT_PAGES = 1024n / 4n;
/* public/hvm/e820.h */
export const HVM_BELOW_4G_RAM_END = 0xf000_0000n;
const FOUR_GIB = 0x1_0000_0000n;
/* Legacy VGA window, not populated for HVM guests with emulated VGA. */
export const VGA_HOLE_START = 0xa_0000n;
export const VGA_HOLE_END = 0xc_0000n;
/* public/arch-x86/xen.h: #define _XEN_X86_EMU_VGA 6 */
export const XEN_X86_EMU_VGA = 1 << 6;

/** One contiguous range of guest RAM. */
export interface RamBank {
  readonly base: bigint;
  readonly size: bigint;
}

/** Which figure sized the RAM. */
export type RamSizeSource = "explicit" | "max_pages" | "tot_pages";

export interface GuestRamLayout {
  readonly arch: XenArch;
  readonly domid: number;
  readonly banks: readonly RamBank[];
  /** Sum of the bank sizes. */
  readonly ramBytes: bigint;
  readonly source: RamSizeSource;
  /** Pages the domain holds now beyond the magic pages (`tot_pages - 4`), for comparison. */
  readonly populatedPages: bigint;
  /** Things the caller should know (ballooned guest, figures that disagree). */
  readonly notes: readonly string[];
}

export interface RamLayoutOptions {
  /** The configured RAM in bytes (e.g. XenStore memory/static-max * 1024). Wins over page counts. */
  ramBytes?: bigint | number;
  /** x86: the MMIO hole below 4 GiB (default 256 MiB, libxl's `mmio_hole` default). */
  mmioHoleBytes?: bigint | number;
  /** x86: skip the VGA hole (default: when the domain emulates VGA, i.e. an HVM guest). */
  vgaHole?: boolean;
}

const NO_LIMIT = 0xffff_ffff_ffff_ffffn;

function pageAlignDown(v: bigint): bigint {
  return v & ~BigInt(XEN_PAGE_SIZE - 1);
}

/**
 * The RAM banks of a domain from its getdomaininfo record (pure: no Xen call).
 * @throws XenMemoryError `LayoutUnavailable` when no size can be derived (a dying domain with no pages,
 *   an explicit size beyond what the architecture can place).
 */
export function guestRamLayout(info: DomainInfo, arch: XenArch, options: RamLayoutOptions = {}): GuestRamLayout {
  const notes: string[] = [];
  const populatedPages = info.totPages > NR_MAGIC_PAGES ? info.totPages - NR_MAGIC_PAGES : 0n;
  let ram: bigint;
  let source: RamSizeSource;
  if (options.ramBytes !== undefined) {
    ram = pageAlignDown(BigInt(options.ramBytes));
    if (ram <= 0n) throw new XenMemoryError("LayoutUnavailable", `explicit RAM size ${String(options.ramBytes)} is not positive`, { domid: info.domid });
    source = "explicit";
  } else if (info.maxPages > LIBXL_MAXMEM_CONSTANT_PAGES && info.maxPages !== NO_LIMIT && info.maxPages !== 0xffff_ffffn) {
    // libxl leaves max_pages - tot_pages >= 256 - 4 (its slack minus the magic pages; more once the guest
    // balloons down). Less than that means max_pages carries no libxl slack (dom0less, other toolstacks,
    // the simulator): then max_pages is the RAM itself.
    const libxl = info.maxPages - info.totPages >= LIBXL_MAXMEM_CONSTANT_PAGES - NR_MAGIC_PAGES;
    ram = (libxl ? info.maxPages - LIBXL_MAXMEM_CONSTANT_PAGES : info.maxPages) * BigInt(XEN_PAGE_SIZE);
    source = "max_pages";
    if (!libxl) notes.push("max_pages carries no libxl slack (max_pages - tot_pages < 252): taken as the RAM size");
  } else if (populatedPages > 0n) {
    ram = populatedPages * BigInt(XEN_PAGE_SIZE);
    source = "tot_pages";
    notes.push("sized from tot_pages - 4: exact only for an unballooned guest");
  } else {
    throw new XenMemoryError("LayoutUnavailable", `domain ${info.domid} reports no pages (tot_pages ${info.totPages}, max_pages ${info.maxPages})`, { domid: info.domid });
  }
  const ramPages = ram / BigInt(XEN_PAGE_SIZE);
  if (source !== "tot_pages" && populatedPages < ramPages)
    notes.push(`${ramPages - populatedPages} of ${ramPages} RAM pages are not populated (ballooned out or not yet built): mapping them fails`);
  if (populatedPages > ramPages)
    notes.push(`the domain holds ${populatedPages - ramPages} pages beyond the RAM size (ACPI tables, toolstack slack other than libxl's)`);
  // x86 PV guests have one contiguous pseudo-physical range; HVM and PVH follow the e820 rules.
  const banks = arch === "arm64" ? armBanks(ram, info.domid) : info.hvm ? x86Banks(ram, info, options) : [{ base: 0n, size: ram }];
  return { arch, domid: info.domid, banks, ramBytes: ram, source, populatedPages, notes };
}

function armBanks(ram: bigint, domid: number): RamBank[] {
  if (ram > GUEST_RAM_MAX)
    throw new XenMemoryError("LayoutUnavailable", `domain ${domid}: ${hex(ram)} bytes of RAM exceed GUEST_RAM_MAX ${hex(GUEST_RAM_MAX)}`, { domid });
  const banks: RamBank[] = [{ base: GUEST_RAM0_BASE, size: ram < GUEST_RAM0_SIZE ? ram : GUEST_RAM0_SIZE }];
  if (ram > GUEST_RAM0_SIZE) banks.push({ base: GUEST_RAM1_BASE, size: ram - GUEST_RAM0_SIZE });
  return banks;
}

function x86Banks(ram: bigint, info: DomainInfo, options: RamLayoutOptions): RamBank[] {
  const hole = options.mmioHoleBytes !== undefined ? pageAlignDown(BigInt(options.mmioHoleBytes)) : FOUR_GIB - HVM_BELOW_4G_RAM_END;
  if (hole < 0n || hole > FOUR_GIB) throw new RangeError(`mmioHoleBytes ${String(options.mmioHoleBytes)} outside 0..4 GiB`);
  const lowEnd = FOUR_GIB - hole;
  const emulatesVga = info.arch.arch === "x86_64" && (info.arch.emulationFlags & XEN_X86_EMU_VGA) !== 0;
  const vga = options.vgaHole ?? emulatesVga;
  const low = ram < lowEnd ? ram : lowEnd;
  const banks: RamBank[] = [];
  if (vga && low > VGA_HOLE_END) {
    banks.push({ base: 0n, size: VGA_HOLE_START });
    banks.push({ base: VGA_HOLE_END, size: low - VGA_HOLE_END });
  } else if (vga) {
    banks.push({ base: 0n, size: low < VGA_HOLE_START ? low : VGA_HOLE_START });
  } else {
    banks.push({ base: 0n, size: low });
  }
  if (ram > lowEnd) banks.push({ base: FOUR_GIB, size: ram - lowEnd });
  return banks;
}

/** Anything that can answer getdomaininfo (the xen-sys `Xen` facade). */
export interface DomainInfoSource {
  getDomainInfo(domid: number): DomainInfo;
  readonly transport: { readonly arch: XenArch };
}

/**
 * Asks Xen for the domain (XEN_DOMCTL_getdomaininfo) and derives its RAM banks.
 * @throws XenMemoryError `LayoutUnavailable` (cause: the XenError, e.g. NoSuchDomain).
 */
export function discoverGuestRam(xen: DomainInfoSource, domid: number, options: RamLayoutOptions = {}): GuestRamLayout {
  let info: DomainInfo;
  try {
    info = xen.getDomainInfo(domid);
  } catch (err) {
    throw new XenMemoryError("LayoutUnavailable", `cannot read domain ${domid}: ${(err as Error).message}`, { domid }, { cause: err });
  }
  return guestRamLayout(info, xen.transport.arch, options);
}

/** Anything that reads XenStore nodes (xen-sys's XenStore client). A missing node rejects / throws. */
export interface XenStoreReader {
  read(path: string): Promise<string>;
}

/**
 * The domain's configured RAM in bytes from XenStore: `memory/static-max` (libxl's maxmem, the RAM the
 * banks were sized for), else `memory/target` (the balloon target, KiB). Undefined when neither exists.
 * @throws XenMemoryError `LayoutUnavailable` for a node that is not a number.
 */
export async function readConfiguredRamBytes(store: XenStoreReader, domid: number): Promise<bigint | undefined> {
  for (const node of ["static-max", "target"]) {
    const path = `/local/domain/${domid}/memory/${node}`;
    let text: string;
    try {
      text = await store.read(path);
    } catch {
      continue;
    }
    const t = text.trim();
    if (!/^\d{1,15}$/.test(t)) throw new XenMemoryError("LayoutUnavailable", `${path} is ${JSON.stringify(text)}, not a KiB count`, { domid });
    return BigInt(t) * 1024n;
  }
  return undefined;
}
