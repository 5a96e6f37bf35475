// 4 KiB random reads at queue depth 1 against qemu-storage-daemon's vhost-user-blk export, through this
// front-end, packages/virtio-queue and packages/vm-memory. Prints figures; asserts nothing.
// Usage: pnpm bench  (after pnpm build; needs qemu-storage-daemon). Env: SECONDS (default 3).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Frontend, fromCRegion } from "@xen-vhost/vhost-user-master";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue } from "@xen-vhost/virtio-queue";
import { EventFd, FdWatcher, PollEvents } from "@xen-vhost/vmm-sys-util";

const seconds = Number(process.env.SECONDS ?? 3);
const dir = mkdtempSync(join(tmpdir(), "qsd-bench-"));
const image = join(dir, "disk.raw");
const socket = join(dir, "blk.sock");
const SIZE = 64 << 20;
writeFileSync(image, new Uint8Array(SIZE));
const qsd = spawn("qemu-storage-daemon", [
  "--blockdev", `driver=file,node-name=f,filename=${image},cache.direct=off`, "--blockdev", "driver=raw,node-name=d,file=f",
  "--export", `type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=${socket},writable=on`,
], { stdio: "ignore" });
for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 50));

const fe = await Frontend.connect(socket, { timeoutMs: 3000 });
await fe.negotiate({ features: (1n << 32n) | (1n << 30n) });
const mem = GuestMemory.fromRanges([[0, 0x40_0000]]);
await fe.setMemory(mem.vhostUserRegions().map(fromCRegion));
const q = DriverQueue.create(mem, 0, 64);
const kick = new EventFd();
const call = new EventFd();
const ua = (a) => fe.userAddrOf(a.value);
await fe.setupVring(0, { num: 64, desc: ua(q.descTable), avail: ua(q.availRing), used: ua(q.usedRing), kick: kick.fd, call: call.fd });
await fe.driverOk();

const sectors = SIZE / 512;
const hdr = new Uint8Array(16);
const hv = new DataView(hdr.buffer);
let done = 0;
const lat = [];
let t0 = 0;
const submit = () => {
  hv.setBigUint64(8, BigInt(Math.floor(Math.random() * (sectors / 8)) * 8), true);
  mem.write(0x10_0000, hdr);
  q.add({ readable: [{ addr: 0x10_0000, len: 16 }], writable: [{ addr: 0x20_0000, len: 4096 }, { addr: 0x30_0000, len: 1 }] });
  t0 = performance.now();
  kick.write(1);
};
const end = performance.now() + seconds * 1000;
await new Promise((resolve) => {
  // completion by the call eventfd on the event loop, as a device model would
  const w = new FdWatcher(call.fd, () => {
    call.read();
    while (q.getUsed()) {
      lat.push(performance.now() - t0);
      done++;
      if (performance.now() >= end) {
        w.close();
        resolve();
        return;
      }
      submit();
    }
  });
  w.start(PollEvents.READABLE);
  submit();
});
lat.sort((a, b) => a - b);
const pct = (p) => (lat[Math.floor((lat.length - 1) * p)] * 1000).toFixed(1);
console.log(`qsd vhost-user-blk 4KiB randread QD1: ${Math.round(done / seconds)} IOPS over ${seconds}s, latency us p50 ${pct(0.5)} p99 ${pct(0.99)}`);
fe.close();
mem.close();
kick.close();
call.close();
qsd.kill("SIGTERM");
await new Promise((r) => qsd.once("exit", r));
rmSync(dir, { recursive: true, force: true });
