#!/usr/bin/env node
// The relay's own cost per request, with memfd memory on both sides and no backend process: a guest posts
// batches of virtio-blk-shaped 4 KiB reads (16-byte header, 4 KiB data, status byte), the relay moves
// them to the shadow ring, a device loop on the shadow ring completes them (virtio-queue's Queue), the
// relay copies back and returns them. Prints requests/s and microseconds per request for the relay alone
// (the guest's and the device's work is timed separately and subtracted).
// Usage: node bench/relay.mjs [requests, default 200000]   (after `pnpm build`)
import { relayHarness } from "../dist/testing/index.js";

const N = Number(process.argv[2] ?? 200_000);
const BATCH = 32;
const h = relayHarness({ size: 128, poolBytes: 4 << 20, guestEventIdx: true, backendEventIdx: true });
const g = h.dataBase;
const slots = Array.from({ length: BATCH }, (_, i) => ({ hdr: g + i * 0x2000, data: g + i * 0x2000 + 0x1000, status: g + i * 0x2000 + 0x20 }));
let relayNs = 0n;
const t0 = process.hrtime.bigint();
for (let done = 0; done < N; done += BATCH) {
  for (const s of slots) h.driver.add({ readable: [{ addr: s.hdr, len: 16 }], writable: [{ addr: s.data, len: 4096 }, { addr: s.status, len: 1 }] }, { publish: false });
  h.driver.publish();
  let t = process.hrtime.bigint();
  h.relay.onGuestKick();
  relayNs += process.hrtime.bigint() - t;
  for (let c = h.device.pop(); c; c = h.device.pop()) h.device.addUsed(c.head, 4097, { publish: false });
  h.device.publishUsed();
  t = process.hrtime.bigint();
  h.relay.onBackendCall();
  relayNs += process.hrtime.bigint() - t;
  if (h.driver.harvest().length !== BATCH) throw new Error("lost a request");
}
const total = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(`${N} requests in batches of ${BATCH}: ${Math.round(N / total)} req/s end to end (guest + relay + device loop)`);
console.log(`relay alone: ${(Number(relayNs) / N / 1000).toFixed(2)} us per request (${Math.round(N / (Number(relayNs) / 1e9))} req/s)`);
console.log(h.relay.stats);
h.close();
