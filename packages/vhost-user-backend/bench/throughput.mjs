// Round trips through a real vhost-user back-end: a daemon (in this process) with an echo device, a test
// front-end on a real socket, memfd memory, eventfd kicks and calls, virtio-queue on both sides.
// Prints chains/s and MB/s for a few buffer sizes; run after `pnpm build`.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { VhostUserDaemon } from "../dist/index.js";
import { TestFrontend } from "../dist/testing/index.js";

const device = {
  name: "echo", numQueues: 1, maxQueueSize: 256, features: (1n << 32n) | (1n << 29n),
  handleQueue(v) {
    for (let c = v.pop(); c; c = v.pop()) v.addUsed(c.head, c.writeAll(c.readAll()));
  },
};

const dir = mkdtempSync(join(tmpdir(), "vub-bench-"));
const path = join(dir, "b.sock");
const daemon = new VhostUserDaemon(device, { socket: path }).start();
const mem = GuestMemory.fromRanges([[0, 0x400_0000]]);
const fe = TestFrontend.connect(path);
await fe.negotiate();
await fe.setMemTable(mem);
const ring = await fe.setupRing(mem, 0, 0x1000n, 256, { eventIdx: true });

for (const size of [64, 4096, 65536]) {
  const batch = 64;
  const total = size >= 65536 ? 4000 : 20000;
  let done = 0;
  const t0 = process.hrtime.bigint();
  while (done < total) {
    for (let i = 0; i < batch; i++) {
      const at = 0x10_0000 + i * 2 * size;
      ring.driver.add({ readable: [{ addr: at, len: size }], writable: [{ addr: at + size, len: size }] }, { publish: false });
    }
    ring.driver.publish();
    ring.kick.write(1);
    let got = 0;
    while (got < batch) {
      got += ring.driver.harvest().length;
      if (got < batch) await new Promise((r) => setImmediate(r));
    }
    done += batch;
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`${String(size).padStart(6)} B chains: ${(done / s).toFixed(0).padStart(8)} chains/s  ${((done * size) / s / 1e6).toFixed(1).padStart(8)} MB/s (copy in + out)`);
}

ring.kick.close();
ring.call.close();
fe.close();
daemon.close();
mem.close();
rmSync(dir, { recursive: true, force: true });
