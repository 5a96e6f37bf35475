// 4 KiB random reads through this front-end, packages/virtio-queue and packages/vm-memory against two real
// vhost-user-blk back-ends: qemu-storage-daemon (libvhost-user, kick-driven) and DPDK's examples/vhost_blk
// (busy-polling RAM disk). Queue depth 1 and 32, N requests each (after a warm-up), IOPS and latency p50/p99,
// in both of DriverRing's completion modes, same run: "interrupt" sleeps on the call eventfd (as a device
// model does), "poll" turns the back-end's calls off (VIRTQ_AVAIL_F_NO_INTERRUPT / used_event) and spins on
// the used ring for up to 200 us before falling back to the eventfd, as DPDK's virtio-user PMD does.
// "front-end CPU" is this process's user+system time per request (process.cpuUsage): in poll mode it includes
// the spinning. "kicks" and "calls" are eventfd writes per request by the front-end and the back-end.
// Prints figures; asserts nothing. The figures depend on what else runs on the machine: compare same-run ratios.
// Usage: pnpm bench (after pnpm build). Env: N (default 20000), BACKENDS (default "qsd,dpdk"), REPEAT (rounds
// of every line, interleaved; default 1), MODES (default "interrupt,poll").
import { spawnSync } from "node:child_process";
import { cpus, loadavg } from "node:os";
import {
  session, BlkDriver, VIRTIO_BLK_T_IN, startQsd, hasQsd, startDpdkVhostBlk, hasDpdkVhostBlk, DPDK_BLK_BLOCKS, DATA,
} from "@xen-vhost/vhost-user-master/testing";

// DPDK's examples/vhost_blk pins its polling worker to CPU 0 (ctrlr_worker: CPU_SET(0)). A front-end that
// shares that CPU and spins starves it for a whole timeslice, so the bench runs itself on the last CPU.
if (!process.env.BENCH_PINNED && cpus().length > 1 && spawnSync("sh", ["-c", "command -v taskset"]).status === 0) {
  const r = spawnSync("taskset", ["-c", String(cpus().length - 1), process.execPath, ...process.argv.slice(1)], {
    stdio: "inherit", env: { ...process.env, BENCH_PINNED: String(cpus().length - 1) },
  });
  process.exit(r.status ?? 1);
}

const N = Number(process.env.N ?? 20000);
const backends = (process.env.BACKENDS ?? "qsd,dpdk").split(",");
const repeat = Number(process.env.REPEAT ?? 1);
const modes = (process.env.MODES ?? "interrupt,poll").split(",");
const F = (1n << 32n) | (1n << 30n); // VERSION_1 | PROTOCOL_FEATURES

async function bench(name, socket, blocks) {
  const s = await session(socket, [128], { features: F, memSize: 0x80_0000, inflight: true, driverOk: true });
  const ring = s.rings[0];
  const drv = new BlkDriver(s.mem, ring.driver, ring.kick, { base: DATA, call: ring.call });
  const make = () => ({ type: VIRTIO_BLK_T_IN, sector: Math.floor(Math.random() * blocks) * 8, len: 4096 });
  const lat = new Float64Array(N);
  try {
    for (let round = 0; round < repeat; round++) {
      for (const depth of [1, 32]) {
        for (const wait of modes) {
          let errors = 0;
          await drv.run(2000, make, (_i, c) => void (errors += c.status !== 0 ? 1 : 0), { depth, wait, copyData: false }); // warm-up
          let stats;
          const cpu0 = process.cpuUsage();
          const t0 = performance.now();
          await drv.run(N, make, (i, c) => {
            lat[i] = c.latencyMs;
            if (c.status !== 0) errors++;
          }, { depth, wait, copyData: false, stats: (st) => (stats = st) });
          const secs = (performance.now() - t0) / 1000;
          const cpu = process.cpuUsage(cpu0);
          const cpuPerReq = ((cpu.user + cpu.system) / N).toFixed(1);
          lat.sort();
          const pct = (p) => (lat[Math.floor((N - 1) * p)] * 1000).toFixed(1);
          const per = (k) => (stats[k] / N).toFixed(2);
          console.log(`${name.padEnd(5)} 4KiB randread QD${String(depth).padEnd(2)} ${wait.padEnd(9)}: ${String(Math.round(N / secs)).padStart(6)} IOPS  p50 ${pct(0.5).padStart(7)} us  p99 ${pct(0.99).padStart(7)} us  front-end CPU ${cpuPerReq.padStart(5)} us/req  kicks ${per("kicks")}/req  calls ${per("calls")}/req  sleeps ${per("sleeps")}/req${errors ? `  ${errors} errors` : ""}`);
        }
      }
    }
  } finally {
    s.close();
  }
}

console.log(`vhost-user-blk bench: ${N} random 4 KiB reads per line (${repeat} round${repeat > 1 ? "s" : ""}); ${cpus().length} CPUs (bench on CPU ${process.env.BENCH_PINNED ?? "any"}), load average ${loadavg().map((l) => l.toFixed(1)).join(" ")}; node ${process.version}`);
if (backends.includes("qsd")) {
  if (!hasQsd) console.log("qsd: skipped (needs qemu-storage-daemon)");
  else {
    const sectors = 131072; // 64 MiB image
    const qsd = await startQsd({ sectors });
    try {
      await bench("qsd", qsd.socket, sectors / 8);
    } finally {
      await qsd.stop();
    }
  }
}
if (backends.includes("dpdk")) {
  if (!hasDpdkVhostBlk) console.log("dpdk: skipped (needs dpdk-doc, dpdk-dev, make, cc)");
  else {
    const blk = await startDpdkVhostBlk();
    try {
      await bench("dpdk", blk.socket, DPDK_BLK_BLOCKS);
    } finally {
      await blk.stop();
    }
  }
}
