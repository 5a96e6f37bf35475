// DeviceMemory against a simulated guest: real foreign RAM mappings and a real grant region (the grant
// device and the backend mapping fd come from the simulator's transport, as privcmd/gntdev in dom0).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startSimulator, type Simulator, type SimTransport } from "@xen-vhost/xen-sim";
import { Xen } from "@xen-vhost/xen-sys";
import { discoverGuestRam, guestMemoryFromLayout, XenMmapFlag, type XenGuestMemory } from "@xen-vhost/vm-memory-xen";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { DeviceMemory } from "../src/device-memory.js";
import type { MemoryMode } from "../src/config.js";

let sim: Simulator;
let transport: SimTransport;
let xen: Xen;
let ram: XenGuestMemory;
const log = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
const G = 1n << 63n;
const queue = (desc: bigint, avail = desc + 0x400n, used = desc + 0x800n) => ({ index: 0, size: 64, desc, avail, used });

beforeAll(async () => {
  sim = await startSimulator({ domains: [{ domid: 1, ram: 16 << 20, vcpus: 1 }] });
  transport = sim.connect();
  xen = Xen.open({ transport });
  ram = guestMemoryFromLayout(transport, discoverGuestRam(xen, 1));
});
afterAll(async () => {
  ram.close();
  transport.close();
  await sim.close();
});

const make = (mode: MemoryMode, grantUsage: boolean): DeviceMemory => new DeviceMemory({ transport, domid: 1, ram, mode, grantUsage, logger: log });

describe("DeviceMemory", () => {
  it("auto: ACCESS_PLATFORM only when the toolstack asked for grants; the rings' addresses pick the memory table", () => {
    ram.vhostUserRegions(); // the RAM regions' own mapping fds (theirs, kept until the guest goes)
    const fds = fdLeakCheck();
    expect(make("auto", false).offersAccessPlatform).toBe(false);
    const m = make("auto", true);
    expect(m.offersAccessPlatform).toBe(true);
    expect(m.validate(queue(0x4010_0000n))).toBeUndefined();
    expect(m.mode).toBe("foreign");
    expect(m.regions()[0]!.xen!.flags & XenMmapFlag.FOREIGN).toBe(XenMmapFlag.FOREIGN);
    expect(m.validate(queue(G | (5n << 12n)))).toMatch(/queue uses grant addresses while the device's other queues use foreign/);
    m.reset();
    expect(m.validate(queue(G | (5n << 12n)))).toBeUndefined();
    expect(m.mode).toBe("grant");
    const [g] = m.regions();
    expect(g!.guest_phys_addr).toBe(G);
    expect(g!.memory_size).toBe(1n << 44n); // every grant_ref_t
    expect(g!.xen!.flags & XenMmapFlag.GRANT).toBe(XenMmapFlag.GRANT);
    expect(g!.xen!.domid).toBe(1);
    // SET_VRING_ADDR carries the front-end's address for the ring: the region's user address plus the offset.
    expect(m.translate(G | (5n << 12n) | 0x80n, 16)).toBe(g!.userspace_addr + (5n << 12n) + 0x80n);
    m.close();
    m.close();
    expect(fds.check()).toEqual([]);
  });

  it("refuses rings it cannot serve: mixed kinds, outside RAM or the grant space, grants on a foreign-only device", () => {
    const auto = make("auto", true);
    expect(auto.validate(queue(0x4010_0000n, G | 0x1000n))).toMatch(/mix grant and guest-physical/);
    expect(auto.validate(queue(0x7000_0000_0000n))).toMatch(/descriptor table at 0x700000000000 is outside guest RAM/);
    expect(auto.validate(queue(G | (1n << 45n)))).toMatch(/outside the grant space/);
    expect(make("auto", false).validate(queue(G | 0x1000n))).toMatch(/not set up for grants/);
    expect(make("foreign", true).validate(queue(G | 0x1000n))).toMatch(/grant addresses on a device configured for foreign memory/);
    const grant = make("grant", false);
    expect(grant.offersAccessPlatform).toBe(true);
    expect(grant.validate(queue(0x4010_0000n))).toMatch(/foreign addresses on a device configured for grant memory/);
    grant.reset(); // a configured mode does not change with the driver
    expect(grant.mode).toBe("grant");
    for (const m of [auto, grant]) m.close();
  });
});
