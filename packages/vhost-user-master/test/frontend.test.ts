// The front-end against the in-repo fake back-end over a real socketpair / unix socket.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventFd, UnixStream, close, ftruncate, memfdCreate, mmap, munmap } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { BackendReq, VhostUserProtocolFeature, XenMmapFlags, protocolFeatureSet, type VhostUserError } from "@xen-vhost/vhost-user-protocol";
import { Frontend, type MemoryRegionDescription } from "../src/index.js";
import { FakeBackend, FAKE_PROTOCOL_FEATURES, type FakeBackendBehaviour } from "../src/testing/index.js";

const tick = (ms = 5) => new Promise<void>((r) => setTimeout(r, ms));
const NEED_REPLY = 0x8;

let leaks: ReturnType<typeof fdLeakCheck>;
const cleanup: (() => void)[] = [];
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  while (cleanup.length) cleanup.pop()!();
  expect(leaks.check()).toEqual([]);
});

function pair(options: ConstructorParameters<typeof FakeBackend>[1] = {}, feOptions: Parameters<typeof Frontend.fromStream>[1] = {}) {
  const [s, be] = FakeBackend.pair(options);
  const fe = Frontend.fromStream(s, { timeoutMs: 1000, ...feOptions });
  cleanup.push(() => fe.close(), () => be.close());
  return { fe, be };
}

function memfdRegions(n: number, size = 0x10000): { regions: MemoryRegionDescription[]; fds: number[] } {
  const fds: number[] = [];
  const regions = Array.from({ length: n }, (_, i) => {
    const fd = memfdCreate(`region${i}`);
    ftruncate(fd, size);
    fds.push(fd);
    return { guestPhysAddr: BigInt(i * size), size, userAddr: 0x7000_0000_0000n + BigInt(i * size), mmapOffset: 0, fd };
  });
  cleanup.push(() => fds.forEach((fd) => close(fd)));
  return { regions, fds };
}

describe("negotiation", () => {
  it("GET_FEATURES, protocol features, SET_OWNER, backend channel, queue num, mem slots, SET_FEATURES with REPLY_ACK", async () => {
    const { fe, be } = pair();
    const n = await fe.negotiate();
    expect(n.offeredProtocolFeatures).toBe(FAKE_PROTOCOL_FEATURES);
    expect(n.queueNum).toBe(2);
    expect(n.maxMemSlots).toBe(32);
    expect(be.names).toEqual([
      "GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "SET_OWNER", "SET_BACKEND_REQ_FD", "GET_QUEUE_NUM",
      "GET_MAX_MEM_SLOTS", "SET_FEATURES",
    ]);
    // REPLY_ACK is not asked on SET_PROTOCOL_FEATURES, then on everything without its own reply
    const flags = Object.fromEntries(be.log.map((l) => [l.name, l.flags]));
    expect(flags["SET_PROTOCOL_FEATURES"]! & NEED_REPLY).toBe(0);
    expect(flags["SET_OWNER"]! & NEED_REPLY).toBe(NEED_REPLY);
    expect(flags["SET_FEATURES"]! & NEED_REPLY).toBe(NEED_REPLY);
    expect(flags["GET_QUEUE_NUM"]! & NEED_REPLY).toBe(0);
    expect(be.features).toBe(n.features);
    expect(fe.backendChannel).toBeDefined();
  });

  it("acks only the wanted protocol features and drops those missing prerequisites", async () => {
    const { fe, be } = pair();
    await fe.negotiate({ protocolFeatures: ["MQ", "BACKEND_SEND_FD", "BACKEND_REQ"] });
    // BACKEND_SEND_FD needs REPLY_ACK, which was not wanted
    expect(be.protocolFeatures).toBe(protocolFeatureSet(["MQ", "BACKEND_REQ"]));
    expect(be.log.find((l) => l.name === "SET_OWNER")!.flags & NEED_REPLY).toBe(0);
  });

  it("a required protocol feature the back-end lacks is FeatureMismatch", async () => {
    const { fe } = pair();
    await expect(fe.negotiate({ requireProtocolFeatures: ["XEN_MMAP"] })).rejects.toMatchObject({ kind: "FeatureMismatch", message: /XEN_MMAP/ });
  });

  it("requests gated by a protocol feature that was not negotiated are InactiveFeature, before sending", async () => {
    const { fe, be } = pair({ protocolFeatures: 1n << 3n });
    await fe.negotiate();
    const before = be.log.length;
    await expect(fe.getQueueNum()).rejects.toMatchObject({ kind: "InactiveFeature", message: /GET_QUEUE_NUM needs VHOST_USER_PROTOCOL_F_MQ/ });
    await expect(fe.getConfig(0, 4)).rejects.toMatchObject({ kind: "InactiveFeature" });
    expect(be.log.length).toBe(before);
  });

  it("STATUS: driverOk sends SET_STATUS with DRIVER_OK; GET_STATUS reads it back", async () => {
    const { fe, be } = pair();
    await fe.negotiate();
    await fe.driverOk();
    expect(be.status).toBe(0x0f);
    expect(await fe.getStatus()).toBe(0x0f);
  });
});

