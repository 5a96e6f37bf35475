// The TypeScript side of the "perf" scenario: node perf-dm.mjs <domid> <mmio base> <size> <ready-file>
// The same device as perf-cdm.c, built the way the bridge builds one: IoreqServer (create, map, enable, bind,
// the ioreq state machine on Node's loop) serving the window, XenNotifier's ioeventfd on QueueNotify (the
// userspace relay: the 6.1 kernel has no privcmd ioeventfd) turning doorbell writes into eventfd kicks.
// Offset 0x000 reads the virtio magic, a write to 0x1fc ends the run. Prints "RIG: ..." lines.
import { writeFileSync } from "node:fs";
import { Xen, XenError } from "@xen-vhost/xen-sys";
import { IoreqServer, XenNotifier } from "@xen-vhost/ioreq-eventfd";

const [domid, base, size] = [Number(process.argv[2]), BigInt(process.argv[3]), Number(process.argv[4])];
const readyFile = process.argv[5];
const MAGIC = 0x74726976;

const xen = Xen.open();
const warnings = [];
const logger = { debug() {}, info() {}, warn: (m, f) => warnings.push(m), error: (m, f) => console.log(`RIG: perf-dm error ${m} ${String(f?.err ?? "")}`) };
// Not restricted: the same handle polls the domain's state below.
const server = IoreqServer.create({ xen, domid, restrictTransport: false, logger });
let reads = 0, writes = 0, finished = false;
server.mapMmio(base, size, {
  read: (offset) => {
    reads++;
    return offset === 0 ? MAGIC : 0;
  },
  write: (offset) => {
    writes++;
    if (offset === 0x1fc) setImmediate(finish);
  },
});
const notifier = new XenNotifier(server);
const kick = notifier.ioeventfd({ addr: base + 0x50n, len: 4, datamatch: 0n });
console.log(`RIG: perf-dm ready: server ${server.id} for domain ${domid}, ${server.vcpus} vCPU(s), doorbell ${kick.kind}`);
writeFileSync(readyFile, "");

function finish(cause = "end of run") {
  if (finished) return;
  finished = true;
  clearInterval(poll);
  const kicks = kick.eventfd.read() ?? 0n;
  const s = server.stats;
  notifier.close();
  server.close();
  xen.close();
  console.log(
    `RIG: perf-dm served reads=${reads} writes=${writes} doorbells=${s.doorbells} kicks=${kicks} handled=${s.handled} ` +
      `spurious=${s.spurious} unmapped=${s.unmapped} warnings=${warnings.length} (${cause})`,
  );
  process.exitCode = cause === "end of run" ? 0 : 1;
}

// A guest that dies early ends the model too (a dying domain is kept as a zombie while we map its pages).
const poll = setInterval(() => {
  try {
    const d = xen.getDomainInfo(domid);
    if (d.dying || d.shutdown) finish("domain went away");
  } catch (e) {
    finish(e instanceof XenError && e.kind === "NoSuchDomain" ? "domain went away" : `getDomainInfo: ${e.message}`);
  }
}, 500);
