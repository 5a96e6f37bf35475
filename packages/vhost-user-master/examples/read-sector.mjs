import { Frontend, fromCRegion } from "@xen-vhost/vhost-user-master";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue } from "@xen-vhost/virtio-queue";
import { EventFd } from "@xen-vhost/vmm-sys-util";

const fe = await Frontend.connect(process.argv[2] ?? "/tmp/vhost-blk.sock", { timeoutMs: 3000 });
await fe.negotiate({ features: (1n << 32n) | (1n << 30n) });   // VERSION_1 | PROTOCOL_FEATURES
const mem = GuestMemory.fromRanges([[0, 0x40_0000]]);          // 4 MiB of memfd "guest RAM"
await fe.setMemory(mem.vhostUserRegions().map(fromCRegion));
const q = DriverQueue.create(mem, 0, 64);                      // split ring at guest address 0
const kick = new EventFd(), call = new EventFd();
const ua = (a) => fe.userAddrOf(a.value);
await fe.setupVring(0, { num: 64, desc: ua(q.descTable), avail: ua(q.availRing), used: ua(q.usedRing), kick: kick.fd, call: call.fd });
await fe.driverOk();
mem.write(0x10_0000, new Uint8Array(16));                       // virtio_blk_outhdr: type IN, sector 0
q.add({ readable: [{ addr: 0x10_0000, len: 16 }], writable: [{ addr: 0x20_0000, len: 512 }, { addr: 0x30_0000, len: 1 }] });
kick.write(1);
while (!q.hasUsed()) await new Promise((r) => setTimeout(r, 1));
console.log("status", mem.read(0x30_0000, 1)[0], "sector 0:", Buffer.from(mem.read(0x20_0000, 512)).toString("hex"));
fe.close(); mem.close(); kick.close(); call.close();
