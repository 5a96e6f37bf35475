// The framed connection over a real socketpair: partial reads, fds with the header, write queueing on a
// full socket, and every way a peer can break the framing.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { test, fc } from "@fast-check/vitest";
import { EventFd, UnixStream, close } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { Connection } from "./connection.js";
import { encodeMessage, type Expectation, type VhostUserMessage } from "./codec.js";
import { VhostUserError } from "./error.js";

const asBackend = (): Expectation => ({ type: "request", channel: "frontend" });
const tick = () => new Promise<void>((r) => setTimeout(r, 5));

let leaks: ReturnType<typeof fdLeakCheck>;
let conn: Connection | undefined;
let peer: UnixStream | undefined;
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  conn?.close();
  peer?.close();
  conn = undefined;
  peer = undefined;
  expect(leaks.check()).toEqual([]);
});

function setup(): { conn: Connection; peer: UnixStream; got: VhostUserMessage[]; closed: Promise<VhostUserError | undefined> } {
  const [a, b] = UnixStream.pair();
  conn = new Connection(a, { expect: asBackend, name: "test" });
  peer = b;
  const got: VhostUserMessage[] = [];
  conn.on("message", (m) => got.push(m));
  const closed = new Promise<VhostUserError | undefined>((r) => conn!.once("close", r));
  return { conn, peer, got, closed };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !cond(); i++) await tick();
  expect(cond()).toBe(true);
}