describe("memory", () => {
  it("SET_MEM_TABLE with memfd regions when CONFIGURE_MEM_SLOTS is not offered", async () => {
    const { fe, be } = pair({ protocolFeatures: FAKE_PROTOCOL_FEATURES & ~(1n << BigInt(VhostUserProtocolFeature.CONFIGURE_MEM_SLOTS)) });
    await fe.negotiate();
    const { regions } = memfdRegions(3);
    await fe.setMemory(regions);
    const l = be.log.at(-1)!;
    expect(l.name).toBe("SET_MEM_TABLE");
    expect(l.nfds).toBe(3);
    expect(be.memory.size).toBe(3);
    // more than fit one message and no mem slots: a typed error naming the limit
    const many = memfdRegions(9);
    await expect(fe.setMemory(many.regions)).rejects.toMatchObject({ kind: "InvalidParam", message: /9 regions do not fit one SET_MEM_TABLE \(limit 8\)/ });
  });

  it("ADD_MEM_REG/REM_MEM_REG with CONFIGURE_MEM_SLOTS, more regions than fit one message", async () => {
    const { fe, be } = pair();
    await fe.negotiate();
    const { regions } = memfdRegions(12);
    await fe.setMemory(regions);
    expect(be.names.filter((n) => n === "ADD_MEM_REG")).toHaveLength(12);
    expect(be.memory.size).toBe(12);
    await fe.setMemory(regions.slice(0, 10));
    expect(be.names.filter((n) => n === "REM_MEM_REG")).toHaveLength(2);
    expect(be.memory.size).toBe(10);
    expect(fe.memoryRegions).toHaveLength(10);
    const many = memfdRegions(33);
    await expect(fe.setMemory(many.regions)).rejects.toMatchObject({ kind: "InvalidParam", message: /33 regions exceed the back-end's 32 memory slots/ });
  });

  it("Xen regions: 40-byte regions once XEN_MMAP is negotiated, refused without it", async () => {
    const xen = FAKE_PROTOCOL_FEATURES | (1n << BigInt(VhostUserProtocolFeature.XEN_MMAP));
    const { fe, be } = pair({ protocolFeatures: xen & ~(1n << BigInt(VhostUserProtocolFeature.CONFIGURE_MEM_SLOTS)) });
    const { regions } = memfdRegions(2);
    await fe.negotiate({ requireProtocolFeatures: ["XEN_MMAP"] });
    await fe.setMemTable([
      { ...regions[0]!, xen: { flags: XenMmapFlags.FOREIGN, domid: 3 } },
      { ...regions[1]!, xen: { flags: XenMmapFlags.GRANT | XenMmapFlags.NO_ADVANCE_MAP_RUST_VMM, domid: 3 } },
    ]);
    const got = [...be.memory.values()].map((r) => r.xen);
    expect(got).toEqual([{ flags: 0x1, domid: 3 }, { flags: 0x102, domid: 3 }]);

    const plain = pair();
    await plain.fe.negotiate();
    await expect(plain.fe.setMemory([{ ...regions[0]!, xen: { flags: XenMmapFlags.FOREIGN, domid: 3 } }])).rejects.toMatchObject({ kind: "InactiveFeature", message: /XEN_MMAP/ });
    await expect(plain.fe.setMemTable([{ ...regions[0]!, xen: { flags: 0x9, domid: 3 } }])).rejects.toMatchObject({ kind: "InvalidParam", message: /NO_ADVANCE_MAP needs GRANT/ });
  });

  it("refuses overlapping regions", async () => {
    const { fe } = pair();
    await fe.negotiate();
    const { regions } = memfdRegions(2);
    await expect(fe.setMemory([regions[0]!, { ...regions[1]!, guestPhysAddr: 0x8000n }])).rejects.toMatchObject({ kind: "InvalidParam", message: /overlap in guest/ });
  });
});

describe("rings and config", () => {
  it("setupVring sends NUM, BASE, ADDR, KICK, CALL, ENABLE; GET_VRING_BASE returns the base", async () => {
    const { fe, be } = pair();
    await fe.negotiate();
    const kick = new EventFd();
    const call = new EventFd();
    cleanup.push(() => kick.close(), () => call.close());
    await fe.setupVring(1, { num: 128, base: 7, desc: 0x1000n, avail: 0x2000n, used: 0x3000n, kick: kick.fd, call: call.fd });
    expect(be.names.slice(-6)).toEqual(["SET_VRING_NUM", "SET_VRING_BASE", "SET_VRING_ADDR", "SET_VRING_KICK", "SET_VRING_CALL", "SET_VRING_ENABLE"]);
    expect(be.vrings.get(1)).toEqual({ num: 128, base: 7, kick: true, call: true, enabled: true });
    expect(await fe.getVringBase(1)).toBe(7);
    await fe.setVringCall(1, null);
    expect(be.log.at(-1)!.payload).toEqual({ kind: "u64", value: 0x101n });
    expect(be.log.at(-1)!.nfds).toBe(0);
  });

  it("GET_CONFIG returns the config bytes; a failed GET_CONFIG is BackendFailure", async () => {
    const config = Uint8Array.from({ length: 16 }, (_, i) => i);
    const { fe } = pair({ config });
    await fe.negotiate();
    expect(await fe.getConfig(4, 8)).toEqual(config.slice(4, 12));
    await expect(fe.getConfig(12, 8)).rejects.toMatchObject({ kind: "BackendFailure", message: /GET_CONFIG/ });
  });

  it("inflight area: GET_INFLIGHT_FD keeps the fd; mapInflight shows what the back-end records there", async () => {
    const { fe, be } = pair();
    await fe.negotiate();
    expect(() => fe.mapInflight()).toThrow(/no inflight area/);
    const area = await fe.getInflightFd(2, 128);
    expect(area.numQueues).toBe(2);
    expect(area.mmapSize).toBeGreaterThan(0n);
    expect(fe.inflightArea?.fd).toBe(area.fd);
    // the back-end's side of the same memfd: queue 1 at mmap_size / 2, libvhost-user's split layout
    const per = Number(area.mmapSize) / 2;
    const backendView = mmap(Number(area.mmapSize), { fd: be.kept.get("inflight")! });
    const v = new DataView(backendView);
    v.setUint16(per + 8, 1, true); // version
    v.setUint16(per + 10, 128, true); // desc_num
    v.setUint16(per + 14, 77, true); // used_idx
    for (const [head, counter] of [[5, 9n], [3, 8n], [40, 10n]] as const) {
      v.setUint8(per + 16 + head * 16, 1);
      v.setBigUint64(per + 16 + head * 16 + 8, counter, true);
    }
    using region = fe.mapInflight();
    expect(region.queue(1)).toEqual({ features: 0n, version: 1, desc_num: 128, last_batch_head: 0, used_idx: 77 });
    expect(region.usedIdx(0)).toBe(0);
    expect(region.usedIdx(1)).toBe(77);
    expect(region.desc(1, 5)).toEqual({ inflight: 1, next: 0, counter: 9n });
    expect(region.inflightHeads(1)).toEqual([3, 5, 40]); // the order the back-end took them
    expect(region.inflightHeads(0)).toEqual([]);
    expect(() => region.usedIdx(2)).toThrow(/queue 2/);
    munmap(backendView);
  });

  it("GET_INFLIGHT_FD describing an area too small for the rings is InvalidMessage, its fd closed", async () => {
    const { fe } = pair({
      behaviour: (m, api) => {
        if (m.payload.kind !== "inflight") return false;
        const fd = memfdCreate("small-inflight");
        ftruncate(fd, 64);
        api.reply({ kind: "inflight", mmapSize: 64n, mmapOffset: 0n, numQueues: 1, queueSize: 128 }, [fd]);
        close(fd);
        return true;
      },
    });
    await fe.negotiate();
    await expect(fe.getInflightFd(1, 128)).rejects.toMatchObject({ kind: "InvalidMessage", message: /64 bytes for 1 queue/ });
    expect(fe.inflightArea).toBeUndefined();
    expect(fe.connected).toBe(true);
  });
});

describe("backend-request channel", () => {
  it("CONFIG_CHANGE_MSG, VRING_CALL, VRING_ERR become events and are acked", async () => {
    const { fe, be } = pair();
    await fe.negotiate();
    const events: string[] = [];
    fe.on("configChange", () => events.push("config"));
    fe.on("vringCall", (i) => events.push(`call${i}`));
    fe.on("vringErr", (i) => events.push(`err${i}`));
    const r1 = await be.backendRequest(BackendReq.CONFIG_CHANGE_MSG, { kind: "none" });
    const r2 = await be.backendRequest(BackendReq.VRING_CALL, { kind: "vring-state", index: 1, num: 0 });
    const r3 = await be.backendRequest(BackendReq.VRING_ERR, { kind: "vring-state", index: 0, num: 0 });
    expect([r1, r2, r3].map((r) => r?.payload)).toEqual([0, 0, 0].map(() => ({ kind: "u64", value: 0n })));
    expect(events).toEqual(["config", "call1", "err0"]);
  });

  it("SHMEM_MAP without a handler is refused and its fd closed; VRING_HOST_NOTIFIER_MSG refused", async () => {
    const { fe, be } = pair();
    await fe.negotiate();
    const refused: string[] = [];
    fe.on("backendRequestRefused", (r) => refused.push(r));
    const memfd = memfdCreate("shm");
    cleanup.push(() => close(memfd));
    const r = await be.backendRequest(BackendReq.SHMEM_MAP, { kind: "shmem-map", shmid: 0, fdOffset: 0n, shmOffset: 0n, len: 4096n, flags: 1n }, [memfd]);
    expect(r?.payload).toEqual({ kind: "u64", value: 1n });
    const h = await be.backendRequest(BackendReq.VRING_HOST_NOTIFIER_MSG, { kind: "vring-area", u64: 0n, size: 4096n, offset: 0n }, [memfd]);
    expect(h?.payload).toEqual({ kind: "u64", value: 1n });
    expect(refused).toEqual(["BACKEND_SHMEM_MAP (9)", "BACKEND_VRING_HOST_NOTIFIER_MSG (3)"]);
  });

  it("SHMEM_MAP with a handler that accepts; shared objects add/lookup/remove", async () => {
    const taken: number[] = [];
    const lookupFd = memfdCreate("dmabuf");
    cleanup.push(() => close(lookupFd), () => taken.forEach((fd) => close(fd)));
    const { fe, be } = pair({}, {
      backendHandlers: {
        shmemMap: (_req, fd) => (taken.push(fd), true),
        sharedObjectLookup: (uuid) => (uuid[0] === 1 ? lookupFd : null),
      },
    });
    await fe.negotiate();
    const memfd = memfdCreate("shm");
    cleanup.push(() => close(memfd));
    const r = await be.backendRequest(BackendReq.SHMEM_MAP, { kind: "shmem-map", shmid: 0, fdOffset: 0n, shmOffset: 0x1000n, len: 4096n, flags: 1n }, [memfd]);
    expect(r?.payload).toEqual({ kind: "u64", value: 0n });
    expect(taken).toHaveLength(1);
    const uuid = new Uint8Array(16).fill(1);
    expect((await be.backendRequest(BackendReq.SHARED_OBJECT_ADD, { kind: "shared-object", uuid }))?.payload).toEqual({ kind: "u64", value: 0n });
    expect(fe.backendChannel!.sharedObjects.size).toBe(1);
    const look = await be.backendRequest(BackendReq.SHARED_OBJECT_LOOKUP, { kind: "shared-object", uuid }, [], false);
    expect(look?.payload).toEqual({ kind: "u64", value: 0n });
    expect(look?.fds).toHaveLength(1);
    look!.fds.forEach((fd) => close(fd));
    const miss = await be.backendRequest(BackendReq.SHARED_OBJECT_LOOKUP, { kind: "shared-object", uuid: new Uint8Array(16) }, [], false);
    expect(miss?.payload).toEqual({ kind: "u64", value: 1n });
    expect(miss?.fds).toHaveLength(0);
    expect((await be.backendRequest(BackendReq.SHARED_OBJECT_REMOVE, { kind: "shared-object", uuid }))?.payload).toEqual({ kind: "u64", value: 0n });
    expect((await be.backendRequest(BackendReq.SHARED_OBJECT_REMOVE, { kind: "shared-object", uuid }))?.payload).toEqual({ kind: "u64", value: 1n });
  });
});

describe("connection modes and reconnect", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "vu-master-"));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  });

  it("client mode retries until the back-end listens", async () => {
    const path = join(dir, "late.sock");
    const { UnixListener } = await import("@xen-vhost/vmm-sys-util");
    let listener: InstanceType<typeof UnixListener> | undefined;
    setTimeout(() => (listener = new UnixListener(path)), 60);
    const fePromise = Frontend.connect(path, { retry: { attempts: 40, initialDelayMs: 5, maxDelayMs: 20 } });
    const fe = await fePromise;
    cleanup.push(() => fe.close(), () => listener?.close());
    expect(fe.connected).toBe(true);
    await expect(Frontend.connect(join(dir, "never.sock"), { retry: { attempts: 3, initialDelayMs: 1 } })).rejects.toMatchObject({ kind: "SocketBroken", message: /ENOENT.*|attempt 3\/3/ });
  });

  it("server mode: a back-end crash is a disconnect event; the next back-end gets the replayed state", async () => {
    const path = join(dir, "fe.sock");
    const fePromise = Frontend.listen(path, { reconnect: true, timeoutMs: 1000, acceptTimeoutMs: 2000 });
    const be1 = new FakeBackend(UnixStream.connect(path));
    const fe = await fePromise;
    cleanup.push(() => fe.close(), () => be1.close());
    await fe.negotiate();
    const { regions } = memfdRegions(2);
    await fe.setMemory(regions);
    const kick = new EventFd();
    const call = new EventFd();
    cleanup.push(() => kick.close(), () => call.close());
    await fe.setupVring(0, { num: 64, desc: 0x10000n, avail: 0x11000n, used: 0x12000n, kick: kick.fd, call: call.fd });
    const area = await fe.getInflightFd(1, 64);
    // the back-end had used 5 descriptors of ring 0 when it died: used_idx in the inflight area
    const map = mmap(Number(area.mmapSize), { fd: area.fd });
    new Uint16Array(map)[7] = 5;
    munmap(map);
    await fe.driverOk();

    const disconnected = new Promise<VhostUserError>((r) => fe.once("disconnect", r));
    const reconnected = new Promise<void>((r) => fe.once("reconnect", r));
    be1.close(); // crash
    expect((await disconnected).kind).toBe("Disconnected");
    // a request made while the front-end reconnects waits for the replay instead of interleaving with it
    const during = fe.getQueueNum();
    const be2 = new FakeBackend(UnixStream.connect(path));
    cleanup.push(() => be2.close());
    await reconnected;
    expect(await during).toBe(2);
    expect(be2.names.at(-1)).toBe("GET_QUEUE_NUM");
    be2.log.pop();
    expect(be2.names).toEqual([
      "GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "SET_OWNER", "SET_BACKEND_REQ_FD", "SET_FEATURES",
      "GET_MAX_MEM_SLOTS", "ADD_MEM_REG", "ADD_MEM_REG", "SET_INFLIGHT_FD", "SET_VRING_NUM", "SET_VRING_BASE", "SET_VRING_ADDR",
      "SET_VRING_KICK", "SET_VRING_CALL", "SET_VRING_ENABLE", "SET_STATUS",
    ]);
    expect(be2.vrings.get(0)).toEqual({ num: 64, base: 5, kick: true, call: true, enabled: true });
    expect(be2.memory.size).toBe(2);
    expect(be2.status).toBe(0x0f);
    expect(fe.connected).toBe(true);
    fe.close();
    expect(existsSync(path)).toBe(false); // listen() created the socket file, close() removes it
  });

  it("a back-end that accepts and then dies during the replay: the front-end dials again", async () => {
    const path = join(dir, "flaky.sock");
    const fePromise = Frontend.listen(path, { reconnect: { attempts: 5 }, timeoutMs: 1000, acceptTimeoutMs: 2000 });
    const be1 = new FakeBackend(UnixStream.connect(path));
    const fe = await fePromise;
    cleanup.push(() => fe.close(), () => be1.close());
    await fe.negotiate();
    await fe.setMemory(memfdRegions(1).regions);
    const warnings: string[] = [];
    const reconnected = new Promise<void>((r) => fe.once("reconnect", r));
    be1.close();
    await tick(20);
    // the next back-end dies at its first request of the replay
    const flaky = new FakeBackend(UnixStream.connect(path), { behaviour: (_m, api) => (api.close(), true) });
    cleanup.push(() => flaky.close());
    fe.on("disconnect", (e) => warnings.push(e.kind));
    await tick(50);
    const be3 = new FakeBackend(UnixStream.connect(path));
    cleanup.push(() => be3.close());
    await reconnected;
    expect(flaky.names).toEqual(["GET_FEATURES"]);
    // the full state reached the third back-end, protocol features and memory included
    expect(be3.names).toEqual(["GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "SET_OWNER", "SET_BACKEND_REQ_FD", "SET_FEATURES",
      "GET_MAX_MEM_SLOTS", "ADD_MEM_REG"]);
    expect(be3.protocolFeatures).toBe(FAKE_PROTOCOL_FEATURES);
    expect(fe.connected).toBe(true);
    expect(warnings).toEqual([]); // replay failures are retried inside the reconnect, not reported as new disconnects
  });

  it("client mode: planned reconnect saves ring bases with GET_VRING_BASE and replays them", async () => {
    const path = join(dir, "be.sock");
    const { UnixListener } = await import("@xen-vhost/vmm-sys-util");
    const listener = new UnixListener(path);
    const backends: FakeBackend[] = [];
    cleanup.push(() => listener.close(), () => backends.forEach((b) => b.close()));
    const acceptInto = async () => {
      for (let i = 0; i < 200; i++) {
        listener.setNonblocking(true);
        const s = listener.accept();
        if (s) {
          const be = new FakeBackend(s);
          backends.push(be);
          return be;
        }
        await tick(2);
      }
      throw new Error("no connection");
    };
    const feP = Frontend.connect(path, { timeoutMs: 1000 });
    const be1 = await acceptInto();
    const fe = await feP;
    cleanup.push(() => fe.close());
    await fe.negotiate();
    const { regions } = memfdRegions(1);
    await fe.setMemory(regions);
    const kick = new EventFd();
    cleanup.push(() => kick.close());
    await fe.setupVring(0, { num: 32, desc: 0x1000n, avail: 0x2000n, used: 0x3000n, kick: kick.fd, call: null });
    be1.vrings.get(0)!.base = 9; // the back-end consumed 9 requests
    const again = fe.reconnect();
    const be2 = await acceptInto();
    await again;
    expect(be1.names.at(-1)).toBe("GET_VRING_BASE");
    expect(be2.vrings.get(0)?.base).toBe(9);
    expect(be2.vrings.get(0)?.call).toBe(false);
  });
});

