// A vhost-user back-end (vhost-user-backend's daemon, a real socket and eventfds) serving a simulated Xen
// guest's grants through this package's mapper: the memory table is what a grant-mode front-end sends (one
// NO_ADVANCE_MAP region over the whole grant space, or an advance-mapped ring page plus a NO_ADVANCE_MAP
// region for buffers accessed by copy), the guest lays out its ring and buffers in pages it granted, and the
// device's reply must land in the guest's RAM.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventFd, close as closeFd, memfdCreate } from "@xen-vhost/vmm-sys-util";
import { startSimulator, type Simulator, type SimTransport } from "@xen-vhost/xen-sim";
import { Guest } from "@xen-vhost/xen-sim/guest";
import { XenMmapFlags, type MemoryRegion } from "@xen-vhost/vhost-user-protocol";
import { VhostUserDaemon, type DeviceVring, type VhostUserDevice } from "@xen-vhost/vhost-user-backend";
import { TestFrontend } from "@xen-vhost/vhost-user-backend/testing";
import { XEN_GRANT_DMA_ADDR_OFF, XenGrantCopyRegion, XenGrantRegion, createXenRegionMapper } from "../src/index.js";

const MiB = 1 << 20;
const RAM0 = 0x4000_0000;
let sim: Simulator;
let transport: SimTransport;
let guest: Guest;
let dir: string;

