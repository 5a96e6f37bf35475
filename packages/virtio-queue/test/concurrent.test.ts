// Driver in this thread, device busy-polling in a worker over the same memfds: ring indices cross threads
// through single aligned 16-bit stores and loads only. A torn or reordered index would make the device read
// stale descriptors (wrong sequence numbers) or the driver harvest garbage ids.
import { Worker } from "node:worker_threads";
import { describe, expect, it } from "vitest";
import type { MmapRegion } from "@xen-vhost/vm-memory";
import { DATA, setup } from "./helpers.js";

describe("driver and device in different threads", () => {
  it("2000 requests through a 64-entry queue, every answer correct and in order", async () => {
    using s = setup<number>(64);
    const count = 2_000;
    const regions = s.mem.regions.map((r) => ({ fd: (r as MmapRegion).fd, base: Number(r.guestBase.value), size: r.size }));
    const worker = new Worker(new URL("./device-worker.mjs", import.meta.url), {
      workerData: {
        regions,
        size: 64,
        descTable: s.driver.descTable.value,
        availRing: s.driver.availRing.value,
        usedRing: s.driver.usedRing.value,
        count,
      },
    });
    const done = new Promise<{ served: number; error?: string }>((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
    let sent = 0;
    let got = 0;
    const deadline = Date.now() + 60_000;
    while (got < count && Date.now() < deadline) {
      while (sent < count && s.driver.numFree >= 2) {
        const tmp = new Uint8Array(4);
        new DataView(tmp.buffer).setUint32(0, sent, true);
        // 4 bytes request, 4 bytes response per sequence number (1024 slots > 64 in flight)
        const req = DATA + 0x8_0000 + (sent % 1024) * 16;
        s.mem.write(req, tmp);
        s.driver.add({ readable: [{ addr: req, len: 4 }], writable: [{ addr: req + 4, len: 4 }] }, { token: sent });
        sent++;
      }
      for (const u of s.driver.harvest()) {
        expect(u.token).toBe(got);
        expect(u.len).toBe(4);
        const req = DATA + 0x8_0000 + (u.token! % 1024) * 16;
        const v = new DataView(s.mem.read(req + 4, 4).buffer).getUint32(0, true);
        expect(v).toBe((u.token! * 3) >>> 0);
        got++;
      }
    }
    const result = await done;
    await worker.terminate();
    expect(result.error).toBeUndefined();
    expect(result.served).toBe(count);
    expect(got).toBe(count);
  }, 90_000);
});
