// A minimal IOREQ device model: node ioreq-dm.mjs <domid> <mmio base> <size> <ready-file>
// Serves a virtio-mmio register window with "no usable device" semantics (device id 0x1234: the guest's
// virtio_mmio registers a device no driver claims) and exits when the domain is gone.
// Prints "RIG: ioreq R|W off=... size=... -> value" per access and "RIG: ok ioreq-dm ..." at the end.
import { writeFileSync } from "node:fs";
import { Xen, XenError, IOREQ_TYPE, IOREQ_READ, STATE_IOREQ_READY, IOREQ_STATE_OFFSET } from "@xen-vhost/xen-sys";
import { AtomicAccess } from "@xen-vhost/vmm-sys-util";

const [domid, base, size] = [Number(process.argv[2]), BigInt(process.argv[3]), BigInt(process.argv[4])];
const readyFile = process.argv[5];
const STATE_IORESP_READY = 3;

// virtio-mmio v2 registers (virtio spec 1.2, 4.2.2); everything else reads 0, writes are recorded.
const regs = new Map([[0x000, 0x74726976], [0x004, 2], [0x008, 0x1234], [0x00c, 0x554d4551], [0x070, 0]]);
const writable = new Set([0x070, 0x014, 0x024, 0x030, 0x038, 0x044, 0x050, 0x064, 0x080, 0x084, 0x090, 0x094, 0x0a0, 0x0a4]);

const xen = Xen.open();
const nvcpus = xen.nrVcpus(domid);
const id = xen.createIoreqServer(domid);
const pages = xen.mapIoreqServerPages(domid, id);
xen.mapIoRangeToIoreqServer(domid, id, base, base + size - 1n);
xen.setIoreqServerState(domid, id, true); // writes each vCPU's vp_eport into its slot
const slots = new AtomicAccess(pages.buffer);
const u64 = new BigUint64Array(pages.buffer);
const u32 = new Uint32Array(pages.buffer);
const ec = xen.openEventChannels();
const portToVcpu = new Map();
for (let v = 0; v < nvcpus; v++) portToVcpu.set(ec.bindInterdomain(domid, u32[(v * 32 + 24) / 4]), v);
let served = 0, failures = 0;
console.log(`RIG: ioreq-dm ready: server ${id} for domain ${domid}, mmio 0x${base.toString(16)}+0x${size.toString(16)}, ${nvcpus} vCPU(s), ports ${[...portToVcpu.keys()]}`);
writeFileSync(readyFile, "");

ec.on("event", (port) => {
  const v = portToVcpu.get(port);
  if (v === undefined) return;
  const o = v * 32;
  const b = slots.load8(o + IOREQ_STATE_OFFSET); // state:4 | data_is_ptr:1 | dir:1 | df:1
  if ((b & 0xf) !== STATE_IOREQ_READY) return;
  const addr = u64[o / 8], sz = u32[(o + 20) / 4], type = slots.load8(o + 31);
  const dir = (b >> 5) & 1, dataIsPtr = (b >> 4) & 1;
  const off = Number(addr - base);
  if (type === IOREQ_TYPE.INVALIDATE) {
    // Broadcast to every ioreq server when guest memory is ballooned out: drop cached mappings (we keep
    // none) and acknowledge.
    console.log("RIG: ioreq invalidate (mapcache) acknowledged");
  } else if (type !== IOREQ_TYPE.COPY || dataIsPtr || u32[(o + 16) / 4] !== 1) {
    failures++;
    console.log(`RIG: FAIL ioreq unexpected request type ${type} data_is_ptr ${dataIsPtr} count ${u32[(o + 16) / 4]}`);
  } else if (dir === IOREQ_READ) {
    const val = regs.get(off) ?? 0;
    u64[o / 8 + 1] = BigInt(val);
    console.log(`RIG: ioreq R off=0x${off.toString(16).padStart(3, "0")} size=${sz} -> 0x${val.toString(16)}`);
  } else {
    const val = Number(u64[o / 8 + 1] & 0xffffffffn);
    if (writable.has(off)) regs.set(off, val);
    console.log(`RIG: ioreq W off=0x${off.toString(16).padStart(3, "0")} size=${sz} <- 0x${val.toString(16)}`);
  }
  if (type !== IOREQ_TYPE.INVALIDATE) served++;
  slots.store8(o + IOREQ_STATE_OFFSET, (b & 0xf0) | STATE_IORESP_READY); // seq-cst store: data is visible first
  ec.notify(port);
});

// The domain's end ends the device model. A destroyed domain stays "dying" (a zombie) for as long as we
// hold its ioreq page mapping and event channels, so dying/shutdown is the signal to let go, not ESRCH.
const poll = setInterval(() => {
  let gone = false;
  try {
    const d = xen.getDomainInfo(domid);
    gone = d.dying || d.shutdown;
  } catch (e) {
    if (!(e instanceof XenError && e.kind === "NoSuchDomain")) console.log(`RIG: FAIL ioreq-dm getDomainInfo: ${e.message}`);
    gone = true;
  }
  if (gone) {
    clearInterval(poll);
    ec.close();
    try { xen.unmap(pages.buffer); } catch { /* the domain is gone */ }
    xen.close();
    if (served > 0 && failures === 0) console.log(`RIG: ok ioreq-dm served ${served} guest accesses`);
    else console.log(`RIG: FAIL ioreq-dm served ${served} accesses, ${failures} failures`);
    process.exitCode = served > 0 && failures === 0 ? 0 : 1;
  }
}, 500);