beforeAll(async () => {
  sim = await startSimulator({ domains: [{ domid: 1, ram: 16 * MiB, vcpus: 1 }] });
  transport = sim.connect();
  guest = Guest.attach(sim.socketPath, 1);
  dir = mkdtempSync(join(tmpdir(), "vmx-be-"));
});
afterAll(async () => {
  guest?.close();
  transport?.close();
  await sim?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** One queue; each chain's readable bytes come back upper-cased in its writable buffer. */
class Upper implements VhostUserDevice {
  readonly name = "upper";
  readonly numQueues = 1;
  readonly maxQueueSize = 16;
  readonly features = 1n << 32n;
  handleQueue(v: DeviceVring): void {
    for (let c = v.pop(); c; c = v.pop()) v.addUsed(c.head, c.writeAll(new TextEncoder().encode(new TextDecoder().decode(c.readAll()).toUpperCase())));
  }
}

async function serveOnce(mapper: ReturnType<typeof createXenRegionMapper>, regions: (ring: bigint) => MemoryRegion[], tag: number): Promise<string> {
  // Guest side, as Linux's grant-dma-ops lays it out: a 4-entry split ring in one granted page (desc at 0,
  // avail at 64, used at 80) and two buffers in pages granted after it.
  const ringGpa = BigInt(RAM0 + 0x40_0000 + tag * 0x10_0000);
  const reqGpa = ringGpa + 0x1_0000n;
  const respGpa = ringGpa + 0x2_0000n;
  const ring = guest.grants.grantRange(ringGpa, 4096, { domid: 0 });
  const req = guest.grants.grantRange(reqGpa, 32, { domid: 0 });
  const resp = guest.grants.grantRange(respGpa, 32, { domid: 0 });
  guest.memory.write(reqGpa, new TextEncoder().encode("hello from a granted page"));
  const desc = (i: number, addr: bigint, len: number, flags: number, next: number): void => {
    const b = new DataView(new ArrayBuffer(16));
    b.setBigUint64(0, addr, true);
    b.setUint32(8, len, true);
    b.setUint16(12, flags, true);
    b.setUint16(14, next, true);
    guest.memory.write(ringGpa + BigInt(i * 16), new Uint8Array(b.buffer));
  };
  desc(0, req.dma, 25, 1 /* NEXT */, 1);
  desc(1, resp.dma, 32, 2 /* WRITE */, 0);
  guest.memory.store16(ringGpa + 64n + 4n, 0);
  guest.memory.fence();
  guest.memory.store16(ringGpa + 64n + 2n, 1);

  const path = join(dir, `g${tag}.sock`);
  const daemon = new VhostUserDaemon(new Upper(), { socket: path, xenMapper: mapper }).start();
  const fe = TestFrontend.connect(path);
  const kick = new EventFd();
  const call = new EventFd();
  try {
    await fe.negotiate({ protocol: ["MQ", "REPLY_ACK", "XEN_MMAP"] });
    const rs = regions(ring.dma);
    const fds = rs.map(() => memfdCreate("gntdev-standin")); // the mapper maps through its transport
    try {
      expect(await fe.ack("SET_MEM_TABLE", { kind: "memory", regions: rs }, fds)).toBe(0n);
    } finally {
      for (const fd of fds) closeFd(fd);
    }
    // user addresses = grant addresses in these tables, so the ring's VAs are its grant addresses
    await fe.ack("SET_VRING_NUM", { kind: "vring-state", index: 0, num: 4 });
    await fe.ack("SET_VRING_ADDR", { kind: "vring-addr", index: 0, flags: 0, desc: ring.dma, avail: ring.dma + 64n, used: ring.dma + 80n, log: 0n });
    await fe.ack("SET_VRING_BASE", { kind: "vring-state", index: 0, num: 0 });
    await fe.ack("SET_VRING_CALL", { kind: "u64", value: 0n }, [call.fd]);
    await fe.ack("SET_VRING_KICK", { kind: "u64", value: 0n }, [kick.fd]);
    await fe.ack("SET_VRING_ENABLE", { kind: "vring-state", index: 0, num: 1 });
    kick.write(1);
    for (let i = 0; i < 2000 && guest.memory.load16(ringGpa + 80n + 2n) !== 1; i++) await new Promise((r) => setTimeout(r, 2));
    expect(guest.memory.load16(ringGpa + 80n + 2n)).toBe(1); // used.idx
    expect(guest.memory.load32(ringGpa + 80n + 8n)).toBe(25); // used.ring[0].len
    return new TextDecoder().decode(guest.memory.read(respGpa, 25));
  } finally {
    fe.close();
    daemon.close();
    kick.close();
    call.close();
    await new Promise((r) => setTimeout(r, 20));
    for (const r of [...ring.refs, ...req.refs, ...resp.refs]) expect(guest.grants.endAccess(r)).toBe(true);
  }
}

describe("vhost-user-backend + createXenRegionMapper on a simulated guest's grants", () => {
  it("one NO_ADVANCE_MAP region over the whole grant space (2^63 bytes described): rings and buffers mapped on demand", async () => {
    const mapper = createXenRegionMapper({ transport });
    const reply = await serveOnce(mapper, () => [{
      guestPhysAddr: XEN_GRANT_DMA_ADDR_OFF, memorySize: XEN_GRANT_DMA_ADDR_OFF, userAddr: XEN_GRANT_DMA_ADDR_OFF, mmapOffset: 0n,
      xen: { flags: XenMmapFlags.GRANT | XenMmapFlags.NO_ADVANCE_MAP, domid: 1 },
    }], 0);
    expect(reply).toBe("HELLO FROM A GRANTED PAGE");
  });

  it("an advance-mapped ring page and, after it, a NO_ADVANCE_MAP region for buffers accessed by copy (grantAccess: copy)", async () => {
    const seen: string[] = [];
    const inner = createXenRegionMapper({ transport, grantAccess: "copy" });
    const mapper = { ...inner, map: (r: Parameters<typeof inner.map>[0]) => {
      const region = inner.map(r);
      seen.push(region instanceof XenGrantCopyRegion ? "copy" : region instanceof XenGrantRegion ? "mapped" : "other");
      return region;
    } };
    const reply = await serveOnce(mapper, (ring) => [
      { guestPhysAddr: ring, memorySize: 4096n, userAddr: ring, mmapOffset: 0n, xen: { flags: XenMmapFlags.GRANT, domid: 1 } },
      {
        guestPhysAddr: ring + 4096n, memorySize: XEN_GRANT_DMA_ADDR_OFF + (1n << 44n) - (ring + 4096n), userAddr: ring + 4096n, mmapOffset: 0n,
        xen: { flags: XenMmapFlags.GRANT | XenMmapFlags.NO_ADVANCE_MAP, domid: 1 },
      },
    ], 1);
    expect(reply).toBe("HELLO FROM A GRANTED PAGE");
    expect(seen).toEqual(["mapped", "copy"]);
  });
});
