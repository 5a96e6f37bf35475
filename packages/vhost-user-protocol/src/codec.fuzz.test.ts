// Property-based fuzzing of the decoder: 60k random byte strings and 60k mutated valid messages, each
// with 0..3 real fds attached. The decoder may accept or refuse, but it must only ever throw
// VhostUserError, and it must close every fd it refuses (checked with fdLeakCheck at the end).
import { afterAll, beforeAll, expect } from "vitest";
import { test, fc } from "@fast-check/vitest";
import { EventFd, close, dup } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { decodeBuffer, encodeMessage, fdCountFor, type Expectation, type Payload } from "./codec.js";
import { VhostUserError } from "./error.js";
import { backendRequests, frontendRequests, type MessageInfo, type PayloadKind } from "./message.js";

/** Generous: 130k cases take ~10 s on a loaded 2-core machine; this is a correctness test, not a timing one. */
const TIMEOUT = 300_000;

let base: EventFd;
let leaks: ReturnType<typeof fdLeakCheck>;
let decoded = 0;
let refused = 0;
beforeAll(() => {
  leaks = fdLeakCheck();
  base = new EventFd();
});
afterAll(() => {
  base.close();
  expect(leaks.check()).toEqual([]);
  // Both outcomes must have happened many times, or the fuzzer explored nothing.
  expect(decoded).toBeGreaterThan(1000);
  expect(refused).toBeGreaterThan(1000);
});

const u64 = fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn });
const u32 = fc.nat({ max: 0xffffffff });
const u16 = fc.nat({ max: 0xffff });
const u8 = fc.nat({ max: 0xff });

const regionArb = (xen: boolean) =>
  fc.record({
    guestPhysAddr: u64, memorySize: u64, userAddr: u64, mmapOffset: u64,
    ...(xen ? { xen: fc.record({ flags: fc.constantFrom(0, 1, 2, 0x102), domid: u32 }) } : {}),
  });

function payloadArb(kind: PayloadKind, xen: boolean): fc.Arbitrary<Payload> {
  switch (kind) {
    case "none": return fc.constant({ kind });
    case "u64": return u64.map((value) => ({ kind, value }));
    case "vring-state": return fc.record({ index: u32, num: u32 }).map((v) => ({ kind, ...v }));
    case "vring-addr": return fc.record({ index: u32, flags: u32, desc: u64, used: u64, avail: u64, log: u64 }).map((v) => ({ kind, ...v }));
    case "memory": return fc.array(regionArb(xen), { minLength: 1, maxLength: 8 }).map((regions) => ({ kind, regions }));
    case "single-region": return regionArb(xen).map((region) => ({ kind, region }));
    case "log": return fc.record({ mmapSize: u64, mmapOffset: u64 }).map((v) => ({ kind, ...v }));
    case "iotlb": return fc.record({ iova: u64, size: u64, uaddr: u64, perm: u8, type: u8 }).map((v) => ({ kind, ...v }));
    case "config": return fc.record({ offset: u32, flags: u32, data: fc.uint8Array({ maxLength: 256 }) }).map((v) => ({ kind, ...v }));
    case "vring-area": return fc.record({ u64, size: u64, offset: u64 }).map((v) => ({ kind, ...v }));
    case "inflight": return fc.record({ mmapSize: u64, mmapOffset: u64, numQueues: u16, queueSize: u16 }).map((v) => ({ kind, ...v }));
    case "shared-object": return fc.uint8Array({ minLength: 16, maxLength: 16 }).map((uuid) => ({ kind, uuid }));
    case "device-state": return fc.record({ direction: fc.nat(2), phase: fc.nat(1) }).map((v) => ({ kind, ...v }));
    case "shmem-map": return fc.record({ shmid: u8, fdOffset: u64, shmOffset: u64, len: u64, flags: u64 }).map((v) => ({ kind, ...v }));
    case "shmem-config": return fc.array(u64, { maxLength: 256 }).map((memorySizes) => ({ kind, memorySizes }));
    case "crypto-session": return fc.uint8Array({ minLength: 8, maxLength: 600 }).map((data) => ({ kind, data }));
  }
}

const entryArb = fc.constantFrom(
  ...frontendRequests.map((e) => ({ channel: "frontend" as const, e })),
  ...backendRequests.map((e) => ({ channel: "backend" as const, e })),
);

interface Case {
  channel: "frontend" | "backend";
  e: MessageInfo;
  xen: boolean;
  payload: Payload;
  reply: boolean;
}

const validArb: fc.Arbitrary<Case> = fc
  .record({ pick: entryArb, xen: fc.boolean(), reply: fc.boolean() })
  .chain(({ pick, xen, reply }) => {
    const kinds: readonly PayloadKind[] = !reply ? [pick.e.payload] : pick.e.reply.when === "ack-only" ? ["u64"] : pick.e.reply.payloads;
    return fc.constantFrom(...kinds).chain((k) => payloadArb(k, xen)).map((payload) => ({ ...pick, xen, payload, reply }));
  });

function expectationFor(c: Case): Expectation {
  if (!c.reply) return { type: "request", channel: c.channel };
  const r = c.e.reply;
  return r.when === "ack-only"
    ? { type: "reply", channel: c.channel, request: c.e.id, payloads: ["u64"], fds: { kind: "none" } }
    : { type: "reply", channel: c.channel, request: c.e.id, payloads: r.payloads, fds: r.fds };
}

