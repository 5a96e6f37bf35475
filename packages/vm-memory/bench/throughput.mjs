// Read/write throughput of 4 KiB copies through GuestMemory versus a raw Uint8Array over the same mapping.
// The overhead is the region lookup and bounds checks; target <= 1.2x. Run after `pnpm build`.
import { GuestMemory } from "../dist/index.js";

const PAGE = 4096;
// 1 MiB stays in cache, so the figures show the per-call overhead rather than DRAM bandwidth.
const SIZE = 1024 * 1024;
const COPY = 4096;
// Many short samples, keeping the fastest of each: robust against other processes on a shared machine.
const N = 10_000;
const ROUNDS = 300;

const mem = GuestMemory.fromRanges([
  [0, PAGE * 16],
  [0x1000_0000, SIZE],
]);
const base = 0x1000_0000;
const raw = mem.slice(base, SIZE);
const src = new Uint8Array(COPY).fill(0x5a);
const dst = new Uint8Array(COPY);
const slots = SIZE / COPY;

function time(fn) {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const cases = {
  "write GuestMemory": () => {
    for (let i = 0; i < N; i++) mem.write(base + (i % slots) * COPY, src);
  },
  "write raw": () => {
    for (let i = 0; i < N; i++) raw.set(src, (i % slots) * COPY);
  },
  "readInto GuestMemory": () => {
    for (let i = 0; i < N; i++) mem.readInto(base + (i % slots) * COPY, dst);
  },
  "readInto raw": () => {
    for (let i = 0; i < N; i++) {
      const o = (i % slots) * COPY;
      dst.set(raw.subarray(o, o + COPY));
    }
  },
  "read (new buffer) GuestMemory": () => {
    for (let i = 0; i < N; i++) mem.read(base + (i % slots) * COPY, COPY);
  },
  "read (new buffer) raw": () => {
    for (let i = 0; i < N; i++) {
      const o = (i % slots) * COPY;
      raw.slice(o, o + COPY);
    }
  },
};

const best = {};
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, fn] of Object.entries(cases)) {
    const t = time(fn);
    best[name] = Math.min(best[name] ?? Infinity, t);
  }
}
const mibs = (t) => ((N * COPY) / t / 2 ** 20).toFixed(0);
for (const op of ["write", "readInto", "read (new buffer)"]) {
  const g = best[`${op} GuestMemory`];
  const r = best[`${op} raw`];
  console.log(
    `${op.padEnd(18)} 4 KiB: GuestMemory ${mibs(g)} MiB/s (${((g / N) * 1e9).toFixed(0)} ns/op), raw ${mibs(r)} MiB/s (${((r / N) * 1e9).toFixed(0)} ns/op), overhead ${(g / r).toFixed(2)}x`,
  );
}
mem.close();
