// The back-end framework against a real socket, real memfd guest memory, real eventfds and virtio-queue's
// driver side: what a KVM-style front-end does.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UnixListener, UnixStream, memfdCreate, ftruncate, close as closeFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory, MmapRegion } from "@xen-vhost/vm-memory";
import {
  Connection, FrontendReq, VhostUserHeaderFlag, BackendReq, encodeHeader, protocolFeatureSet, XenMmapFlags, type VhostUserMessage,
} from "@xen-vhost/vhost-user-protocol";
import { VhostUserDaemon, VHOST_USER_F_PROTOCOL_FEATURES, BackendError, mapRegion, type XenRegionMapper, type XenRegionDescription } from "../src/index.js";
import { TestFrontend, collectUsed, post } from "../src/testing/index.js";
import { EchoDevice } from "./echo-device.js";

const enc = new TextEncoder();
let dir: string;
let leaks: ReturnType<typeof fdLeakCheck>;
const open: { close(): void }[] = [];

function track<T extends { close(): void }>(x: T): T {
  open.push(x);
  return x;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "vub-"));
  leaks = fdLeakCheck();
});

afterEach(async () => {
  for (const x of open.splice(0).reverse()) x.close();
  await new Promise((r) => setTimeout(r, 20));
  rmSync(dir, { recursive: true, force: true });
  expect(leaks.check()).toEqual([]);
});

function startDaemon(device = new EchoDevice(), extra: Partial<ConstructorParameters<typeof VhostUserDaemon>[1]> = {}): { daemon: VhostUserDaemon; path: string; device: EchoDevice } {
  const path = join(dir, "echo.sock");
  const daemon = track(new VhostUserDaemon(device, { socket: path, ...extra }).start());
  return { daemon, path, device };
}

function memory(): GuestMemory {
  return track(GuestMemory.fromRanges([[0, 0x10_0000], [0x10_0000, 0x10_0000]]));
}

describe("feature negotiation", () => {
  it("offers the device features plus PROTOCOL_FEATURES, and only the protocol features it implements", async () => {
    const { path } = startDaemon();
    const fe = track(TestFrontend.connect(path));
    expect(await fe.u64("GET_FEATURES")).toBe((1n << 32n) | (1n << 29n) | (1n << 28n) | VHOST_USER_F_PROTOCOL_FEATURES);
    const pf = await fe.u64("GET_PROTOCOL_FEATURES");
    expect(pf).toBe(protocolFeatureSet(["MQ", "REPLY_ACK", "BACKEND_REQ", "CONFIGURE_MEM_SLOTS", "RESET_DEVICE", "STATUS", "CONFIG"]));
    // XEN_MMAP only with a mapper plugged in
    expect(pf & protocolFeatureSet(["XEN_MMAP"])).toBe(0n);
    await fe.negotiate({ protocol: ["MQ", "CONFIGURE_MEM_SLOTS"] });
    expect(await fe.u64("GET_QUEUE_NUM")).toBe(1n);
    expect(await fe.u64("GET_MAX_MEM_SLOTS")).toBe(32n);
  });

  it("closes the connection when a front-end acks features that were not offered, and accepts the next one", async () => {
    const { path, daemon } = startDaemon();
    const fe = track(TestFrontend.connect(path));
    await fe.u64("GET_FEATURES");
    await fe.request("SET_FEATURES", { kind: "u64", value: 1n << 40n });
    const cause = await fe.whenClosed();
    expect(cause?.kind).toBe("Disconnected");
    const fe2 = track(TestFrontend.connect(path));
    await fe2.negotiate();
    expect(daemon.connections).toBe(2);
  });
});

