import { describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UnixListener } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { checkNoOverlap, fromCRegion, toWireRegion } from "./memory.js";
import { acceptOne } from "./socket.js";

describe("region descriptions", () => {
  it("convert numbers and bigints to the wire form", () => {
    expect(toWireRegion({ guestPhysAddr: 0x1000, size: 0x2000n, userAddr: 0x7f00_0000_0000n, mmapOffset: 0, fd: 5 })).toEqual({
      guestPhysAddr: 0x1000n, memorySize: 0x2000n, userAddr: 0x7f00_0000_0000n, mmapOffset: 0n,
    });
  });

  it.each([
    [{ fd: -1 }, /invalid fd -1/],
    [{ size: 0 }, /size is 0/],
    [{ guestPhysAddr: -4 }, /guestPhysAddr -4 must be a non-negative integer/],
    [{ userAddr: 2n ** 64n }, /userAddr 18446744073709551616 out of u64 range/],
    [{ xen: { flags: 0x3, domid: 1 } }, /must be one of UNIX, FOREIGN, GRANT/],
    [{ xen: { flags: 0x101, domid: 1 } }, /NO_ADVANCE_MAP needs GRANT/],
    [{ xen: { flags: 0x2, domid: 70000 } }, /domid 70000 is not a domid_t/],
  ])("refuses %o", (patch, re) => {
    expect(() => toWireRegion({ guestPhysAddr: 0, size: 4096, userAddr: 0, mmapOffset: 0, fd: 3, ...patch })).toThrow(re);
  });

  it("normalises either NO_ADVANCE_MAP encoding to the spec value", () => {
    for (const flags of [0x0a, 0x102])
      expect(toWireRegion({ guestPhysAddr: 0, size: 4096, userAddr: 0, mmapOffset: 0, fd: 3, xen: { flags, domid: 2 } }).xen).toEqual({ flags: 0x102, domid: 2 });
  });

  it("detects overlapping user ranges", () => {
    const a = toWireRegion({ guestPhysAddr: 0, size: 0x1000, userAddr: 0x10000, mmapOffset: 0, fd: 3 });
    const b = toWireRegion({ guestPhysAddr: 0x1000, size: 0x1000, userAddr: 0x10800, mmapOffset: 0, fd: 4 });
    expect(() => checkNoOverlap([a, b])).toThrow(/overlap in user addresses at 0x10800/);
  });

  it("adapts C-named descriptions (vm-memory's vhostUserRegions)", () => {
    expect(fromCRegion({ guest_phys_addr: 1n, memory_size: 2n, userspace_addr: 3n, mmap_offset: 4n, fd: 9, xen: { flags: 1, domid: 7 } }))
      .toEqual({ guestPhysAddr: 1n, size: 2n, userAddr: 3n, mmapOffset: 4n, fd: 9, xen: { flags: 1, domid: 7 } });
  });
});

describe("acceptOne", () => {
  it("times out with a typed error and leaks nothing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "accept-"));
    const leaks = fdLeakCheck();
    const l = new UnixListener(join(dir, "s.sock"));
    await expect(acceptOne(l, 30)).rejects.toMatchObject({ kind: "Timeout", message: /no back-end connected/ });
    l.close();
    expect(leaks.check()).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  });
});
