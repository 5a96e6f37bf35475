#!/usr/bin/env node
// Xen relay benchmark: the userspace paths XenNotifier takes when privcmd cannot offload, against a C
// program doing the same syscalls in the same run (pattern: packages/vmm-sys-util/bench/relay.{c,mjs}).
//   (a) ioreq -> kick: a C "vCPU" posts a QueueNotify write into a real struct ioreq slot (shared memfd),
//       fires the port, and waits for the completion notification. The relay is what IoreqServer wires up:
//       xen-sys's EventChannels on an FdWatcher (readPendingInto, unmask, one "event" per port) -> port to
//       vCPU lookup -> IoreqProcessor (the state machine) with UserspaceNotifier's doorbell table (what
//       XenNotifier attaches) -> EventChannels.notify; or the same steps in C. Event channels are eventfds,
//       as in xen-sim (port fired = eventfd write; unmask is free on both sides).
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
import { EventFd, FdWatcher, ftruncate, memfdCreate, mmap, munmap, close, read, setNonblocking, write } from "@xen-vhost/vmm-sys-util";
// XEN_RELAY_OLD=<dir of an ioreq-eventfd dist>,<dir of a xen-sys dist>: measure older builds of the two
// packages (e.g. compiled from an earlier commit) with the same bench, for before/after comparisons.
const [ioreqDist, xenSysDist] = (process.env.XEN_RELAY_OLD ?? "").split(",");
const { EventChannels } = await import(xenSysDist ? join(xenSysDist, "index.js") : "@xen-vhost/xen-sys");
const { IoRangeTable, IoreqProcessor, IoreqServer, UserspaceNotifier, XenNotifier, nullLogger } = await import(
  ioreqDist ? join(ioreqDist, "index.js") : "../dist/index.js"
);

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
/** A C relay; `stop()` ends it and resolves to the CPU time it used (ns). */
function background(args, fds) {
  const child = spawn(exe, args, { stdio: ["ignore", "pipe", "inherit", ...fds] });
  pin(child.pid);
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  const exited = new Promise((resolve) => child.on("exit", () => resolve(JSON.parse(out || "{}").cpu_ns ?? NaN)));
  return { stop: () => (child.kill("SIGTERM"), exited) };
}
/** CPU time (user + system) this process used while `f` ran, in ns. */
async function cpuOf(f) {
  const c0 = process.cpuUsage();
  const result = await f();
  const c = process.cpuUsage(c0);
  return { ...result, cpuNs: (c.user + c.system) * 1000 };
}
/** Events each relay handles: the drivers add n/10 warm-up rounds. */
const events = n + Math.trunc(n / 10);
const blocking = () => new EventFd({ nonblocking: false });

/**
 * /dev/xen/evtchn's interface over two eventfds (xen-sys's EventChannelDevice): the "port" eventfd is the
 * readable fd (its counter = the one bound port fired), notify writes the "notify" eventfd. Raw read/write
 * with preallocated buffers, as the kernel device's read(2)/ioctl(2) are.
 */
class EventfdEvtchn {
  #counter = new BigUint64Array(1);
  #one = BigUint64Array.of(1n);
  constructor(port, notify) {
    this.port = port;
    this.notifyFd = notify.fd;
    this.fd = port.fd;
    this.closed = false;
  }
  bindInterdomain() { return 7; }
  bindUnboundPort() { return 8; }
  bindVirq() { return 9; }
  unbind() {}
  restrict() {}
  notify() { write(this.notifyFd, this.#one); }
  /** The allocating form (what EvtchnDevice.readPending does), for EventChannels builds without readPendingInto. */
  readPending(max = 64) {
    const buf = new Uint32Array(max);
    const n = this.readPendingInto(buf);
    return n === 0 ? new Uint32Array(0) : buf.slice(0, n);
  }
  readPendingInto(buf) {
    if (read(this.fd, this.#counter) === null) return 0;
    buf[0] = 7;
    return 1;
  }
  unmask() {}
  close() { this.closed = true; }
  [Symbol.dispose]() { this.close(); }
}

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
    // Nonblocking on the relay's side, as /dev/xen/evtchn is (the C driver only writes this eventfd).
    setNonblocking(port.fd, true);
    const evtchn = new EventChannels(new EventfdEvtchn(port, notify));
    const local = evtchn.bindInterdomain(1, 5);
    const ports = [local];
    const portToVcpu = new Map([[local, 0]]);
    const proc = new IoreqProcessor({ pages: page, vcpus: 1, ranges: new IoRangeTable(), notify: (v) => evtchn.notify(ports[v]), logger: nullLogger });
    proc.doorbells = doorbells;
    evtchn.on("event", (p) => {
      const v = portToVcpu.get(p);
      if (v !== undefined) proc.service(v);
    });
    result = await cpuOf(() => run(["drive-ioreq", String(n)], fds));
    if (proc.stats.doorbells < n) throw new Error(`only ${proc.stats.doorbells} doorbells matched`);
    evtchn.close();
    proc.close();
    doorbells.close();
    munmap(page);
  } else {
    const relay = background(["relay-ioreq"], fds);
    result = await run(["drive-ioreq", String(n)], fds);
    result.cpuNs = await relay.stop();
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
    result = await cpuOf(() => run(["drive-irq", String(n)], [call.fd, line.fd]));
    relay.close();
  } else {
    const relay = background(["relay-irq"], [call.fd, line.fd]);
    result = await run(["drive-irq", String(n)], [call.fd, line.fd]);
    result.cpuNs = await relay.stop();
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
  const per = (r) => (r.cpuNs / events / 1000).toFixed(2);
  console.log(`  relay CPU per event: C ${per(c)} us, Node ${per(node)} us (${(node.cpuNs / c.cpuNs).toFixed(2)}x)`);
}

// XEN_RELAY_ONLY=a|b runs only that Node relay, for an instruction count of the relay's own work (e.g.
// under `valgrind --tool=callgrind`: the difference between two iteration counts divided by their
// difference is the user-space instructions per event, independent of how busy the machine is).
const only = process.env.XEN_RELAY_ONLY;
if (only === "a" || only === "b") {
  const r = only === "a" ? await ioreqRelay(true) : await irqRelay(true);
  console.log(`${only} Node relay: ${n} iterations, median ${us(r.median)} us`);
  process.exit(0);
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
