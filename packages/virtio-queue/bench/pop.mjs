#!/usr/bin/env node
// Device-side cost per request of a split Queue: pop() (chain walked and validated) + addUsed(), for
// 1-descriptor, 3-descriptor (1 readable + 2 writable, virtio-blk-shaped) and indirect 3-entry chains, over
// memfd guest memory. The driver's posting/harvesting is outside the timed section. Each sample is one batch;
// the figure is the median ns per request over all samples (robust on a loaded machine), with the fastest
// sample beside it. Usage: node bench/pop.mjs [requests per shape, default 400000]   (after `pnpm build`)
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, Queue } from "../dist/index.js";

const N = Number(process.argv[2] ?? 400_000);
const SIZE = 256;
const BATCH = 64;

const SHAPES = {
  "1-desc": { spec: { readable: [{ addr: 0x20_0000, len: 512 }], writable: [] }, indirect: false },
  "3-desc": {
    spec: { readable: [{ addr: 0x20_0000, len: 16 }], writable: [{ addr: 0x30_0000, len: 4096 }, { addr: 0x31_0000, len: 1 }] },
    indirect: false,
  },
  "indirect-3": {
    spec: { readable: [{ addr: 0x20_0000, len: 16 }], writable: [{ addr: 0x30_0000, len: 4096 }, { addr: 0x31_0000, len: 1 }] },
    indirect: true,
  },
};

function run(name, { spec, indirect }) {
  const mem = GuestMemory.fromRanges([[0, 4 * 1024 * 1024]]);
  const driver = DriverQueue.create(mem, 0x1000, SIZE, { eventIdx: true, indirectMaxEntries: 4 });
  const q = new Queue(mem);
  q.size = SIZE;
  q.descTable = driver.descTable;
  q.availRing = driver.availRing;
  q.usedRing = driver.usedRing;
  q.eventIdx = true;
  q.ready = true;
  const opts = { indirect, publish: false };
  const samples = [];
  for (let done = 0; done < N; done += BATCH) {
    for (let i = 0; i < BATCH; i++) driver.add(spec, opts);
    driver.publish();
    const t = process.hrtime.bigint();
    for (let c = q.pop(); c; c = q.pop()) q.addUsed(c.head, 16);
    samples.push(Number(process.hrtime.bigint() - t) / BATCH);
    if (driver.harvest().length !== BATCH) throw new Error("lost a request");
  }
  samples.sort((a, b) => a - b);
  const median = samples[samples.length >> 1];
  mem.close();
  console.log(`${name.padEnd(10)} pop+addUsed: median ${median.toFixed(0)} ns/request, fastest batch ${samples[0].toFixed(0)} ns/request`);
}

// optional second argument: run one shape only (for instruction counts under callgrind)
const only = process.argv[3];
for (const [name, shape] of Object.entries(SHAPES)) if (only === undefined || name === only) run(name, shape);