describe("data path", () => {
  for (const eventIdx of [false, true]) {
    it(`runs chains through the device and signals the call eventfd (EVENT_IDX ${eventIdx ? "on" : "off"})`, async () => {
      const { path, device } = startDaemon();
      const mem = memory();
      const fe = track(TestFrontend.connect(path));
      const all = await fe.u64("GET_FEATURES");
      await fe.negotiate({ features: eventIdx ? all : all & ~(1n << 29n) });
      expect(await fe.setMemTable(mem)).toBe(0n);
      const ring = await fe.setupRing(mem, 0, 0x1000n, 16, { eventIdx });
      track(ring.kick);
      track(ring.call);
      const words = ["hello", "vhost", "user"];
      words.forEach((w, i) => {
        mem.write(0x8000 + i * 0x100, enc.encode(w));
        post(ring, { readable: [{ addr: 0x8000 + i * 0x100, len: w.length }], writable: [{ addr: 0x20_000 + i * 0x100, len: 64 }] }, i);
      });
      const used = await collectUsed(ring, 3);
      expect(used.map((u) => u.len)).toEqual([5, 5, 4]);
      for (const u of used) {
        const w = words[u.token!]!;
        expect(new TextDecoder().decode(mem.read(0x20_000 + u.token! * 0x100, w.length))).toBe([...w].reverse().join(""));
      }
      expect(ring.call.read()).not.toBeNull();
      expect(device.handled).toBe(3);
      const base = await fe.request("GET_VRING_BASE", { kind: "vring-state", index: 0, num: 0 });
      expect(base?.payload).toEqual({ kind: "vring-state", index: 0, num: 3 });
      expect(device.stopped).toEqual([0]);
    });
  }

  it("serves a chain the driver published while the device ran with notifications off (no kick comes for it)", async () => {
    // The lost wake-up: the device looks at an empty ring with VIRTQ_USED_F_NO_NOTIFY set (here the run
    // SET_VRING_ENABLE triggers); the driver publishes right then, reads NO_NOTIFY and does not kick. The
    // back-end must look again after re-enabling notifications, even though that run popped nothing.
    const device = new EchoDevice();
    const setUp: { ring?: Awaited<ReturnType<TestFrontend["setupRing"]>> } = {};
    let raced = false;
    const handle = device.handleQueue.bind(device);
    device.handleQueue = (vring) => {
      handle(vring);
      const ring = setUp.ring;
      if (raced || !ring) return;
      raced = true;
      mem.write(0x8000, enc.encode("late"));
      ring.driver.add({ readable: [{ addr: 0x8000, len: 4 }], writable: [{ addr: 0x9000, len: 4 }] }, { token: 1 });
      if (ring.driver.needsNotification()) ring.kick.write(1); // an honest driver: no kick under NO_NOTIFY
    };
    const { path } = startDaemon(device);
    const mem = memory();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate({ features: (await fe.u64("GET_FEATURES")) & ~(1n << 29n) });
    await fe.setMemTable(mem);
    const ring = (setUp.ring = await fe.setupRing(mem, 0, 0x1000n, 8, { enable: false }));
    track(ring.kick);
    track(ring.call);
    await fe.ack("SET_VRING_ENABLE", { kind: "vring-state", index: 0, num: 1 });
    const [u] = await collectUsed(ring, 1);
    expect(raced).toBe(true);
    expect(u!.len).toBe(4);
    expect(new TextDecoder().decode(mem.read(0x9000, 4))).toBe("etal");
  });

  it("buffers spanning two memfd regions and indirect chains", async () => {
    const { path } = startDaemon();
    const mem = memory();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate();
    await fe.setMemTable(mem);
    const ring = await fe.setupRing(mem, 0, 0x1000n, 8);
    track(ring.kick);
    track(ring.call);
    mem.write(0xffffe, enc.encode("abcd")); // crosses 0x100000, the region boundary
    ring.driver.add({ readable: [{ addr: 0xffffe, len: 4 }], writable: [{ addr: 0x30000, len: 4 }] }, { indirect: true, token: 1 });
    ring.kick.write(1);
    const [u] = await collectUsed(ring, 1);
    expect(u!.len).toBe(4);
    expect(new TextDecoder().decode(mem.read(0x30000, 4))).toBe("dcba");
  });

  it("returns a malformed chain (buffer outside memory) with length 0 and keeps serving", async () => {
    const { path, device } = startDaemon();
    const mem = memory();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate();
    await fe.setMemTable(mem);
    const ring = await fe.setupRing(mem, 0, 0x1000n, 8);
    track(ring.kick);
    track(ring.call);
    // DriverQueue refuses buffers outside memory, so scribble the descriptor after adding a good one.
    const head = ring.driver.add({ readable: [{ addr: 0x8000, len: 4 }], writable: [{ addr: 0x9000, len: 4 }] }, { token: 7, publish: false });
    mem.store64(0x1000 + head * 16, 0x7000_0000n);
    ring.driver.publish();
    ring.kick.write(1);
    mem.write(0x8100, enc.encode("ok"));
    post(ring, { readable: [{ addr: 0x8100, len: 2 }], writable: [{ addr: 0x9100, len: 2 }] }, 8);
    const used = await collectUsed(ring, 2);
    expect(used.find((u) => u.token === 7)?.len).toBe(0);
    expect(used.find((u) => u.token === 8)?.len).toBe(2);
    expect(device.handled).toBe(1);
  });

  it("does not process a ring until SET_VRING_ENABLE 1 (PROTOCOL_FEATURES negotiated)", async () => {
    const { path, device } = startDaemon();
    const mem = memory();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate();
    await fe.setMemTable(mem);
    const ring = await fe.setupRing(mem, 0, 0x1000n, 8, { enable: false });
    track(ring.kick);
    track(ring.call);
    post(ring, { readable: [{ addr: 0x8000, len: 1 }], writable: [{ addr: 0x9000, len: 1 }] });
    await new Promise((r) => setTimeout(r, 30));
    expect(device.handled).toBe(0);
    expect(await fe.ack("SET_VRING_ENABLE", { kind: "vring-state", index: 0, num: 1 })).toBe(0n);
    await collectUsed(ring, 1);
    expect(device.handled).toBe(1);
  });

  it("ADD_MEM_REG / REM_MEM_REG rebuild the table while the ring runs", async () => {
    const { path, daemon } = startDaemon();
    const mem = memory();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate({ protocol: ["MQ", "REPLY_ACK", "CONFIGURE_MEM_SLOTS"] });
    const [d0, d1] = mem.vhostUserRegions();
    const region = (d: typeof d0) => ({ guestPhysAddr: d!.guest_phys_addr, memorySize: d!.memory_size, userAddr: d!.userspace_addr, mmapOffset: d!.mmap_offset });
    expect(await fe.ack("ADD_MEM_REG", { kind: "single-region", region: region(d0) }, [d0!.fd])).toBe(0n);
    const ring = await fe.setupRing(mem, 0, 0x1000n, 8);
    track(ring.kick);
    track(ring.call);
    expect(await fe.ack("ADD_MEM_REG", { kind: "single-region", region: region(d1) }, [d1!.fd])).toBe(0n);
    expect(daemon.handler?.memoryTable.regionCount).toBe(2);
    mem.write(0x18_0000, enc.encode("xy"));
    post(ring, { readable: [{ addr: 0x18_0000, len: 2 }], writable: [{ addr: 0x9000, len: 2 }] });
    await collectUsed(ring, 1);
    expect(new TextDecoder().decode(mem.read(0x9000, 2))).toBe("yx");
    expect(await fe.ack("REM_MEM_REG", { kind: "single-region", region: region(d1) })).toBe(0n);
    expect(daemon.handler?.memoryTable.regionCount).toBe(1);
    // removing it again: a non-zero REPLY_ACK status, the connection stays
    expect(await fe.ack("REM_MEM_REG", { kind: "single-region", region: region(d1) })).toBe(1n);
    expect(await fe.u64("GET_FEATURES")).toBeGreaterThan(0n);
  });
});

