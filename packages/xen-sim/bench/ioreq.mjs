// Round-trip latency of one MMIO read: guest vCPU process -> ioreq -> device model on xen-sys over
// SimTransport (Node event loop) -> IORESP_READY -> vCPU. Prints figures; asserts nothing.
import { AtomicAccess, fence } from "@xen-vhost/vmm-sys-util";
import { IoReq, IOREQ_STATE_OFFSET, STATE_IOREQ_READY, STATE_IORESP_READY, Xen } from "@xen-vhost/xen-sys";
import { startSimulator } from "../dist/index.js";

const N = Number(process.argv[2] ?? 20000);
const BASE = 0x2000000n;
const sim = await startSimulator({ xenstore: false, domains: [{ domid: 1, ram: 4 << 20 }] });
const xen = Xen.open({ transport: sim.connect() });
const id = xen.createIoreqServer(1);
const pages = xen.mapIoreqServerPages(1, id).buffer;
xen.mapIoRangeToIoreqServer(1, id, BASE, BASE + 0xfn);
xen.setIoreqServerState(1, id, true);
const ev = xen.openEventChannels();
const port = ev.bindInterdomain(1, IoReq.read(new DataView(pages), 0).vp_eport);
const slot = new AtomicAccess(pages, 0, 32);
let served = 0;
ev.on("event", (p) => {
  if (p !== port) return;
  const b = slot.load8(IOREQ_STATE_OFFSET);
  if ((b & 0xf) !== STATE_IOREQ_READY) return;
  slot.store64(8, 0x1234n);
  fence();
  slot.store8(IOREQ_STATE_OFFSET, (b & ~0xf) | STATE_IORESP_READY);
  ev.notify(port);
  served++;
});
sim.unpause(1);
const t0 = process.hrtime.bigint();
const g = sim.startGuest({ domid: 1, program: "mmio-loop", args: { count: N, addr: "0x2000000" } });
const r = await g.result;
const t1 = process.hrtime.bigint();
console.log(JSON.stringify({ ioreqs: N, served, guestReport: r, counters: g.counters, wallMsIncludingSpawn: Number(t1 - t0) / 1e6 }));
ev.close();
xen.transport.close();
await sim.close();
