// A virtio-rng device model for a Xen guest, written only with the project's packages, no vhost-user:
//   @xen-vhost/ioreq-eventfd   IoreqServer (the guest's MMIO accesses) + XenNotifier (its interrupt line)
//   @xen-vhost/vm-memory-xen   the guest's RAM, foreign-mapped (where the virtqueue lives)
//   @xen-vhost/virtio-mmio     the virtio-mmio register file
//   @xen-vhost/virtio-queue    the device side of the split virtqueue
//
//   node dm-rng.mjs <domid> <mmio base> <spi> <ready-file> <served-file>
// Creates the device for a paused guest, touches <ready-file> (unpause the guest then), serves until the
// guest dies, and appends every byte it handed out to <served-file> (hex) so the scenario can find what the
// guest read in it. Prints "RIG: ok dm-rng ..." or "RIG: FAIL dm-rng ...".
import { randomBytes } from "node:crypto";
import { appendFileSync, writeFileSync } from "node:fs";
import { Xen, XenStore } from "@xen-vhost/xen-sys";
import { IoreqServer, XenNotifier } from "@xen-vhost/ioreq-eventfd";
import { discoverGuestRam, guestMemoryFromLayout, readConfiguredRamBytes } from "@xen-vhost/vm-memory-xen";
import { VirtioMmioTransport, VIRTIO_MMIO_WINDOW, VirtioFeature, bit } from "@xen-vhost/virtio-mmio";
import { Queue, VirtqueueError } from "@xen-vhost/virtio-queue";

const [domid, base, spi] = [Number(process.argv[2]), BigInt(process.argv[3]), Number(process.argv[4])];
const [readyFile, servedFile] = process.argv.slice(5);
// DM_LOG=1: the packages' debug logs on stdout (they log nothing by default).
const log = (level) => (msg, fields) => console.log(`RIG: dm-rng ${level} ${msg} ${JSON.stringify(fields ?? {}, (_, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v))}`);
const logger = process.env.DM_LOG ? { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") } : undefined;
writeFileSync(servedFile, "");

// 1. The guest's RAM, mapped before the guest runs (its sizes from the toolstack's memory/static-max).
const xen = Xen.open();
const xs = await XenStore.open();
const ramBytes = await readConfiguredRamBytes(xs, domid);
const memory = guestMemoryFromLayout(xen.transport, discoverGuestRam(xen, domid, ramBytes !== undefined ? { ramBytes } : {}));
xs.close();

// 2. The device: virtio 1.2 section 5.4, one request queue of device-writable buffers, no config space.
const queue = new Queue(memory, { maxSize: 256 });
let served = 0, requests = 0, badChains = 0;
const rng = {
  deviceId: 4,
  features: bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.RING_EVENT_IDX),
  numQueues: 1,
  queueMaxSize: () => 256,
  configSize: 0,
  readConfig: () => 0,
  writeConfig: () => {},
  activate(features, [q]) {
    // The transport has checked the rings' sizes and alignment; the Queue checks them against guest RAM.
    queue.size = q.size;
    queue.descTable = q.desc;
    queue.availRing = q.avail;
    queue.usedRing = q.used;
    queue.eventIdx = (features & bit(VirtioFeature.RING_EVENT_IDX)) !== 0n;
    queue.ready = true;
    queue.validate();
    setImmediate(drain); // buffers the driver added before DRIVER_OK come without a kick
  },
  reset: () => queue.reset(),
  notify: () => drain(),
};

// Fill every available buffer. With EVENT_IDX the driver kicks only when its avail idx passes the
// avail_event the device publishes, so the loop ends by publishing it (enableNotification) and looks again
// for buffers that raced with that. A malformed chain comes back as a VirtqueueError with its head and is
// returned empty, so one bad entry cannot wedge the queue.
function drain() {
  const before = requests + badChains;
  do {
    for (;;) {
      let chain;
      try {
        chain = queue.pop();
      } catch (e) {
        if (!(e instanceof VirtqueueError) || e.head === undefined) throw e;
        badChains++;
        queue.addUsed(e.head, 0);
        continue;
      }
      if (!chain) break;
      const data = randomBytes(chain.writableLength);
      queue.addUsed(chain.head, chain.writeAll(data));
      appendFileSync(servedFile, data.toString("hex"));
      served += data.length;
      requests++;
    }
  } while (queue.enableNotification());
  if (requests + badChains !== before && queue.needsNotification()) mmio.signalUsedBuffers();
}
const mmio = new VirtioMmioTransport(rng, { logger, validateQueue: (q) => (memory.checkRange(q.desc, 16 * q.size) ? undefined : "descriptor table outside guest RAM") });

// 3. Xen: an ioreq server forwards the window's accesses to the register file (QueueNotify included: an
// in-process model needs no ioeventfd hop), and the notifier turns the transport's interrupt level into
// XEN_DMOP_set_irq_level on the slot's SPI (level: virtio-mmio's line stays up until InterruptACK).
const server = IoreqServer.create({ xen, domid, restrictTransport: false, logger }); // false: we still poll getdomaininfo below
const notifier = new XenNotifier(server, { logger });
const irq = notifier.irqfd({ line: spi, trigger: "level" });
mmio.on("interrupt", (level) => (level ? irq.raise() : irq.deassert()));
const range = server.mapMmio(base, VIRTIO_MMIO_WINDOW, mmio);
console.log(`RIG: dm-rng ready: domain ${domid}, ioreq server ${server.id}, mmio 0x${base.toString(16)}, SPI ${spi}, RAM ${memory.regions.map((r) => `${r.guestBase}+${r.size}`).join(",")}`);
writeFileSync(readyFile, "");

// 4. The guest's end is ours: a destroyed domain stays "dying" while we hold its pages, so let go then.
let ticks = 0;
const poll = setInterval(() => {
  let gone = true;
  try {
    const d = xen.getDomainInfo(domid);
    gone = d.dying || d.shutdown;
  } catch {
    // NoSuchDomain: gone
  }
  if (!gone) {
    if (logger && ++ticks % 30 === 0) logger.info("alive", { ...server.stats, ...mmio.counters, served });
    return;
  }
  clearInterval(poll);
  const stats = server.stats;
  for (const release of [() => range.unmap(), () => irq.close(), () => notifier.close(), () => server.close(), () => memory.close(), () => xen.close()]) {
    try {
      release();
    } catch (e) {
      console.log(`RIG: dm-rng release: ${e.message}`);
    }
  }
  const ok = served > 0 && badChains === 0 && mmio.counters.badAccesses === 0;
  console.log(`RIG: ${ok ? "ok" : "FAIL"} dm-rng served ${served} bytes in ${requests} requests; ${mmio.counters.reads} reads, ${mmio.counters.writes} writes, ` +
    `${mmio.counters.notifies} notifies, ${mmio.counters.interrupts} interrupts, ${mmio.counters.badAccesses} bad accesses, ${badChains} bad chains; ioreq stats ${JSON.stringify(stats)}`);
  process.exitCode = ok ? 0 : 1;
}, 500);