const mutationArb = fc.oneof(
  fc.record({ op: fc.constant("flip" as const), at: fc.nat(), value: u8 }),
  fc.record({ op: fc.constant("truncate" as const), at: fc.nat() }),
  fc.record({ op: fc.constant("append" as const), extra: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({ op: fc.constant("size" as const), value: fc.oneof(u32, fc.nat(64)) }),
  fc.record({ op: fc.constant("request" as const), value: fc.oneof(u32, fc.nat(50)) }),
  fc.record({ op: fc.constant("flags" as const), value: fc.oneof(u32, fc.constantFrom(0, 1, 4, 5, 8, 9, 0xd)) }),
);

function mutate(buf: Uint8Array, m: { op: string; at?: number; value?: number; extra?: Uint8Array }): Uint8Array {
  const out = buf.slice();
  const view = new DataView(out.buffer);
  switch (m.op) {
    case "flip":
      if (out.length) out[m.at! % out.length] = m.value!;
      return out;
    case "truncate":
      return out.subarray(0, m.at! % (out.length + 1));
    case "append": {
      const a = new Uint8Array(out.length + m.extra!.length);
      a.set(out);
      a.set(m.extra!, out.length);
      return a;
    }
    case "size":
      if (out.length >= 12) view.setUint32(8, m.value!, true);
      return out;
    case "request":
      if (out.length >= 12) view.setUint32(0, m.value!, true);
      return out;
    default:
      if (out.length >= 12) view.setUint32(4, m.value!, true);
      return out;
  }
}

function attempt(bytes: Uint8Array, nfds: number, expectation: Expectation, xen: boolean): boolean {
  const fds = Array.from({ length: nfds }, () => dup(base.fd));
  try {
    const msg = decodeBuffer(bytes, fds, expectation, { xenMmap: xen });
    for (const fd of msg.fds) close(fd);
    decoded++;
    return true;
  } catch (err) {
    if (!(err instanceof VhostUserError)) throw err;
    refused++;
    return false;
  }
}

const expectationArb: fc.Arbitrary<Expectation> = fc.oneof(
  fc.constantFrom<Expectation>({ type: "request", channel: "frontend" }, { type: "request", channel: "backend" }),
  fc.record({ pick: entryArb, reply: fc.constant(true), xen: fc.constant(false), payload: fc.constant<Payload>({ kind: "none" }) })
    .map((c) => expectationFor({ channel: c.pick.channel, e: c.pick.e, reply: true, xen: false, payload: c.payload })),
);

test.prop([fc.uint8Array({ maxLength: 400 }), fc.nat(3), expectationArb, fc.boolean()], { numRuns: 60_000 })(
  "random bytes decode or fail with VhostUserError, fds never leak",
  (bytes, nfds, expectation, xen) => {
    attempt(bytes, nfds, expectation, xen);
  },
  TIMEOUT,
);

test.prop([fc.uint8Array({ minLength: 12, maxLength: 12 }).map((h) => h), fc.nat(3), expectationArb], { numRuns: 5_000 })(
  "random headers with a version-1 flag mostly reach payload checks",
  (h, nfds, expectation) => {
    const v = new DataView(h.buffer);
    v.setUint32(4, (v.getUint32(4, true) & 0xc) | 1, true);
    v.setUint32(8, v.getUint32(8, true) % 64, true);
    const body = new Uint8Array(v.getUint32(8, true));
    const buf = new Uint8Array(12 + body.length);
    buf.set(h);
    attempt(buf, nfds, expectation, false);
  },
  TIMEOUT,
);

test.prop([validArb], { numRuns: 5_000 })("valid messages round-trip with the fds their rule asks for", (c) => {
  const flags = c.reply ? 5 : 1;
  let bytes: Uint8Array;
  try {
    bytes = encodeMessage({ request: c.e.id, flags, payload: c.payload }, { xenMmap: c.xen });
  } catch (err) {
    // e.g. a region with xen flags but XEN_MMAP off: the encoder refuses with the typed error
    expect(err).toBeInstanceOf(VhostUserError);
    return;
  }
  const rule = c.reply ? (c.e.reply.when === "ack-only" ? { kind: "none" as const } : c.e.reply.fds) : c.e.fds;
  const { min } = fdCountFor(rule, c.payload);
  const ok = attempt(bytes, min, expectationFor(c), c.xen);
  // Semantic checks (reserved bits of kick/call u64, device-state phase) may refuse random values.
  if (!ok) expect(["SET_VRING_KICK", "SET_VRING_CALL", "SET_VRING_ERR", "VRING_HOST_NOTIFIER_MSG", "SET_DEVICE_STATE_FD"]).toContain(c.e.name);
}, TIMEOUT);

test.prop([validArb, fc.array(mutationArb, { minLength: 1, maxLength: 3 }), fc.nat(3)], { numRuns: 60_000 })(
  "mutated valid messages decode or fail with VhostUserError, fds never leak",
  (c, mutations, nfds) => {
    let bytes: Uint8Array;
    try {
      bytes = encodeMessage({ request: c.e.id, flags: c.reply ? 5 : 1, payload: c.payload }, { xenMmap: c.xen });
    } catch {
      return;
    }
    for (const m of mutations) bytes = mutate(bytes, m);
    attempt(bytes, nfds, expectationFor(c), c.xen);
  },
  TIMEOUT,
);