describe("config space and the backend-request channel", () => {
  it("GET_CONFIG / SET_CONFIG within the config space; out of range gets an empty reply / failure status", async () => {
    const { path, device } = startDaemon();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate();
    expect(await fe.getConfig(0, 4)).toEqual(enc.encode("ECHO"));
    expect(await fe.ack("SET_CONFIG", { kind: "config", offset: 4, flags: 0, data: new Uint8Array([1, 2, 3, 4]) })).toBe(0n);
    expect(device.config.subarray(4)).toEqual(new Uint8Array([1, 2, 3, 4]));
    expect(await fe.ack("SET_CONFIG", { kind: "config", offset: 0, flags: 0, data: new Uint8Array([9]) })).toBe(1n);
    expect(await fe.getConfig(4, 8)).toBeUndefined();
    expect(await fe.getConfig(0, 8)).toEqual(new Uint8Array([0x45, 0x43, 0x48, 0x4f, 1, 2, 3, 4]));
  });

  it("sends CONFIG_CHANGE_MSG with NEED_REPLY on SET_BACKEND_REQ_FD's socket and waits for the ack", async () => {
    const { path, device } = startDaemon();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate({ protocol: ["MQ", "REPLY_ACK", "CONFIG", "BACKEND_REQ"] });
    const [ours, theirs] = UnixStream.pair();
    const got: VhostUserMessage[] = [];
    const chan = track(new Connection(ours, { expect: () => ({ type: "request", channel: "backend" }) }));
    chan.on("message", (m) => {
      got.push(m);
      chan.send({ request: m.request, flags: VhostUserHeaderFlag.VERSION | VhostUserHeaderFlag.REPLY, payload: { kind: "u64", value: 0n } });
    });
    expect(await fe.ack("SET_BACKEND_REQ_FD", { kind: "none" }, [theirs.fd])).toBe(0n);
    theirs.close();
    await expect(device.ctx!.signalConfigChange()).resolves.toBe(true);
    expect(got).toHaveLength(1);
    expect(got[0]!.request).toBe(BackendReq.CONFIG_CHANGE_MSG);
    expect(got[0]!.flags & VhostUserHeaderFlag.NEED_REPLY).toBeTruthy();
  });
});

