// The backend-side mapper, plugged into vhost-user-backend's real memory table code.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { MemoryTable, mapRegion } from "@xen-vhost/vhost-user-backend";
import { memfdCreate } from "@xen-vhost/vmm-sys-util";
import { RecordingTransport } from "@xen-vhost/xen-sys/testing";
import { RecordingGrantDevice } from "../test/recording-grant-device.js";
import { grantAddress } from "./grant-address.js";
import { XenGrantRegion } from "./grant-region.js";
import { createXenRegionMapper } from "./mapper.js";

let leaks: ReturnType<typeof fdLeakCheck>;
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

describe("createXenRegionMapper", () => {
  it("says what it maps", () => {
    const m = createXenRegionMapper({ transport: new RecordingTransport() });
    expect(m.name).toBe("vm-memory-xen");
    expect(m.supports("foreign", false)).toBe(true);
    expect(m.supports("foreign", true)).toBe(false);
    expect(m.supports("grant", true)).toBe(true);
    expect(m.supports("grant", false)).toBe(true);
  });

  it("maps a FOREIGN region of a SET_MEM_TABLE through vhost-user-backend's table, frames from the GPA", () => {
    const t = new RecordingTransport();
    const mapper = createXenRegionMapper({ transport: t });
    using table = MemoryTable.fromRegions(
      [{ guestPhysAddr: 0x4000_0000n, memorySize: 0x4000n, userAddr: 0x7f00_0000_0000n, mmapOffset: 0n, xen: { flags: 0x1, domid: 6 } }],
      [memfdCreate("privcmd-standin")],
      mapper,
    );
    expect(table.kinds).toEqual(["foreign"]);
    expect(t.of("mmapForeign")[0]).toMatchObject({ domid: 6, gfns: [0x40000n, 0x40001n, 0x40002n, 0x40003n] });
    table.memory.write(0x4000_1000, new Uint8Array([1, 2]));
    expect(Array.from(table.memory.read(0x4000_1000, 2))).toEqual([1, 2]);
    expect(table.vaToGpa(0x7f00_0000_1000n, 2)).toBe(0x4000_1000n);
  });

  it("maps GRANT regions (on demand with NO_ADVANCE_MAP) at their grant address", () => {
    const dev = new RecordingGrantDevice();
    const mapper = createXenRegionMapper({ transport: new RecordingTransport({ respond: { openGrantDevice: () => dev } }), grantCache: { maxRuns: 4 } });
    const r = mapper.map({
      guestPhysAddr: grantAddress(10), memorySize: 0x8000n, userAddr: 0xffff_8000_0000_a000n, mmapOffset: 0n, fd: -1, type: "grant", noAdvanceMap: true, domid: 6,
    });
    expect(r).toBeInstanceOf(XenGrantRegion);
    expect(r.mapping).toBeUndefined();
    r.borrow(0, 4).release();
    expect(dev.maps[0]).toEqual({ domid: 6, refs: [10], readOnly: false });
    r.close();
  });

  it("a NO_ADVANCE_MAP grant region spanning the grant address space (2^63 bytes) goes through vhost-user-backend's table to gntdev", () => {
    const dev = new RecordingGrantDevice();
    const mapper = createXenRegionMapper({ transport: new RecordingTransport({ respond: { openGrantDevice: () => dev } }) });
    // the codec hands the backend NO_ADVANCE_MAP as 0x100 whatever the wire encoding was
    using table = MemoryTable.fromRegions(
      [{ guestPhysAddr: 1n << 63n, memorySize: 1n << 63n, userAddr: 1n << 63n, mmapOffset: 0n, xen: { flags: 0x102, domid: 6 } }],
      [memfdCreate("gntdev-standin")],
      mapper,
    );
    expect(table.kinds).toEqual(["grant"]);
    // grant reference 0x1234 is reachable by its DMA address and by the front-end's user address alike
    const gpa = grantAddress(0x1234) + 8n;
    expect(table.vaToGpa(gpa, 4)).toBe(gpa);
    table.memory.write(gpa, new Uint8Array([9, 8, 7, 6]));
    expect(Array.from(table.memory.read(gpa, 4))).toEqual([9, 8, 7, 6]);
    expect(dev.maps.at(-1)).toEqual({ domid: 6, refs: [0x1234], readOnly: false });
    // the last grant reference (2^32 - 1) is inside, nothing past it
    expect(() => table.memory.read(grantAddress(0xffff_ffff), 4)).not.toThrow();
    expect(() => table.memory.read(grantAddress(0xffff_ffff) + 0x1000n, 4)).toThrow(/no memory there/);
  });

  it("refuses a grant region below bit 63 with a typed error as MapFailed's cause", () => {
    const mapper = createXenRegionMapper({ transport: new RecordingTransport() });
    let e: unknown;
    try {
      mapRegion({ guestPhysAddr: 0x4000_0000n, memorySize: 1n << 60n, userAddr: 0n, mmapOffset: 0n, xen: { flags: 0x102, domid: 6 } }, memfdCreate("x"), mapper);
    } catch (err) {
      e = err;
    }
    expect((e as { kind: string }).kind).toBe("MapFailed");
    expect(((e as Error).cause as { kind: string }).kind).toBe("NotAGrantAddress");
  });

  it("a refused mapping becomes vhost-user-backend's MapFailed with our error as the cause", () => {
    const t = new RecordingTransport({ respond: { mmapForeign: (_d, g) => ({ buffer: new ArrayBuffer(g.length * 4096), errors: Int32Array.from(g, () => 14) }) } });
    let e: unknown;
    try {
      mapRegion({ guestPhysAddr: 0x4000_0000n, memorySize: 0x1000n, userAddr: 0x1000n, mmapOffset: 0n, xen: { flags: 0x1, domid: 6 } }, memfdCreate("x"), createXenRegionMapper({ transport: t }));
    } catch (err) {
      e = err;
    }
    expect((e as { kind: string }).kind).toBe("MapFailed");
    expect((e as Error).message).toContain("frame 0x40000");
  });
});
