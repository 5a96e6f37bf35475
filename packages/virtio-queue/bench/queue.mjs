// Split virtqueue throughput over memfd-backed guest memory, both sides in this thread. Each round the
// driver posts a batch (post), the device pops and returns it (pop+push), the driver harvests (harvest);
// the phases are timed separately. Chains: 1 readable + 1 writable descriptor (direct), and the same in an
// indirect table; split and packed rings. Run after `pnpm build`.
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, PackedDriverQueue, PackedQueue, Queue } from "../dist/index.js";

const SIZE = 256;
const BATCH = 128;
const TOTAL = 400_000;

function makeSplit(mem) {
  const driver = DriverQueue.create(mem, 0x1000, SIZE, { eventIdx: true, indirectMaxEntries: 4 });
  const q = new Queue(mem);
  q.size = SIZE;
  q.descTable = driver.descTable;
  q.availRing = driver.availRing;
  q.usedRing = driver.usedRing;
  q.eventIdx = true;
  q.ready = true;
  return { driver, q, used: (c) => q.addUsed(c.head, 16, { publish: false }), flush: () => q.publishUsed() };
}

function makePacked(mem) {
  const driver = PackedDriverQueue.create(mem, 0x1000, SIZE, { eventIdx: true, indirectMaxEntries: 4 });
  const q = new PackedQueue(mem);
  q.size = SIZE;
  q.descRing = driver.descRing;
  q.driverEvent = driver.driverEvent;
  q.deviceEvent = driver.deviceEvent;
  q.eventIdx = true;
  q.ready = true;
  return { driver, q, used: (c) => q.addUsed(c, 16), flush: () => {} };
}

function run(kind, indirect) {
  const mem = GuestMemory.fromRanges([[0, 4 * 1024 * 1024]]);
  const { driver, q, used, flush } = kind === "split" ? makeSplit(mem) : makePacked(mem);
  const chain = { readable: [{ addr: 0x20_0000, len: 512 }], writable: [{ addr: 0x30_0000, len: 16 }] };
  const opts = { indirect, publish: false };
  let tPost = 0n;
  let tDev = 0n;
  let tHarvest = 0n;
  // fastest batch of each phase: the figure a shared, noisy machine distorts least
  let bPost = Infinity;
  let bDev = Infinity;
  let bHarvest = Infinity;
  for (let done = 0; done < TOTAL; done += BATCH) {
    let t = process.hrtime.bigint();
    for (let i = 0; i < BATCH; i++) driver.add(chain, opts);
    driver.needsNotification();
    let t2 = process.hrtime.bigint();
    tPost += t2 - t;
    bPost = Math.min(bPost, Number(t2 - t));
    t = t2;
    for (;;) {
      const c = q.pop();
      if (!c) break;
      used(c);
    }
    flush();
    q.needsNotification();
    t2 = process.hrtime.bigint();
    tDev += t2 - t;
    bDev = Math.min(bDev, Number(t2 - t));
    t = t2;
    const n = driver.harvest().length;
    if (n !== BATCH) throw new Error(`harvested ${n}`);
    t2 = process.hrtime.bigint();
    tHarvest += t2 - t;
    bHarvest = Math.min(bHarvest, Number(t2 - t));
  }
  mem.close();
  const rate = (ns) => (TOTAL / (Number(ns) / 1e9) / 1e6).toFixed(2);
  const best = (ns) => (BATCH / (ns / 1e9) / 1e6).toFixed(2);
  const label = `${kind.padEnd(6)} ${indirect ? "indirect" : "direct  "}`;
  console.log(
    `${label} 2-desc chains, M/s sustained (best batch): device pop+push ${rate(tDev)} (${best(bDev)}), ` +
      `driver post+harvest ${rate(tPost + tHarvest)} (${best(bPost + bHarvest)}), ` +
      `full round trip ${rate(tPost + tDev + tHarvest)} (${best(bPost + bDev + bHarvest)})`,
  );
}

for (let i = 0; i < 2; i++) {
  for (const kind of ["split", "packed"]) {
    run(kind, false);
    run(kind, true);
  }
}
