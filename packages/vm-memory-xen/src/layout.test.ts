import { describe, expect, it } from "vitest";
import { Xen, XEN_DOMCTL, XEN_DOMCTL_PAYLOAD_OFFSET, XenDomctl, xenDomctlGetdomaininfo, type DomainInfo, type XenArch } from "@xen-vhost/xen-sys";
import { RecordingTransport, fail } from "@xen-vhost/xen-sys/testing";
import { XenMemoryError } from "./error.js";
import { errnoOf } from "@xen-vhost/vmm-sys-util";
import { guestMemoryFromLayout } from "./guest-ram.js";
import { discoverGuestRam, guestRamLayout, readConfiguredRamBytes } from "./layout.js";

const MiB = 1024n * 1024n;
const GiB = 1024n * MiB;
const pages = (bytes: bigint) => bytes / 4096n;

/** A getdomaininfo record as libxl leaves it: max_pages = RAM + 1 MiB slack, tot_pages = RAM + 4 magic pages (Arm). */
function info(arch: XenArch, ram: bigint, extra: Partial<DomainInfo> = {}, emulationFlags = 0): DomainInfo {
  // A variable, not a literal: `reported` (newer xen-sys) is then accepted with and without the field in the type.
  const tail = arch === "arm64"
    ? { arch: "arm64" as const, reported: true, gicVersion: 3, teeType: 0, nrSpis: 64, clockFrequency: 0 }
    : { arch: "x86_64" as const, reported: true, emulationFlags, miscFlags: 0 };
  return {
    domid: 7, dying: false, hvm: true, shutdown: false, paused: false, blocked: true, running: false, debugged: false,
    xenstoreDomain: false, hap: true, shutdownReason: 0, flags: 0,
    totPages: pages(ram) + (arch === "arm64" ? 4n : 0n), maxPages: pages(ram) + 256n,
    outstandingPages: 0n, sharedPages: 0n, pagedPages: 0n, sharedInfoFrame: 0n, cpuTime: 0n, onlineVcpus: 1,
    maxVcpuId: 0, ssidref: 0, uuid: "00000000-0000-0000-0000-000000000000", cpupool: 0, gpaddrBits: 40,
    arch: tail,
    ...extra,
  };
}

function kindOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof XenMemoryError ? e.kind : `${(e as Error).name}: ${(e as Error).message}`;
  }
  return "none";
}

