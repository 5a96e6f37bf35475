#!/usr/bin/env node
// Relay round trip: a C process writes eventfd A; the relay wakes and writes eventfd B; the C process
// waits on B. The relay is (1) a C process doing the same syscalls (the floor), (2) Node: an FdWatcher
// on A calling eventfdRead/eventfdWrite, and (3) Node with the watcher in eventfd mode (the read of A done in
// C before the callback) and EventFd.signal() for B. Everything is pinned to one CPU (cross-CPU wake-ups cost 9-11 us
// on this VM kind for every variant, C included, and would hide the relay's own cost).
//   node bench/relay.mjs [iterations=100000] [cpu=0]
//   RELAY_ONLY=node|drain runs one Node variant (for valgrind --tool=callgrind instruction counts).
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { EventFd, FdWatcher } from "../dist/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const n = Number(process.argv[2] ?? 100_000);
const cpu = String(process.argv[3] ?? 0);
const exe = join(here, "..", "build", "bench-relay");
mkdirSync(dirname(exe), { recursive: true });
const cc = spawnSync("cc", ["-O2", "-o", exe, join(here, "relay.c")], { stdio: "inherit" });
if (cc.status !== 0) throw new Error("cc failed: the benchmark needs a C compiler (build-essential)");

const pin = (pid) => spawnSync("taskset", ["-a", "-cp", cpu, String(pid)], { stdio: "ignore" }).status === 0;

// Blocking eventfds: the C side blocks in read(); Node's side is nonblocking for its own reads only
// through the watcher (the same counter, so the C process sees normal blocking semantics on its fds).
function drive(a, b, extraPids) {
  return new Promise((resolve, reject) => {
    const child = spawn(exe, ["drive", String(n)], { stdio: ["ignore", "pipe", "inherit", a.fd, b.fd] });
    pin(child.pid);
    for (const p of extraPids) pin(p);
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`driver exit ${code}`))));
  });
}

function blockingPair() {
  return [new EventFd({ nonblocking: false }), new EventFd({ nonblocking: false })];
}

// 1. C floor: C driver + C echo relay.
const [ca, cb] = blockingPair();
const echo = spawn(exe, ["echo"], { stdio: ["ignore", "inherit", "inherit", ca.fd, cb.fd] });
const floor = await drive(ca, cb, [echo.pid]);
echo.kill();
ca.close();
cb.close();

const only = process.env.RELAY_ONLY;
const skipped = { median: NaN, p99: NaN, mean: NaN };
// 2. Node relay on the event loop.
let node = skipped;
if (only !== "drain") {
const [na, nb] = blockingPair();
// The watcher only reads when poll says readable, so a blocking fd never blocks the loop here.
const w = new FdWatcher(na.fd, () => {
  na.read();
  nb.write(1);
}).start();
pin(process.pid);
node = await drive(na, nb, []);
w.close();
na.close();
nb.close();
}

// 3. Node relay, eventfd mode: the watcher reads A in C (drainEventfd), the callback only signals B.
let drained = skipped;
if (only !== "node") {
const [da, db] = blockingPair();
const w2 = new FdWatcher(da.fd, () => {
  db.signal();
}, { drainEventfd: true }).start();
drained = await drive(da, db, []);
w2.close();
da.close();
db.close();
}

const us = (ns) => (ns / 1000).toFixed(2);
const rate = (r) => Math.round(1e9 / r.mean).toLocaleString("en");
console.log(`relay round trip, ${n} iterations, pinned to CPU ${cpu}`);
console.log("relay       median      p99         round trips/s");
console.log(`C floor     ${us(floor.median).padStart(7)} us  ${us(floor.p99).padStart(7)} us  ${rate(floor).padStart(10)}`);
console.log(`Node addon  ${us(node.median).padStart(7)} us  ${us(node.p99).padStart(7)} us  ${rate(node).padStart(10)}`);
console.log(`Node drain  ${us(drained.median).padStart(7)} us  ${us(drained.p99).padStart(7)} us  ${rate(drained).padStart(10)}   (FdWatcher drainEventfd + EventFd.signal)`);
console.log(`ratio (Node/C median): ${(node.median / floor.median).toFixed(2)}x, eventfd mode ${(drained.median / floor.median).toFixed(2)}x  (target <= 1.8x)`);
