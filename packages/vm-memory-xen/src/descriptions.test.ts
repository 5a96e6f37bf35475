// The descriptions go into vhost-user-master's wire conversion and vhost-user-protocol's codec unchanged:
// the bridge never assembles a Xen region by hand.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { MmapRegion } from "@xen-vhost/vm-memory";
import { memfdCreate } from "@xen-vhost/vmm-sys-util";
import { RecordingTransport } from "@xen-vhost/xen-sys/testing";
import { checkNoOverlap, fromCRegion, toWireRegion } from "@xen-vhost/vhost-user-master";
import { VhostUserMemoryRegionXen, encodePayload } from "@xen-vhost/vhost-user-protocol";
import { RecordingGrantDevice } from "../test/recording-grant-device.js";
import { XenForeignRegion } from "./foreign-region.js";
import { grantAddress } from "./grant-address.js";
import { XenGrantRegion } from "./grant-region.js";
import { XenGuestMemory } from "./xen-guest-memory.js";

const fdProvider = { openMappingFd: () => memfdCreate("fake") };

let leaks: ReturnType<typeof fdLeakCheck>;
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

describe("descriptions through vhost-user-master and the codec", () => {
  it("a mixed table (memfd, foreign, advance-mapped ring grants, NO_ADVANCE_MAP grants) is valid and non-overlapping", () => {
    const dev = new RecordingGrantDevice();
    using mem = new XenGuestMemory([
      MmapRegion.memfd(0, 0x10000),
      XenForeignRegion.map(new RecordingTransport(), 5, 0x4000_0000, 0x4000, { fdProvider }),
      XenGrantRegion.forRefs(undefined, 5, 8, 2, { device: dev, fdProvider, advanceMap: true }),
      XenGrantRegion.forRefs(undefined, 5, 16, 4096, { device: dev, fdProvider }),
      XenGrantRegion.forRefs(undefined, 5, 8192, 4096, { device: dev, fdProvider, noAdvanceMapEncoding: "spec" }),
    ]);
    const wire = mem.vhostUserRegions().map((d, i) => toWireRegion(fromCRegion(d), i));
    expect(() => checkNoOverlap(wire)).not.toThrow();
    expect(wire.map((r) => r.xen?.flags)).toEqual([undefined, 0x1, 0x2, 0x102, 0x102]); // master normalises to the spec bit
    expect(wire[3]!.guestPhysAddr).toBe(grantAddress(16));

    // On the wire, NO_ADVANCE_MAP is 0x8 by default (rust-vmm backends) and 0x100 with the spec quirk.
    const flagsOnWire = (quirk: "rust-vmm" | "spec") => {
      const body = encodePayload({ kind: "memory", regions: wire.slice(1) }, { xenMmap: true, quirks: { xenNoAdvanceMap: quirk } });
      const view = new DataView(body.buffer, body.byteOffset);
      return wire.slice(1).map((_, i) => VhostUserMemoryRegionXen.read(view, 8 + i * VhostUserMemoryRegionXen.size).xen_mmap_flags);
    };
    expect(flagsOnWire("rust-vmm")).toEqual([0x1, 0x2, 0xa, 0xa]);
    expect(flagsOnWire("spec")).toEqual([0x1, 0x2, 0x102, 0x102]);
  });
});