describe("timeouts and serialization", () => {
  it("a back-end that never answers: Timeout, the connection is closed, the next request is Disconnected", async () => {
    const { fe } = pair({ behaviour: (m) => m.request === 1 }, { timeoutMs: 50 });
    const closed = new Promise<VhostUserError | undefined>((r) => fe.once("close", r));
    await expect(fe.getFeatures()).rejects.toMatchObject({ kind: "Timeout", message: /no reply to GET_FEATURES within 50 ms/ });
    expect((await closed)?.kind).toBe("Timeout");
    await expect(fe.getFeatures()).rejects.toMatchObject({ kind: "Disconnected" });
  });

  it("memory-table requests get their own, longer timeout (a back-end maps the regions before it answers)", async () => {
    // ADD_MEM_REG answered after 150 ms: past timeoutMs (50), within memoryTimeoutMs (1000).
    const slow: FakeBackendBehaviour = (m, api) => {
      if (m.request !== 37) return false;
      setTimeout(() => api.reply({ kind: "u64", value: 0n }), 150);
      return true;
    };
    const { fe, be } = pair({ behaviour: slow }, { timeoutMs: 50, memoryTimeoutMs: 1000 });
    await fe.negotiate();
    const { regions } = memfdRegions(1);
    await fe.setMemory(regions);
    expect(be.names).toContain("ADD_MEM_REG");
    expect(fe.connected).toBe(true);
    // The short timeout still holds for everything else, and the memory one is a limit too.
    const { fe: fe2 } = pair({ behaviour: (m) => m.request === 37 }, { timeoutMs: 50, memoryTimeoutMs: 120 });
    await fe2.negotiate();
    const t0 = Date.now();
    await expect(fe2.setMemory(memfdRegions(1).regions)).rejects.toMatchObject({ kind: "Timeout", message: /no reply to ADD_MEM_REG within 120 ms/ });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
  });

  it("concurrent calls are sent one at a time, in order", async () => {
    const { fe, be } = pair();
    await fe.negotiate();
    let outstanding = 0;
    let maxOutstanding = 0;
    be.on("message", () => {
      outstanding++;
      maxOutstanding = Math.max(maxOutstanding, outstanding);
      setImmediate(() => outstanding--);
    });
    const results = await Promise.all([fe.getQueueNum(), fe.getVringBase(0), fe.getStatus(), fe.getQueueNum()]);
    expect(results).toEqual([2, 0, 0, 2]);
    expect(be.names.slice(-4)).toEqual(["GET_QUEUE_NUM", "GET_VRING_BASE", "GET_STATUS", "GET_QUEUE_NUM"]);
    expect(maxOutstanding).toBe(1);
  });
});