describe("Arm guest RAM (GUEST_RAM0 then GUEST_RAM1)", () => {
  it("puts a 512 MiB guest in RAM0 at 0x4000_0000, sized from max_pages", () => {
    const l = guestRamLayout(info("arm64", 512n * MiB), "arm64");
    expect(l.banks).toEqual([{ base: 0x4000_0000n, size: 512n * MiB }]);
    expect(l.source).toBe("max_pages");
    expect(l.populatedPages).toBe(pages(512n * MiB));
    expect(l.notes).toEqual([]);
  });

  it("fills RAM0 (3 GiB) then RAM1 at 0x2_0000_0000 for a 6 GiB guest (xen-vhost-frontend never mapped RAM1)", () => {
    const l = guestRamLayout(info("arm64", 6n * GiB), "arm64");
    expect(l.banks).toEqual([
      { base: 0x4000_0000n, size: 3n * GiB },
      { base: 0x2_0000_0000n, size: 3n * GiB },
    ]);
    expect(l.ramBytes).toBe(6n * GiB);
  });

  it("keeps the configured size for a ballooned guest and says how many pages are missing", () => {
    const l = guestRamLayout(info("arm64", 1n * GiB, { totPages: pages(768n * MiB) + 4n }), "arm64");
    expect(l.banks).toEqual([{ base: 0x4000_0000n, size: 1n * GiB }]);
    expect(l.notes.join()).toContain(`${pages(256n * MiB)} of ${pages(1n * GiB)} RAM pages are not populated`);
  });

  it("a ballooned hole in that RAM: mapping it fails with ForeignMapFailed naming the hole's gfn, nothing stays mapped", () => {
    // 64 KiB of RAM at RAM0 with two pages ballooned out of the middle (Xen refuses unpopulated frames)
    const l = guestRamLayout(info("arm64", 16n * 4096n, { totPages: 14n + 4n }), "arm64");
    expect(l.notes.join()).toContain("2 of 16 RAM pages are not populated");
    const holes = new Set([0x40005n, 0x40009n]);
    const handed: ArrayBuffer[] = [];
    const t = new RecordingTransport({
      respond: {
        mmapForeign(_d, gfns) {
          const buffer = new ArrayBuffer(gfns.length * 4096);
          handed.push(buffer);
          return { buffer, errors: Int32Array.from(gfns, (g) => (holes.has(g) ? errnoOf("EINVAL") : 0)) };
        },
      },
    });
    let e: unknown;
    try {
      guestMemoryFromLayout(t, l, { maxRegionBytes: 0x4000 });
    } catch (err) {
      e = err;
    }
    expect(e).toBeInstanceOf(XenMemoryError);
    const x = e as XenMemoryError;
    expect([x.kind, x.gfn, x.code, x.domid]).toEqual(["ForeignMapFailed", 0x40005n, "EINVAL", 7]);
    expect(x.message).toContain("frame 0x40005");
    // the first chunk (0x40000-0x40003) was mapped and is released again; the failing one never escaped
    expect(handed.map((b) => b.byteLength)).toEqual([0, 0]);
  });

  it("prefers an explicit size (XenStore memory/static-max)", () => {
    const l = guestRamLayout(info("arm64", 1n * GiB), "arm64", { ramBytes: 4n * GiB });
    expect(l.source).toBe("explicit");
    expect(l.banks).toEqual([
      { base: 0x4000_0000n, size: 3n * GiB },
      { base: 0x2_0000_0000n, size: 1n * GiB },
    ]);
  });

  it("falls back to tot_pages - 4 (the magic pages) when max_pages is unlimited", () => {
    const l = guestRamLayout(info("arm64", 256n * MiB, { maxPages: 0xffff_ffff_ffff_ffffn }), "arm64");
    expect(l.source).toBe("tot_pages");
    expect(l.banks).toEqual([{ base: 0x4000_0000n, size: 256n * MiB }]);
  });

  it("refuses sizes it cannot place and domains without pages", () => {
    expect(kindOf(() => guestRamLayout(info("arm64", 1n * GiB), "arm64", { ramBytes: 1020n * GiB }))).toBe("LayoutUnavailable");
    expect(kindOf(() => guestRamLayout(info("arm64", 0n, { totPages: 0n, maxPages: 0n }), "arm64"))).toBe("LayoutUnavailable");
    expect(kindOf(() => guestRamLayout(info("arm64", 0n), "arm64", { ramBytes: 0 }))).toBe("LayoutUnavailable");
  });
});

describe("figures from real Xen 4.17 (xen-rig log: a 128 MiB arm64 domU, `memory = 128`)", () => {
  it("tot_pages 32772 = 32768 + NR_MAGIC_PAGES, max_pages 33024 = 32768 + LIBXL_MAXMEM_CONSTANT: both give 128 MiB", () => {
    const real = info("arm64", 0n, { totPages: 32772n, maxPages: 33024n });
    const l = guestRamLayout(real, "arm64");
    expect(l.banks).toEqual([{ base: 0x4000_0000n, size: 128n * MiB }]);
    expect(l.populatedPages).toBe(32768n);
    expect(l.notes).toEqual([]);
  });
});

describe("toolstacks without libxl's slack (dom0less, xen-sim): max_pages = tot_pages = RAM", () => {
  it("takes max_pages as the RAM size and says so", () => {
    const l = guestRamLayout(info("arm64", 0n, { totPages: pages(64n * MiB), maxPages: pages(64n * MiB) }), "arm64");
    expect(l.banks).toEqual([{ base: 0x4000_0000n, size: 64n * MiB }]);
    expect(l.source).toBe("max_pages");
    expect(l.notes.join()).toContain("no libxl slack");
  });
  it("a libxl guest ballooned down keeps the libxl rule", () => {
    const l = guestRamLayout(info("arm64", 0n, { totPages: pages(32n * MiB) + 4n, maxPages: pages(64n * MiB) + 256n }), "arm64");
    expect(l.ramBytes).toBe(64n * MiB);
  });
});

