// Guest program for bench/xen-relay.mjs (c): rings QueueNotify `count` times and times each write
// (ioreq posted -> device model answered) from inside the simulated vCPU.
export default function simGuest({ vcpu, args }) {
  const count = args.count;
  const t = new Float64Array(count);
  for (let i = -1000; i < count; i++) {
    const t0 = process.hrtime.bigint();
    vcpu.write(0x2000050n, 4, 0);
    if (i >= 0) t[i] = Number(process.hrtime.bigint() - t0);
  }
  let sum = 0;
  for (const x of t) sum += x;
  t.sort();
  return { median: t[count >> 1], p99: t[Math.floor(count * 0.99)], mean: sum / count };
}
