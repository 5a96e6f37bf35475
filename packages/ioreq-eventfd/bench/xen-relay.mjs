#!/usr/bin/env node
// Xen relay benchmark: the userspace paths XenNotifier takes when privcmd cannot offload, against a C
// program doing the same syscalls in the same run (pattern: packages/vmm-sys-util/bench/relay.{c,mjs}).
//   (a) ioreq -> kick: a C "vCPU" posts a QueueNotify write into a real struct ioreq slot (shared memfd),
//       fires the port, and waits for the completion notification. The relay is IoreqProcessor (the state
//       machine IoreqServer runs) with UserspaceNotifier's doorbell table (what XenNotifier attaches), or
//       the same steps in C. Event channels are eventfds, as in xen-sim (port fired = eventfd write).
//   (b) call -> interrupt: a C "backend" writes the call eventfd and waits for the line; the relay is
//       UserspaceNotifier's irqfd (what XenNotifier uses) with setIrqLevel writing a "line" eventfd in place
//       of the XEN_DMOP_set_irq_level ioctl, or read+write in C.
//   (c) end to end on xen-sim: a simulated guest vCPU (a Node process) rings QueueNotify through Xen's ioreq
//       path into IoreqServer + XenNotifier; informational (no C variant can join the simulator).
// Everything is pinned to one CPU (cross-CPU wake-ups cost ~10 us on this VM kind for every variant).
//   node bench/xen-relay.mjs [iterations=50000] [cpu=0]
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { EventFd, FdWatcher, ftruncate, memfdCreate, mmap, munmap, close } from "@xen-vhost/vmm-sys-util";
import { IoRangeTable, IoreqProcessor, IoreqServer, UserspaceNotifier, XenNotifier, nullLogger } from "../dist/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const n = Number(process.argv[2] ?? 50_000);
const cpu = String(process.argv[3] ?? 0);
const exe = join(here, "..", "build", "bench-xen-relay");
mkdirSync(dirname(exe), { recursive: true });
const cc = spawnSync("cc", ["-O2", "-o", exe, join(here, "xen-relay.c")], { stdio: "inherit" });
if (cc.status !== 0) throw new Error("cc failed: the benchmark needs a C compiler (build-essential)");
const pin = (pid) => spawnSync("taskset", ["-a", "-cp", cpu, String(pid)], { stdio: "ignore" }).status === 0;
pin(process.pid);

function run(args, fds) {
  return new Promise((resolve, reject) => {
    const child = spawn(exe, args, { stdio: ["ignore", "pipe", "inherit", ...fds] });
    pin(child.pid);
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`${args[0]} exit ${code}`))));
  });
}
function background(args, fds) {
  const child = spawn(exe, args, { stdio: ["ignore", "inherit", "inherit", ...fds] });
  pin(child.pid);
  return child;
}
const blocking = () => new EventFd({ nonblocking: false });

// ---- (a) ioreq -> kick ------------------------------------------------------------------------------------
async function ioreqRelay(node) {
  const memfd = memfdCreate("bench-ioreq");
  ftruncate(memfd, 4096);
  const [port, notify, kick] = [blocking(), blocking(), blocking()];
  const fds = [memfd, port.fd, notify.fd, kick.fd];
  let result;
  if (node) {
    const page = mmap(4096, { fd: memfd });
    const doorbells = new UserspaceNotifier({ setIrqLevel: () => {} });
    doorbells.ioeventfd({ addr: 0x2000050n, len: 4, datamatch: 0n, eventfd: kick });
    const proc = new IoreqProcessor({ pages: page, vcpus: 1, ranges: new IoRangeTable(), notify: () => notify.write(1), logger: nullLogger });
    proc.doorbells = doorbells;
    const w = new FdWatcher(port.fd, () => {
      port.read();
      proc.service(0);
    }).start();
    result = await run(["drive-ioreq", String(n)], fds);
    if (proc.stats.doorbells < n) throw new Error(`only ${proc.stats.doorbells} doorbells matched`);
    w.close();
    proc.close();
    doorbells.close();
    munmap(page);
  } else {
    const relay = background(["relay-ioreq"], fds);
    result = await run(["drive-ioreq", String(n)], fds);
    relay.kill();
  }
  for (const e of [port, notify, kick]) e.close();
  close(memfd);
  return result;
}

