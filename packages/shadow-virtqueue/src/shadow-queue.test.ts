import { describe, expect, it } from "vitest";
import { fc, test as fcTest } from "@fast-check/vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { AVAIL_IDX, AVAIL_RING, VIRTQ_DESC_F_NEXT, VirtqDesc, type DescriptorChain } from "@xen-vhost/virtio-queue";
import { relayHarness, type Harness } from "./testing/index.js";
import { ShadowQueueError } from "./error.js";
import { failBlk } from "./fail.js";

const enc = (s: string) => new TextEncoder().encode(s);

/** The backend: pops every available shadow chain. */
function popAll(h: Harness): DescriptorChain[] {
  const out: DescriptorChain[] = [];
  for (let c = h.device.pop(); c; c = h.device.pop()) out.push(c);
  return out;
}

/** Echo device: writes the readable bytes reversed into the writable buffers, used.len = bytes written. */
function echo(h: Harness, c: DescriptorChain): void {
  const data = c.readAll().reverse();
  h.device.addUsed(c.head, c.writeAll(data));
}

describe("ShadowQueue", () => {
  it("relays a chain: copies in, the device answers, copies back used.len bytes, interrupts", () => {
    const leaks = fdLeakCheck();
    using h = relayHarness();
    const g = h.dataBase;
    h.guest.write(g, enc("hello shadow"));
    h.guest.fill(g + 0x1000, 64, 0xee);
    h.driver.add({ readable: [{ addr: g, len: 12 }], writable: [{ addr: g + 0x1000, len: 64 }] }, { token: 7 });
    h.relay.onGuestKick();
    expect(h.kicks).toBe(1);
    expect(h.relay.inFlight).toBe(1);
    const [c] = popAll(h);
    expect(c!.descriptors.map((d) => [d.len, d.isWriteOnly])).toEqual([[12, false], [64, true]]);
    // the backend's buffers are in shadow memory, not the guest's
    for (const d of c!.descriptors) expect(h.shadow.memory.checkRange(d.addr, d.len)).toBe(true);
    echo(h, c!);
    h.relay.onBackendCall();
    expect(h.interrupts).toBe(1);
    const [u] = h.driver.harvest();
    expect(u).toMatchObject({ token: 7, len: 12 });
    expect(new TextDecoder().decode(h.guest.read(g + 0x1000, 12))).toBe("wodahs olleh");
    // bytes past used.len are the guest's own (not copied back)
    expect(h.guest.read(g + 0x1000 + 12, 52).every((b) => b === 0xee)).toBe(true);
    expect(h.relay.poolUsed).toBe(0);
    expect(h.relay.stats).toMatchObject({ posted: 1, completed: 1, bytesIn: 12, bytesOut: 12 });
    h.close();
    expect(leaks.check()).toEqual([]);
  });

  it("flattens guest indirect tables into plain shadow chains with the same buffer boundaries", () => {
    using h = relayHarness({ indirectMaxEntries: 8 });
    const g = h.dataBase;
    h.driver.add({ readable: [{ addr: g, len: 16 }, { addr: g + 0x200, len: 512 }], writable: [{ addr: g + 0x800, len: 1 }] }, { indirect: true, token: 1 });
    h.relay.onGuestKick();
    const [c] = popAll(h);
    expect(c!.indirect).toBe(false);
    expect(c!.descriptors.map((d) => d.len)).toEqual([16, 512, 1]);
    h.device.addUsed(c!.head, 1);
    h.relay.onBackendCall();
    expect(h.driver.harvest()).toMatchObject([{ token: 1, len: 1 }]);
  });

  it("write-back 'whole' copies all writable bytes whatever used.len says (virtio-blk status byte)", () => {
    using h = relayHarness({ relay: { writeBack: "whole" } });
    const g = h.dataBase;
    h.driver.add({ readable: [{ addr: g, len: 16 }], writable: [{ addr: g + 0x1000, len: 512 }, { addr: g + 0x2000, len: 1 }] });
    h.relay.onGuestKick();
    const [c] = popAll(h);
    c!.writeAll(new Uint8Array(513).fill(0x5a));
    h.device.addUsed(c!.head, 4096); // DPDK vhost_blk's len
    h.relay.onBackendCall();
    expect(h.driver.harvest()[0]!.len).toBe(513); // clamped to what the guest offered
    expect(h.guest.read(g + 0x2000, 1)[0]).toBe(0x5a);
  });

  it("applies back-pressure: a full pool stops popping, completions resume it, all requests complete", () => {
    using h = relayHarness({ size: 64, poolBytes: 16 << 10 });
    const g = h.dataBase;
    for (let i = 0; i < 30; i++) {
      h.guest.fill(g + i * 0x1000, 4096, i);
      h.driver.add({ readable: [{ addr: g + i * 0x1000, len: 4096 }], writable: [{ addr: g + 0x100000 + i * 0x1000, len: 4096 }] }, { token: i, publish: false });
    }
    h.driver.publish();
    h.relay.onGuestKick();
    const first = h.relay.inFlight;
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(30);
    expect(h.relay.stats.stalls).toBeGreaterThan(0);
    const done = new Set<number>();
    let maxPool = 0;
    for (let round = 0; round < 100 && done.size < 30; round++) {
      maxPool = Math.max(maxPool, h.relay.poolUsed);
      for (const c of popAll(h)) echo(h, c);
      h.relay.onBackendCall();
      for (const u of h.driver.harvest()) {
        done.add(u.token!);
        expect(h.guest.read(g + 0x100000 + u.token! * 0x1000, 4096).every((b) => b === (u.token! & 0xff))).toBe(true);
      }
    }
    expect(done.size).toBe(30);
    expect(maxPool).toBeLessThanOrEqual(16 << 10);
    expect(h.relay.poolUsed).toBe(0);
  });

  it("honours the guest's VIRTQ_AVAIL_F_NO_INTERRUPT and EVENT_IDX used_event", () => {
    for (const eventIdx of [false, true]) {
      using h = relayHarness({ guestEventIdx: eventIdx, backendEventIdx: eventIdx });
      const g = h.dataBase;
      const roundTrip = () => {
        h.driver.add({ writable: [{ addr: g, len: 8 }] });
        h.relay.onGuestKick();
        for (const c of popAll(h)) h.device.addUsed(c.head, 8);
        h.relay.onBackendCall();
      };
      roundTrip();
      expect(h.interrupts).toBe(1);
      h.driver.harvest();
      h.driver.disableInterrupts();
      roundTrip();
      expect(h.interrupts).toBe(1);
      expect(h.driver.enableInterrupts()).toBe(true);
      h.driver.harvest();
      roundTrip();
      expect(h.interrupts).toBe(2);
    }
  });

  fcTest.prop(
    [
      fc.array(
        fc.record({
          readable: fc.array(fc.integer({ min: 0, max: 3000 }), { maxLength: 4 }),
          writable: fc.array(fc.integer({ min: 1, max: 3000 }), { maxLength: 4 }),
        }).filter((r) => r.readable.some((n) => n > 0) || r.writable.length > 0),
        { minLength: 1, maxLength: 48 },
      ),
      fc.infiniteStream(fc.nat()),
      fc.boolean(),
    ],
    { numRuns: 40 },
  )("random chains, random out-of-order completion: payloads and used.len arrive intact", (reqs, rand, eventIdx) => {
    using h = relayHarness({ size: 16, poolBytes: 48 << 10, guestEventIdx: eventIdx, backendEventIdx: eventIdx, indirectMaxEntries: 8 });
    const g = h.dataBase;
    const slot = 0x8000;
    const expected = new Map<number, { out: Uint8Array; len: number }>();
    let next = 0;
    let done = 0;
    const held: DescriptorChain[] = [];
    const rng = rand[Symbol.iterator]();
    const r = () => rng.next().value as number;
    for (let guard = 0; done < reqs.length && guard < 10_000; guard++) {
      // guest: add what fits
      while (next < reqs.length && h.driver.numFree >= 8) {
        const q = reqs[next]!;
        const base = g + (next % 64) * slot * 2;
        let at = base;
        const readable = q.readable.map((len) => {
          const b = { addr: at, len };
          h.guest.write(at, new Uint8Array(len).map((_, i) => (i + next * 7) & 0xff));
          at += len;
          return b;
        });
        const writable = q.writable.map((len) => {
          const b = { addr: at, len };
          h.guest.fill(at, len, 0xcc);
          at += len;
          return b;
        });
        h.driver.add({ readable, writable }, { token: next, indirect: r() % 2 === 0 });
        next++;
        h.relay.onGuestKick();
      }
      // backend: take everything, complete a random subset in random order
      held.push(...popAll(h));
      held.sort(() => (r() % 3) - 1);
      const k = held.length ? r() % (held.length + 1) : 0;
      for (const c of held.splice(0, k)) {
        const inBytes = c.readAll();
        const wl = c.writableLength;
        const len = r() % (wl + 1);
        const out = new Uint8Array(wl).map((_, i) => (inBytes[i % Math.max(1, inBytes.length)]! ^ 0x5a ^ i) & 0xff);
        c.writeAll(out);
        h.device.addUsed(c.head, len);
        expected.set(c.head, { out, len });
      }
      h.relay.onBackendCall();
      for (const u of h.driver.harvest()) {
        done++;
        const q = reqs[u.token!]!;
        const base = g + (u.token! % 64) * slot * 2;
        const rlen = q.readable.reduce((a, b) => a + b, 0);
        const wl = q.writable.reduce((a, b) => a + b, 0);
        const got = h.guest.read(base + rlen, wl);
        // what the device wrote: the input bytes (recomputed from the guest pattern) transformed
        const input = new Uint8Array(rlen);
        let at = 0;
        for (const len of q.readable) {
          input.set(new Uint8Array(len).map((_, i) => (i + u.token! * 7) & 0xff), at);
          at += len;
        }
        const want = new Uint8Array(wl).map((_, i) => (input[i % Math.max(1, input.length)]! ^ 0x5a ^ i) & 0xff);
        expect(u.len).toBeLessThanOrEqual(wl);
        expect(got.subarray(0, u.len)).toEqual(want.subarray(0, u.len));
        expect(got.subarray(u.len).every((b) => b === 0xcc)).toBe(true);
      }
      expect(h.relay.poolUsed).toBeLessThanOrEqual(48 << 10);
    }
    expect(done).toBe(reqs.length);
    expect(h.relay.poolUsed).toBe(0);
    expect(h.relay.broken).toBeUndefined();
  });

  describe("hostile guests: typed error, queue stops, nothing else affected", () => {
    /** Writes raw descriptors and one avail entry, as a hostile guest would. */
    function raw(h: Harness, descs: { addr: bigint; len: number; flags: number; next: number }[], head: number, availIdx?: number): void {
      const d = h.driver;
      descs.forEach((x, i) => h.guest.writeObj(d.descTable.value + BigInt(16 * i), VirtqDesc, x));
      const idx = h.guest.load16(d.availRing.value + BigInt(AVAIL_IDX));
      h.guest.store16(d.availRing.value + BigInt(AVAIL_RING + 2 * (idx % d.size)), head);
      h.guest.store16(d.availRing.value + BigInt(AVAIL_IDX), availIdx ?? (idx + 1) & 0xffff);
    }
    const cases: [string, (h: Harness) => void, string][] = [
      ["a descriptor loop", (h) => raw(h, [{ addr: BigInt(h.dataBase), len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 }, { addr: BigInt(h.dataBase), len: 8, flags: VIRTQ_DESC_F_NEXT, next: 0 }], 0), "DescriptorLoop"],
      ["a length past guest RAM", (h) => raw(h, [{ addr: BigInt(h.dataBase), len: 0x7fff_ffff, flags: 0, next: 0 }], 0), "OutOfBounds"],
      ["an address outside RAM", (h) => raw(h, [{ addr: 0x1234_5678_0000n, len: 16, flags: 0, next: 0 }], 0), "OutOfBounds"],
      ["a head index beyond the ring", (h) => raw(h, [], 999), "InvalidIndex"],
      ["a next index beyond the ring", (h) => raw(h, [{ addr: BigInt(h.dataBase), len: 8, flags: VIRTQ_DESC_F_NEXT, next: 4000 }], 0), "InvalidIndex"],
      ["an avail idx far ahead", (h) => raw(h, [{ addr: BigInt(h.dataBase), len: 8, flags: 0, next: 0 }], 0, 500), "InvalidAvailIdx"],
    ];
    for (const [what, attack, cause] of cases) {
      it(what, () => {
        using h = relayHarness({ size: 64 });
        using other = relayHarness({ size: 64 });
        const broken: ShadowQueueError[] = [];
        h.relay.on("broken", (e) => broken.push(e));
        attack(h);
        h.relay.onGuestKick();
        expect(broken).toHaveLength(1);
        expect(broken[0]).toBeInstanceOf(ShadowQueueError);
        expect(broken[0]!.kind).toBe("GuestChain");
        expect(broken[0]!.guestFault).toBe(true);
        expect((broken[0]!.cause as { kind: string }).kind).toBe(cause);
        expect(h.relay.broken).toBe(broken[0]);
        expect(h.kicks).toBe(0);
        expect(h.relay.poolUsed).toBe(0);
        // stays stopped; another relay is unaffected
        h.relay.onGuestKick();
        h.relay.onBackendCall();
        expect(broken).toHaveLength(1);
        other.driver.add({ readable: [{ addr: other.dataBase, len: 4 }], writable: [{ addr: other.dataBase + 64, len: 4 }] });
        other.relay.onGuestKick();
        for (const c of popAll(other)) echo(other, c);
        other.relay.onBackendCall();
        expect(other.driver.harvest()).toHaveLength(1);
      });
    }

    it("a chain larger than the whole pool", () => {
      using h = relayHarness({ poolBytes: 8192 });
      const broken: ShadowQueueError[] = [];
      h.relay.on("broken", (e) => broken.push(e));
      h.driver.add({ writable: [{ addr: h.dataBase, len: 64 << 10 }] });
      h.relay.onGuestKick();
      expect(broken.map((e) => e.kind)).toEqual(["ChainTooLarge"]);
    });

    it("a guest that never consumes used entries keeps the relay bounded", () => {
      using h = relayHarness({ size: 16, poolBytes: 16 << 10 });
      const d = h.driver;
      // One descriptor, offered over and over (avail idx moves on; used entries are never read).
      h.guest.writeObj(d.descTable.value, VirtqDesc, { addr: BigInt(h.dataBase), len: 4096, flags: 2, next: 0 });
      let added = 0;
      let maxPool = 0;
      let maxInFlight = 0;
      for (let round = 0; round < 200; round++) {
        // keep the avail ring full (never more than 16 entries past what the relay popped)
        while (added + 1 - h.relay.stats.posted <= 16) {
          h.guest.store16(d.availRing.value + BigInt(AVAIL_RING + 2 * (added % 16)), 0);
          added++;
        }
        h.guest.store16(d.availRing.value + BigInt(AVAIL_IDX), added & 0xffff);
        h.relay.onGuestKick();
        maxPool = Math.max(maxPool, h.relay.poolUsed);
        maxInFlight = Math.max(maxInFlight, h.relay.inFlight);
        for (const c of popAll(h)) h.device.addUsed(c.head, 4096);
        h.relay.onBackendCall();
      }
      expect(h.relay.broken).toBeUndefined();
      expect(h.relay.stats.completed).toBeGreaterThanOrEqual(800);
      expect(maxPool).toBeLessThanOrEqual(16 << 10);
      expect(maxInFlight).toBeLessThanOrEqual(4);
    });
  });

  it("a backend returning an id that is not in flight breaks the queue with kind Backend", () => {
    using h = relayHarness();
    const broken: ShadowQueueError[] = [];
    h.relay.on("broken", (e) => broken.push(e));
    h.driver.add({ writable: [{ addr: h.dataBase, len: 8 }] });
    h.relay.onGuestKick();
    popAll(h);
    h.device.addUsed(5, 8);
    h.relay.onBackendCall();
    expect(broken.map((e) => [e.kind, e.guestFault])).toEqual([["Backend", false]]);
  });

  it("a backend moving the used idx past the ring size breaks the queue with kind Backend (nothing completed)", () => {
    using h = relayHarness({ size: 16 });
    const broken: ShadowQueueError[] = [];
    h.relay.on("broken", (e) => broken.push(e));
    h.driver.add({ writable: [{ addr: h.dataBase, len: 8 }] });
    h.relay.onGuestKick();
    popAll(h);
    h.shadow.memory.store16(h.relay.shadowRing.used + 2n, 100);
    h.relay.onBackendCall();
    expect(broken.map((e) => [e.kind, (e.cause as { kind: string }).kind])).toEqual([["Backend", "InvalidUsedIdx"]]);
    expect(h.driver.harvest()).toHaveLength(0);
  });

  it("backend loss, policy repost: in-flight requests go to the next backend, none lost", () => {
    using h = relayHarness({ size: 16 });
    const g = h.dataBase;
    for (let i = 0; i < 6; i++) {
      h.guest.write(g + i * 64, enc(`req${i}`));
      h.driver.add({ readable: [{ addr: g + i * 64, len: 4 }], writable: [{ addr: g + 0x1000 + i * 64, len: 4 }] }, { token: i });
    }
    h.relay.onGuestKick();
    const got = popAll(h);
    echo(h, got[2]!); // one completed before the crash, not yet harvested by the relay
    h.relay.backendLost();
    expect(h.driver.harvest().map((u) => u.token)).toEqual([2]);
    // a new backend on the replayed ring (base 0)
    h.newDevice();
    h.relay.backendRestored();
    const again = popAll(h);
    expect(again).toHaveLength(5);
    for (const c of again) echo(h, c);
    h.relay.onBackendCall();
    const used = h.driver.harvest();
    expect(used.map((u) => u.token).sort()).toEqual([0, 1, 3, 4, 5]);
    for (const u of used) expect(new TextDecoder().decode(h.guest.read(g + 0x1000 + u.token! * 64, 4))).toBe(`${u.token}qer`);
    expect(h.relay.stats.reposted).toBe(5);
    expect(h.relay.poolUsed).toBe(0);
  });

  it("a half-finished reconnection: the backend that started on the ring is harvested, the next gets a fresh ring", () => {
    using h = relayHarness({ size: 16, relay: { onBackendLoss: "fail" } });
    const g = h.dataBase;
    h.relay.backendLost(); // nothing in flight yet
    for (let i = 0; i < 4; i++) h.driver.add({ readable: [{ addr: g + i * 64, len: 4 }], writable: [{ addr: g + 0x1000 + i * 64, len: 4 }] }, { token: i });
    h.relay.onGuestKick(); // posted while down: not kicked
    expect(h.kicks).toBe(0);
    // attempt 1: a backend gets the ring, completes two, and the connection drops before it is ready
    expect(h.relay.prepareReplay()).toBe(0);
    h.newDevice();
    const first = popAll(h);
    expect(first).toHaveLength(4);
    for (const c of first.slice(0, 2)) echo(h, c);
    // attempt 2: the ring is rebuilt: the two completions count, the other two are posted again
    expect(h.relay.prepareReplay()).toBe(0);
    expect(h.driver.harvest()).toHaveLength(2);
    h.newDevice();
    h.relay.backendRestored();
    expect(h.kicks).toBe(1);
    const again = popAll(h);
    expect(again).toHaveLength(2);
    for (const c of again) echo(h, c);
    h.relay.onBackendCall();
    expect(h.driver.harvest()).toHaveLength(2);
    expect(h.relay.stats.failed).toBe(0);
    expect(h.relay.inFlight).toBe(0);
  });

  it("backend loss, policy fail: in-flight blk requests complete with VIRTIO_BLK_S_IOERR", () => {
    using h = relayHarness({ relay: { onBackendLoss: "fail", failRequest: failBlk } });
    const g = h.dataBase;
    h.guest.fill(g + 0x2000, 1, 0xff);
    h.driver.add({ readable: [{ addr: g, len: 16 }], writable: [{ addr: g + 0x1000, len: 512 }, { addr: g + 0x2000, len: 1 }] }, { token: 9 });
    h.relay.onGuestKick();
    popAll(h);
    h.relay.backendLost();
    expect(h.driver.harvest()).toMatchObject([{ token: 9, len: 513 }]);
    expect(h.guest.read(g + 0x2000, 1)[0]).toBe(1);
    expect(h.interrupts).toBe(1);
    expect(h.relay.stats.failed).toBe(1);
    expect(h.relay.inFlight).toBe(0);
  });
});