describe("status and reset", () => {
  it("SET_STATUS/GET_STATUS; status 0 resets the device", async () => {
    const { path, device } = startDaemon();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate({ protocol: ["MQ", "REPLY_ACK", "STATUS"] });
    expect(await fe.ack("SET_STATUS", { kind: "u64", value: 0xfn })).toBe(0n);
    expect(await fe.u64("GET_STATUS")).toBe(0xfn);
    const before = device.resets;
    await fe.ack("SET_STATUS", { kind: "u64", value: 0n });
    expect(device.resets).toBe(before + 1);
  });
});

describe("hostile front-ends", () => {
  it("a malformed header closes the connection, closes its fds, and the daemon accepts the next front-end", async () => {
    const { path, daemon } = startDaemon();
    const s = UnixStream.connect(path);
    const fd = memfdCreate("junk");
    // version 2 in the flags: invalid
    s.send(encodeHeader({ request: FrontendReq.SET_VRING_CALL, flags: 2, size: 8 }), [fd]);
    s.send(new Uint8Array(8));
    closeFd(fd);
    const gone = new Promise((r) => daemon.once("disconnected", r));
    await gone;
    expect(daemon.handler).toBeUndefined();
    expect(daemon.connections).toBe(1);
    s.close();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate();
    expect(daemon.connections).toBe(2);
  });

  it("SET_MEM_TABLE with fewer fds than regions is refused and nothing stays mapped or open", async () => {
    const { path } = startDaemon();
    const mem = memory();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate();
    const descs = mem.vhostUserRegions();
    const regions = descs.map((d) => ({ guestPhysAddr: d.guest_phys_addr, memorySize: d.memory_size, userAddr: d.userspace_addr, mmapOffset: d.mmap_offset }));
    void fe.request("SET_MEM_TABLE", { kind: "memory", regions }, [descs[0]!.fd]).catch(() => undefined);
    expect((await fe.whenClosed())?.kind).toBe("Disconnected");
  });

  it("a region that cannot be mapped (size not a page multiple) fails with a status and the connection stays", async () => {
    const { path } = startDaemon();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate();
    const fd = memfdCreate("small");
    ftruncate(fd, 4096);
    try {
      const region = { guestPhysAddr: 0n, memorySize: 0x1001n, userAddr: 0x7000_0000n, mmapOffset: 0n };
      expect(await fe.ack("SET_MEM_TABLE", { kind: "memory", regions: [region] }, [fd])).toBe(1n);
    } finally {
      closeFd(fd);
    }
    expect(await fe.u64("GET_FEATURES")).toBeGreaterThan(0n);
  });

  it("a request of a feature that was not negotiated closes the connection", async () => {
    const { path } = startDaemon();
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate({ protocol: ["MQ"] });
    void fe.request("GET_CONFIG", { kind: "config", offset: 0, flags: 0, data: new Uint8Array(4) }).catch(() => undefined);
    expect((await fe.whenClosed())?.kind).toBe("Disconnected");
  });
});