// ---- (b) call -> interrupt --------------------------------------------------------------------------------
async function irqRelay(node) {
  const [call, line] = [blocking(), blocking()];
  let result;
  if (node) {
    const relay = new UserspaceNotifier({ setIrqLevel: (_l, level) => void (level === 1 && line.write(1)) });
    relay.irqfd({ line: 33, trigger: "edge", eventfd: call });
    result = await run(["drive-irq", String(n)], [call.fd, line.fd]);
    relay.close();
  } else {
    const relay = background(["relay-irq"], [call.fd, line.fd]);
    result = await run(["drive-irq", String(n)], [call.fd, line.fd]);
    relay.kill();
  }
  call.close();
  line.close();
  return result;
}

// ---- (c) end to end on xen-sim ----------------------------------------------------------------------------
async function simEndToEnd(count, kernel) {
  let sim;
  try {
    const { startSimulator } = await import("@xen-vhost/xen-sim");
    const { Xen } = await import("@xen-vhost/xen-sys");
    sim = await startSimulator({ domains: [{ domid: 1, name: "bench", ram: 16 << 20, vcpus: 1 }] });
    const transport = sim.connect();
    if (!kernel) transport.disableEventfdOffload();
    const server = IoreqServer.create({ xen: Xen.open({ transport }), domid: 1 });
    server.mapMmio(0x2000000n, 0x200, { read: () => 0, write: () => {} });
    const notifier = new XenNotifier(server);
    const kick = notifier.ioeventfd({ addr: 0x2000050n, len: 4, datamatch: 0n });
    let kicks = 0n;
    const backend = new FdWatcher(kick.eventfd.fd, () => (kicks += kick.eventfd.read() ?? 0n)).start();
    sim.unpause(1);
    const g = sim.startGuest({ domid: 1, program: join(here, "sim-guest.mjs"), args: { count } });
    pin(g.child.pid);
    const r = await g.result;
    backend.close();
    notifier.close();
    server.close();
    transport.close();
    return { ...r, kicks: Number(kicks), blocked: g.counters?.blocked, kind: kick.kind };
  } catch (err) {
    return { error: String(err) };
  } finally {
    await sim?.close();
  }
}

const us = (ns) => (ns / 1000).toFixed(2).padStart(7);
const rate = (r) => Math.round(1e9 / r.mean).toLocaleString("en").padStart(10);
function table(title, c, node) {
  console.log(title);
  console.log("  relay        median      p99         per second");
  console.log(`  C floor     ${us(c.median)} us  ${us(c.p99)} us  ${rate(c)}`);
  console.log(`  Node        ${us(node.median)} us  ${us(node.p99)} us  ${rate(node)}`);
  console.log(`  ratio (Node/C median): ${(node.median / c.median).toFixed(2)}x  (goal <= 1.5x)`);
}

console.log(`Xen userspace relay, ${n} iterations, pinned to CPU ${cpu}`);
const aC = await ioreqRelay(false);
const aN = await ioreqRelay(true);
table("(a) ioreq (QueueNotify write) -> kick eventfd -> IORESP_READY + notify", aC, aN);
const bC = await irqRelay(false);
const bN = await irqRelay(true);
table("(b) call eventfd -> set_irq_level (stand-in: line eventfd)", bC, bN);
console.log("(c) xen-sim end to end: guest vCPU process rings QueueNotify -> IoreqServer + XenNotifier -> kick eventfd");
for (const kernel of [false, true]) {
  const e = await simEndToEnd(Math.min(n, 20_000), kernel);
  if (e.error) console.log(`  ${kernel ? "kernel" : "userspace"}: skipped (${e.error})`);
  else
    console.log(
      `  ${e.kind.padEnd(13)} median ${us(e.median)} us, p99 ${us(e.p99)} us, ${Math.round(1e9 / e.mean).toLocaleString("en")}/s, ` +
        `${e.kicks} kicks, vCPU blocked ${e.blocked} times`,
    );
}