describe("readConfiguredRamBytes (XenStore)", () => {
  const store = (nodes: Record<string, string>) => ({
    read: (p: string) => (p in nodes ? Promise.resolve(nodes[p]!) : Promise.reject(new Error(`ENOENT ${p}`))),
  });
  it("prefers memory/static-max, then memory/target (KiB)", async () => {
    expect(await readConfiguredRamBytes(store({ "/local/domain/3/memory/static-max": "131072", "/local/domain/3/memory/target": "65536" }), 3)).toBe(128n * MiB);
    expect(await readConfiguredRamBytes(store({ "/local/domain/3/memory/target": "65536" }), 3)).toBe(64n * MiB);
    expect(await readConfiguredRamBytes(store({}), 3)).toBeUndefined();
  });
  it("refuses a node that is not a number", async () => {
    await expect(readConfiguredRamBytes(store({ "/local/domain/3/memory/static-max": "lots" }), 3)).rejects.toMatchObject({ kind: "LayoutUnavailable" });
  });
});

describe("x86 guest RAM (e820 rules)", () => {
  const VGA = 1 << 6;
  it("HVM with emulated VGA: the VGA hole is not RAM, low RAM ends at 0xF000_0000, the rest is above 4 GiB", () => {
    const l = guestRamLayout(info("x86_64", 6n * GiB, {}, 0x3ff), "x86_64");
    expect(l.banks).toEqual([
      { base: 0n, size: 0xa_0000n },
      { base: 0xc_0000n, size: 0xf000_0000n - 0xc_0000n },
      { base: 0x1_0000_0000n, size: 6n * GiB - 0xf000_0000n },
    ]);
    expect(0x3ff & VGA).not.toBe(0);
  });

  it("PVH (no VGA emulation): one low bank", () => {
    const l = guestRamLayout(info("x86_64", 2n * GiB, {}, 1), "x86_64");
    expect(l.banks).toEqual([{ base: 0n, size: 2n * GiB }]);
  });

  it("honours a bigger MMIO hole", () => {
    const l = guestRamLayout(info("x86_64", 4n * GiB, {}, 1), "x86_64", { mmioHoleBytes: 1n * GiB });
    expect(l.banks).toEqual([
      { base: 0n, size: 3n * GiB },
      { base: 0x1_0000_0000n, size: 1n * GiB },
    ]);
  });

  it("PV: one contiguous pseudo-physical range", () => {
    const l = guestRamLayout(info("x86_64", 3n * GiB + 512n * MiB, { hvm: false }), "x86_64");
    expect(l.banks).toEqual([{ base: 0n, size: 3n * GiB + 512n * MiB }]);
  });
});

describe("discoverGuestRam through xen-sys", () => {
  /** Answers XEN_DOMCTL_getdomaininfo with the given record's page counts (an encoding check, not a simulator). */
  function transportFor(arch: XenArch, tot: bigint, max: bigint): RecordingTransport {
    return new RecordingTransport({
      arch,
      respond: {
        domctl(op) {
          const layout = xenDomctlGetdomaininfo(arch);
          const head = XenDomctl.decode(op);
          if (head.domain !== 7) throw fail("ESRCH", "domctl getdomaininfo");
          layout.write(new DataView(op.buffer, op.byteOffset), XEN_DOMCTL_PAYLOAD_OFFSET, { domain: 7, tot_pages: tot, max_pages: max, flags: 1 << 1 });
        },
      },
    });
  }

  it("asks XEN_DOMCTL_getdomaininfo for the domain and lays out its RAM", () => {
    const t = transportFor("arm64", pages(4n * GiB) + 4n, pages(4n * GiB) + 256n);
    using xen = Xen.open({ transport: t });
    const l = discoverGuestRam(xen, 7);
    const call = t.of("domctl")[0]!;
    expect(XenDomctl.decode(call.op)).toMatchObject({ cmd: XEN_DOMCTL.getdomaininfo, domain: 7 });
    expect(l.banks).toEqual([
      { base: 0x4000_0000n, size: 3n * GiB },
      { base: 0x2_0000_0000n, size: 1n * GiB },
    ]);
  });

  it("names the domain when it does not exist", () => {
    using xen = Xen.open({ transport: transportFor("arm64", 0n, 0n) });
    let err: unknown;
    try {
      discoverGuestRam(xen, 9);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(XenMemoryError);
    expect((err as XenMemoryError).kind).toBe("LayoutUnavailable");
    expect((err as XenMemoryError).message).toContain("domain 9");
  });
});
