// Random and truncated front-end traffic against a live daemon: every bad connection must end without
// leaking an fd or a mapping, and the daemon must serve a well-behaved front-end afterwards.
import { afterEach, beforeEach, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventFd, UnixStream, close as closeFd, ftruncate, memfdCreate } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { encodeHeader, encodeMessage, FrontendReq } from "@xen-vhost/vhost-user-protocol";
import { VhostUserDaemon } from "../src/index.js";
import { TestFrontend, collectUsed, post } from "../src/testing/index.js";
import { EchoDevice } from "./echo-device.js";

let dir: string;
let leaks: ReturnType<typeof fdLeakCheck>;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "vub-h-"));
  leaks = fdLeakCheck();
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** xorshift32: reproducible "random" traffic. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

it("300 hostile connections (random ids, sizes, flags, payloads, fds, truncation), then a normal session; no fd leaks", async () => {
  const path = join(dir, "h.sock");
  const device = new EchoDevice();
  const logged: string[] = [];
  const logger = { debug() {}, info() {}, warn: (m: string, f?: Record<string, unknown>) => logged.push(`${m} ${JSON.stringify(f)}`), error: (m: string, f?: Record<string, unknown>) => logged.push(`ERROR ${m} ${JSON.stringify(f)}`) };
  const daemon = new VhostUserDaemon(device, { socket: path, logger }).start();
  const r = rng(0xc0ffee);
  let disconnects = 0;
  daemon.on("disconnected", () => disconnects++);
  try {
    for (let i = 0; i < 300; i++) {
      const s = UnixStream.connect(path);
      const fds: number[] = [];
      const nfds = r() < 0.3 ? 1 + Math.floor(r() * 3) : 0;
      for (let k = 0; k < nfds; k++) {
        const fd = r() < 0.5 ? memfdCreate("h") : new EventFd().intoFd();
        if (r() < 0.5) {
          try {
            ftruncate(fd, 0x10000);
          } catch {
            // an eventfd cannot be truncated: fine, it is junk either way
          }
        }
        fds.push(fd);
      }
      const kind = r();
      let bytes: Uint8Array;
      if (kind < 0.4) {
        // a well-formed header with random id, flags and a random payload of the announced size
        const size = Math.floor(r() * 96);
        bytes = new Uint8Array(12 + size);
        bytes.set(encodeHeader({ request: Math.floor(r() * 50), flags: r() < 0.8 ? 1 | (r() < 0.3 ? 8 : 0) : Math.floor(r() * 16), size }));
        for (let k = 12; k < bytes.length; k++) bytes[k] = Math.floor(r() * 256);
      } else if (kind < 0.7) {
        // a real request, possibly cut short
        const msgs = [
          encodeMessage({ request: FrontendReq.SET_VRING_KICK, flags: 1, payload: { kind: "u64", value: BigInt(Math.floor(r() * 4)) } }),
          encodeMessage({ request: FrontendReq.SET_MEM_TABLE, flags: 1, payload: { kind: "memory", regions: [{ guestPhysAddr: 0n, memorySize: 0x10000n, userAddr: 0x1000n, mmapOffset: 0n }] } }),
          encodeMessage({ request: FrontendReq.SET_VRING_NUM, flags: 1, payload: { kind: "vring-state", index: Math.floor(r() * 300), num: Math.floor(r() * 70000) } }),
          encodeMessage({ request: FrontendReq.GET_CONFIG, flags: 1, payload: { kind: "config", offset: Math.floor(r() * 16), flags: 0, data: new Uint8Array(Math.floor(r() * 16)) } }),
        ];
        const m = msgs[Math.floor(r() * msgs.length)]!;
        bytes = r() < 0.5 ? m.subarray(0, Math.floor(r() * m.length)) : m;
      } else {
        bytes = new Uint8Array(1 + Math.floor(r() * 40));
        for (let k = 0; k < bytes.length; k++) bytes[k] = Math.floor(r() * 256);
      }
      try {
        if (bytes.length > 0) s.send(bytes, fds);
      } catch {
        // the daemon may have closed already
      }
      for (const fd of fds) closeFd(fd);
      s.close();
      // One front-end at a time: wait for the daemon to drop this one (a blocking connect() would stall
      // the event loop once the listen backlog is full).
      for (let k = 0; k < 400 && disconnects <= i; k++) await new Promise((res) => setTimeout(res, 1));
    }
    expect(daemon.connections).toBe(300);
    expect(disconnects).toBe(300);

    logged.length = 0;
    // a well-behaved front-end still gets full service
    const mem = GuestMemory.fromRanges([[0, 0x10_0000]]);
    const fe = TestFrontend.connect(path);
    try {
      await fe.negotiate();
      await fe.setMemTable(mem);
      const ring = await fe.setupRing(mem, 0, 0x1000n, 8);
      mem.write(0x8000, Uint8Array.of(1, 2, 3));
      post(ring, { readable: [{ addr: 0x8000, len: 3 }], writable: [{ addr: 0x9000, len: 3 }] });
      expect((await collectUsed(ring, 1))[0]!.len).toBe(3);
      expect(logged.filter((l) => l.startsWith("ERROR"))).toEqual([]);
      expect([...mem.read(0x9000, 3)]).toEqual([3, 2, 1]);
      ring.kick.close();
      ring.call.close();
    } finally {
      fe.close();
      mem.close();
    }
  } finally {
    daemon.close();
  }
  await new Promise((res) => setTimeout(res, 20));
  expect(leaks.check()).toEqual([]);
}, 60_000);
