// Guest program for bench/bridge.mjs: brings a virtio-rng device up and times, from inside the simulated
// vCPU, (kick) QueueNotify writes, (read) InterruptStatus reads and (request) whole rng requests
// (kick -> backend -> used -> interrupt -> guest), `count` each after a warm-up.
// args: { base, irq, count, what: ["kick", "read", "request"] }
import { VirtioMmioDriver, VirtioRngDriver } from "@xen-vhost/xen-sim/guest";

function stats(t) {
  const n = t.length;
  let sum = 0;
  for (const x of t) sum += x;
  t.sort();
  return { median: t[n >> 1], p99: t[Math.floor(n * 0.99)], mean: sum / n, n };
}

function timed(count, f) {
  const t = new Float64Array(count);
  for (let i = -Math.min(1000, count); i < count; i++) {
    const t0 = process.hrtime.bigint();
    f();
    if (i >= 0) t[i] = Number(process.hrtime.bigint() - t0);
  }
  return stats(t);
}

export default function main({ guest, vcpu, args }) {
  const t0 = process.hrtime.bigint();
  const drv = new VirtioMmioDriver(guest, vcpu, BigInt(args.base), { irq: args.irq });
  const rng = VirtioRngDriver.init(drv);
  const bringUpNs = Number(process.hrtime.bigint() - t0);
  const out = { bringUpNs };
  const base = BigInt(args.base);
  for (const what of args.what) {
    if (what === "kick") out.kick = timed(args.count, () => vcpu.write(base + 0x50n, 4, 0));
    if (what === "read") out.read = timed(args.count, () => vcpu.read(base + 0x60n, 4));
    if (what === "request") out.request = timed(Math.max(1, args.count >> 2), () => rng.read(16));
  }
  drv.reset();
  return out;
}