describe("Xen memory regions (XEN_MMAP)", () => {
  /** A stand-in for vm-memory-xen: maps a memfd of the region's size and records what it was asked. */
  class RecordingMapper implements XenRegionMapper {
    readonly name = "recording-mapper";
    readonly seen: Omit<XenRegionDescription, "fd">[] = [];
    readonly types: ("foreign" | "grant")[];
    constructor(types: ("foreign" | "grant")[]) {
      this.types = types;
    }
    supports(type: "foreign" | "grant"): boolean {
      return this.types.includes(type);
    }
    map(r: XenRegionDescription): MmapRegion {
      const { fd: _fd, ...rest } = r;
      this.seen.push(rest);
      // like vm-memory-xen for a grant range beyond what it can address: a prefix of at most 64 KiB
      return MmapRegion.memfd(r.guestPhysAddr, Number(r.memorySize < 0x10000n ? r.memorySize : 0x10000n));
    }
  }

  it("offers XEN_MMAP with a mapper; UNIX regions are mmapped, FOREIGN/GRANT go to the mapper, NO_ADVANCE_MAP in both encodings", async () => {
    const mapper = new RecordingMapper(["foreign", "grant"]);
    const { path, daemon } = startDaemon(new EchoDevice(), { xenMapper: mapper });
    const fe = track(TestFrontend.connect(path));
    const { protocol } = await fe.negotiate({ protocol: ["MQ", "REPLY_ACK", "XEN_MMAP"] });
    expect(protocol & protocolFeatureSet(["XEN_MMAP"])).not.toBe(0n);
    const fds = [0, 1, 2, 3].map((i) => {
      const fd = memfdCreate(`r${i}`);
      ftruncate(fd, 0x10000);
      return fd;
    });
    const r = (i: number, flags: number) => ({
      guestPhysAddr: BigInt(i) * 0x10000n, memorySize: 0x10000n, userAddr: 0x1000_0000n + BigInt(i) * 0x10000n, mmapOffset: 0n,
      xen: { flags, domid: 7 },
    });
    // raw wire values: the codec normalises 0x8 (rust-vmm) and 0x100 (spec) to one flag
    const regions = [r(0, XenMmapFlags.UNIX), r(1, XenMmapFlags.FOREIGN), r(2, XenMmapFlags.GRANT | XenMmapFlags.NO_ADVANCE_MAP_RUST_VMM), r(3, XenMmapFlags.GRANT | XenMmapFlags.NO_ADVANCE_MAP)];
    try {
      expect(await fe.ack("SET_MEM_TABLE", { kind: "memory", regions }, fds)).toBe(0n);
    } finally {
      for (const fd of fds) closeFd(fd);
    }
    expect(daemon.handler?.memoryTable.kinds).toEqual(["unix", "foreign", "grant", "grant"]);
    expect(mapper.seen.map((s) => [s.type, s.noAdvanceMap, s.domid])).toEqual([["foreign", false, 7], ["grant", true, 7], ["grant", true, 7]]);
  });

  it("grant regions at Xen grant DMA addresses (bit 63 set) are accepted", async () => {
    const mapper = new RecordingMapper(["grant"]);
    const { path, daemon } = startDaemon(new EchoDevice(), { xenMapper: mapper });
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate({ protocol: ["MQ", "REPLY_ACK", "XEN_MMAP"] });
    const fd = memfdCreate("g");
    ftruncate(fd, 0x10000);
    try {
      const region = { guestPhysAddr: 0x8000_0000_0000_0000n, memorySize: 0x10000n, userAddr: 0x1000_0000n, mmapOffset: 0n, xen: { flags: XenMmapFlags.GRANT | XenMmapFlags.NO_ADVANCE_MAP, domid: 3 } };
      expect(await fe.ack("SET_MEM_TABLE", { kind: "memory", regions: [region] }, [fd])).toBe(0n);
    } finally {
      closeFd(fd);
    }
    expect(daemon.handler?.memoryTable.vaToGpa(0x1000_0010n, 4)).toBe(0x8000_0000_0000_0010n);
  });

  it("a grant region described larger than 2^53 bytes (the whole grant address space) reaches the mapper as bigints", async () => {
    const mapper = new RecordingMapper(["grant"]);
    const { path, daemon } = startDaemon(new EchoDevice(), { xenMapper: mapper });
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate({ protocol: ["MQ", "REPLY_ACK", "XEN_MMAP"] });
    const fd = memfdCreate("g");
    try {
      const region = {
        guestPhysAddr: 1n << 63n, memorySize: 1n << 63n, userAddr: 1n << 63n, mmapOffset: 0n,
        xen: { flags: XenMmapFlags.GRANT | XenMmapFlags.NO_ADVANCE_MAP, domid: 3 },
      };
      expect(await fe.ack("SET_MEM_TABLE", { kind: "memory", regions: [region] }, [fd])).toBe(0n);
    } finally {
      closeFd(fd);
    }
    expect(mapper.seen).toMatchObject([{ guestPhysAddr: 1n << 63n, memorySize: 1n << 63n, type: "grant", noAdvanceMap: true, domid: 3 }]);
    const table = daemon.handler!.memoryTable;
    expect(table.kinds).toEqual(["grant"]);
    expect(table.vaToGpa((1n << 63n) + 0x1000n, 16)).toBe((1n << 63n) + 0x1000n);
    table.memory.write((1n << 63n) + 0x1000n, enc.encode("granted"));
    expect(new TextDecoder().decode(table.memory.read((1n << 63n) + 0x1000n, 7))).toBe("granted");
  });

  it("a memfd (UNIX) region larger than 2^53 bytes is still refused, and a mapper returning more than asked is MapFailed", () => {
    const fd = memfdCreate("u");
    const huge = { guestPhysAddr: 0n, memorySize: 1n << 60n, userAddr: 0n, mmapOffset: 0n };
    expect(() => mapRegion(huge, fd, undefined)).toThrow(/2\^53/);
    const liar: XenRegionMapper = { name: "liar", supports: () => true, map: (r) => MmapRegion.memfd(r.guestPhysAddr, 0x2000) };
    const small = { guestPhysAddr: 0n, memorySize: 0x1000n, userAddr: 0n, mmapOffset: 0n, xen: { flags: XenMmapFlags.FOREIGN, domid: 1 } };
    let err: unknown;
    try {
      mapRegion(small, memfdCreate("f"), liar);
    } catch (e) {
      err = e;
    }
    expect((err as BackendError).kind).toBe("MapFailed");
  });

  it("refuses a region type the mapper cannot map with a failure status", async () => {
    const mapper = new RecordingMapper(["foreign"]);
    const { path, daemon } = startDaemon(new EchoDevice(), { xenMapper: mapper });
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate({ protocol: ["MQ", "REPLY_ACK", "XEN_MMAP"] });
    const fd = memfdCreate("g");
    ftruncate(fd, 0x10000);
    try {
      const region = { guestPhysAddr: 0n, memorySize: 0x10000n, userAddr: 0x1000_0000n, mmapOffset: 0n, xen: { flags: XenMmapFlags.GRANT, domid: 3 } };
      expect(await fe.ack("SET_MEM_TABLE", { kind: "memory", regions: [region] }, [fd])).toBe(1n);
    } finally {
      closeFd(fd);
    }
    expect(daemon.handler?.memoryTable.regionCount).toBe(0);
  });

  it("without a mapper XEN_MMAP is not offered, and acking it anyway closes the connection", async () => {
    const { path } = startDaemon();
    const fe = track(TestFrontend.connect(path));
    await fe.u64("GET_PROTOCOL_FEATURES");
    void fe.request("SET_PROTOCOL_FEATURES", { kind: "u64", value: protocolFeatureSet(["XEN_MMAP"]) }).catch(() => undefined);
    expect((await fe.whenClosed())?.kind).toBe("Disconnected");
  });

  it("MemoryTable names the missing mapper", async () => {
    const { MemoryTable } = await import("../src/index.js");
    const fd = memfdCreate("f");
    ftruncate(fd, 0x10000);
    const region = { guestPhysAddr: 0n, memorySize: 0x10000n, userAddr: 0n, mmapOffset: 0n, xen: { flags: XenMmapFlags.FOREIGN, domid: 1 } };
    const err = (() => {
      try {
        MemoryTable.fromRegions([region], [fd], undefined);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(BackendError);
    expect((err as BackendError).kind).toBe("NoXenMapper");
    expect((err as BackendError).message).toMatch(/--xen-mapper/);
  });
});

describe("socket modes", () => {
  it("client mode retries until the front-end listens and reconnects after it goes away", async () => {
    const path = join(dir, "fe.sock");
    const daemon = track(new VhostUserDaemon(new EchoDevice(), { socket: path, mode: "client", retryDelayMs: 10 }).start());
    await new Promise((r) => setTimeout(r, 30));
    const listener = track(new UnixListener(path));
    const accept = async (): Promise<UnixStream> => {
      for (let i = 0; i < 200; i++) {
        listener.setNonblocking(true);
        const s = listener.accept();
        if (s) return s;
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error("no connection");
    };
    const fe = track(new TestFrontend(await accept()));
    await fe.negotiate();
    fe.close();
    const fe2 = track(new TestFrontend(await accept()));
    await fe2.negotiate();
    expect(await fe2.u64("GET_QUEUE_NUM")).toBe(1n);
    expect(daemon.connections).toBe(2);
  });

  it("client mode gives up after maxAttempts with a Socket error", async () => {
    const daemon = track(new VhostUserDaemon(new EchoDevice(), { socket: join(dir, "nobody.sock"), mode: "client", retryDelayMs: 1, maxAttempts: 3 }));
    const closed = new Promise<Error | undefined>((r) => daemon.once("close", r));
    daemon.start();
    const cause = await closed;
    expect(cause).toBeInstanceOf(BackendError);
    expect((cause as BackendError).kind).toBe("Socket");
  });
});