describe("Connection", () => {
  it("reassembles a message sent one byte at a time, fds attached to the header", async () => {
    const { peer, got } = setup();
    const efd = new EventFd();
    const bytes = encodeMessage({ request: 13, flags: 1, payload: { kind: "u64", value: 0n } });
    peer.send(bytes.subarray(0, 1), [efd.fd]);
    for (let i = 1; i < bytes.length; i++) {
      await tick();
      peer.send(bytes.subarray(i, i + 1));
    }
    await until(() => got.length === 1);
    expect(got[0]!.payload).toEqual({ kind: "u64", value: 0n });
    expect(got[0]!.fds).toHaveLength(1);
    // the received fd is the same eventfd
    efd.write(3);
    const received = EventFd.fromFd(got[0]!.fds[0]!);
    expect(received.read()).toBe(3n);
    received.close();
    efd.close();
  });

  it("splits two messages that arrive in one read", async () => {
    const { peer, got } = setup();
    const a = encodeMessage({ request: 3, flags: 1, payload: { kind: "none" } });
    const b = encodeMessage({ request: 8, flags: 1, payload: { kind: "vring-state", index: 0, num: 256 } });
    const both = new Uint8Array(a.length + b.length);
    both.set(a);
    both.set(b, a.length);
    peer.send(both);
    await until(() => got.length === 2);
    expect(got.map((m) => m.request)).toEqual([3, 8]);
  });

  it("queues writes when the socket is full and flushes them in order, with fds", async () => {
    const { conn, peer } = setup();
    const efd = new EventFd();
    // ~1 MiB of SET_CONFIG messages overflows any socket buffer
    const msgs = 4000;
    for (let i = 0; i < msgs; i++)
      conn.send({ request: 25, flags: 1, payload: { kind: "config", offset: i, flags: 0, data: new Uint8Array(256) } }, i === msgs - 1 ? [efd.fd] : []);
    efd.close(); // the queued copy is a dup: closing ours must not matter
    peer.setNonblocking(true);
    const buf = new Uint8Array(65536);
    let count = 0;
    let lastFds: number[] = [];
    let pending = new Uint8Array(0);
    for (let spins = 0; count < msgs && spins < 20000; spins++) {
      const r = peer.recv(buf, 4);
      if (r === null) {
        await tick();
        continue;
      }
      if (r.fds.length) lastFds = r.fds;
      const joined = new Uint8Array(pending.length + r.bytes);
      joined.set(pending);
      joined.set(buf.subarray(0, r.bytes), pending.length);
      let off = 0;
      while (joined.length - off >= 280) {
        const v = new DataView(joined.buffer, off);
        expect(v.getUint32(12, true)).toBe(count);
        count++;
        off += 280;
      }
      pending = joined.slice(off);
    }
    expect(count).toBe(msgs);
    expect(lastFds).toHaveLength(1);
    for (const fd of lastFds) close(fd);
  });

  it.each([
    ["peer closes between messages", [] as number[], "Disconnected"],
    ["peer closes mid-header", [1, 0, 0], "PartialMessage"],
    ["peer closes mid-payload", [2, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 1, 2], "PartialMessage"],
  ] as const)("%s → %s", async (_n, bytes, kind) => {
    const { peer, closed } = setup();
    if (bytes.length) peer.send(Uint8Array.from(bytes));
    await tick();
    peer.close();
    const cause = await closed;
    expect(cause?.kind).toBe(kind);
  });

  it("refuses fds that arrive with payload bytes, closing them", async () => {
    const { peer, closed } = setup();
    const efd = new EventFd();
    const bytes = encodeMessage({ request: 2, flags: 1, payload: { kind: "u64", value: 1n } });
    peer.send(bytes.subarray(0, 12));
    await tick();
    peer.send(bytes.subarray(12), [efd.fd]);
    const cause = await closed;
    expect(cause?.kind).toBe("IncorrectFds");
    expect(cause?.message).toMatch(/fds arrived with payload bytes/);
    efd.close();
  });

  it("refuses more fds than allowed (MSG_CTRUNC), closing the ones that arrived", async () => {
    const [a, b] = UnixStream.pair();
    conn = new Connection(a, { expect: asBackend, codec: { maxFds: 2 } });
    peer = b;
    const closed = new Promise<VhostUserError | undefined>((r) => conn!.once("close", r));
    const efds = Array.from({ length: 6 }, () => new EventFd());
    peer.send(encodeMessage({ request: 3, flags: 1, payload: { kind: "none" } }), efds.map((e) => e.fd));
    expect((await closed)?.kind).toBe("IncorrectFds");
    for (const e of efds) e.close();
  });

  it("refuses an oversized header before reading the payload", async () => {
    const { peer, closed } = setup();
    peer.send(Uint8Array.from([2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1]));
    const cause = await closed;
    expect(cause?.kind).toBe("OversizedMsg");
  });

  it("an expectation that refuses the message closes the connection with it", async () => {
    const [a, b] = UnixStream.pair();
    conn = new Connection(a, { expect: () => new VhostUserError("InvalidMessage", "unsolicited") });
    peer = b;
    const closed = new Promise<VhostUserError | undefined>((r) => conn!.once("close", r));
    const efd = new EventFd();
    peer.send(encodeMessage({ request: 7, flags: 1, payload: { kind: "none" } }), [efd.fd]);
    expect((await closed)?.message).toBe("unsolicited");
    efd.close();
  });

  it("survives a throwing message listener", async () => {
    const { conn, peer, got } = setup();
    conn.on("message", () => {
      throw new Error("listener bug");
    });
    peer.send(encodeMessage({ request: 3, flags: 1, payload: { kind: "none" } }));
    peer.send(encodeMessage({ request: 3, flags: 1, payload: { kind: "none" } }));
    await until(() => got.length === 2);
    expect(conn.closed).toBe(false);
  });

  it("close is idempotent and send after close is Disconnected", () => {
    const { conn } = setup();
    let closes = 0;
    conn.on("close", () => closes++);
    conn.close();
    conn.close();
    expect(closes).toBe(1);
    expect(() => conn.send({ request: 3, flags: 1, payload: { kind: "none" } })).toThrow(expect.objectContaining({ kind: "Disconnected" }));
  });

  it("a dead peer on send is SocketBroken with shouldReconnect", () => {
    const { conn, peer } = setup();
    peer.close();
    let err: unknown;
    try {
      conn.send({ request: 3, flags: 1, payload: { kind: "none" } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(VhostUserError);
    expect((err as VhostUserError).kind).toBe("SocketBroken");
    expect((err as VhostUserError).shouldReconnect).toBe(true);
  });
});

// Stream-level fuzzing: random chunks (some with fds) into a live connection. Whatever happens, the
// connection either delivers validated messages or closes with a VhostUserError, and nothing leaks.
test.prop([fc.array(fc.record({ bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }), fds: fc.nat(2) }), { minLength: 1, maxLength: 8 })], { numRuns: 300 })(
  "random byte streams end in messages or a typed close, never a leak",
  async (chunks) => {
    const check = fdLeakCheck();
    const [a, b] = UnixStream.pair();
    const c = new Connection(a, { expect: asBackend });
    let cause: unknown = null;
    const msgs: VhostUserMessage[] = [];
    c.on("message", (m) => msgs.push(m));
    c.on("close", (e) => (cause = e));
    const efd = new EventFd();
    for (const ch of chunks) {
      try {
        b.send(ch.bytes, Array.from({ length: ch.fds }, () => efd.fd));
      } catch {
        break; // the connection already closed our peer's other end
      }
    }
    b.close();
    efd.close();
    for (let i = 0; i < 100 && cause === null; i++) await new Promise((r) => setTimeout(r, 1));
    expect(cause).toBeInstanceOf(VhostUserError);
    for (const m of msgs) for (const fd of m.fds) close(fd);
    c.close();
    expect(check.check()).toEqual([]);
  },
  120_000,
);
