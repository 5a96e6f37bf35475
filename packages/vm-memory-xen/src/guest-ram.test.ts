import { describe, expect, it } from "vitest";
import { errnoOf } from "@xen-vhost/vmm-sys-util";
import { RecordingTransport } from "@xen-vhost/xen-sys/testing";
import type { XenMemoryError } from "./error.js";
import { guestMemoryFromLayout, mapGuestRam } from "./guest-ram.js";
import type { GuestRamLayout } from "./layout.js";

const layout = (banks: { base: bigint; size: bigint }[]): GuestRamLayout => ({
  arch: "x86_64", domid: 3, banks, ramBytes: banks.reduce((n, b) => n + b.size, 0n), source: "explicit", populatedPages: 0n, notes: [],
});

describe("mapGuestRam", () => {
  it("maps every bank in chunks of at most maxRegionBytes", () => {
    const t = new RecordingTransport();
    const regions = mapGuestRam(t, layout([{ base: 0n, size: 0xa_0000n }, { base: 0xc_0000n, size: 0x4_0000n }]), { maxRegionBytes: 0x4_0000 });
    expect(regions.map((r) => [r.guestBase.value, r.size])).toEqual([
      [0n, 0x4_0000], [0x4_0000n, 0x4_0000], [0x8_0000n, 0x2_0000], [0xc_0000n, 0x4_0000],
    ]);
    expect(t.of("mmapForeign").every((c) => c.domid === 3)).toBe(true);
    for (const r of regions) r.close();
  });

  it("unmaps the chunks already mapped when a later one fails", () => {
    const handed: ArrayBuffer[] = [];
    let n = 0;
    const t = new RecordingTransport({
      respond: {
        mmapForeign(_d, g) {
          const buffer = new ArrayBuffer(g.length * 4096);
          handed.push(buffer);
          return { buffer, errors: Int32Array.from(g, (_, i) => (++n > 1 && i === 0 ? errnoOf("EFAULT") : 0)) };
        },
      },
    });
    let err: unknown;
    try {
      guestMemoryFromLayout(t, layout([{ base: 0x4000_0000n, size: 0x2000n }]), { maxRegionBytes: 0x1000 });
    } catch (e) {
      err = e;
    }
    expect((err as XenMemoryError).kind).toBe("ForeignMapFailed");
    expect((err as XenMemoryError).gfn).toBe(0x40001n);
    expect(handed.map((b) => b.byteLength)).toEqual([0, 0]); // both released
  });

  it("refuses a chunk size that is not a page multiple", () => {
    expect(() => mapGuestRam(new RecordingTransport(), layout([]), { maxRegionBytes: 1000 })).toThrow(RangeError);
  });
});
