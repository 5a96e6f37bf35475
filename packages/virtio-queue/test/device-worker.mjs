// The device side in another thread, busy-polling the avail ring like a DPDK backend: it maps the same
// memfds (as a vhost-user backend would from SET_MEM_TABLE) and answers every request with seq * 3.
import { workerData, parentPort } from "node:worker_threads";
import { GuestMemory, MmapRegion } from "@xen-vhost/vm-memory";
import { Queue } from "../dist/index.js";

const { regions, size, descTable, availRing, usedRing, count } = workerData;
const mem = new GuestMemory(regions.map((r) => MmapRegion.fromFd(r.fd, r.base, r.size)));
const q = new Queue(mem);
q.size = size;
q.descTable = descTable;
q.availRing = availRing;
q.usedRing = usedRing;
q.ready = true;
let served = 0;
let spins = 0;
const out = new Uint8Array(4);
const view = new DataView(out.buffer);
try {
  while (served < count) {
    const c = q.pop();
    if (!c) {
      if (++spins > 2e9) throw new Error("device starved");
      continue;
    }
    const req = c.readAll();
    const seq = new DataView(req.buffer).getUint32(0, true);
    view.setUint32(0, (seq * 3) >>> 0, true);
    q.addUsed(c.head, c.writeAll(out));
    served++;
  }
  parentPort.postMessage({ served });
} catch (e) {
  parentPort.postMessage({ error: String(e), served });
} finally {
  mem.close();
}
