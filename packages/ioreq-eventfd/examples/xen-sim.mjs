// A device model on the Xen simulator: an ioreq server answering a guest vCPU's MMIO reads, and a virtio-mmio
// QueueNotify doorbell delivered to an eventfd (privcmd's kernel path, which the simulator emulates).
//   pnpm build && node examples/xen-sim.mjs
import { Xen } from "@xen-vhost/xen-sys";
import { startSimulator } from "@xen-vhost/xen-sim";
import { IoreqServer, XenNotifier } from "../dist/index.js";

const sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 16 << 20, vcpus: 1 }] });
const transport = sim.connect();
try {
  const server = IoreqServer.create({ xen: Xen.open({ transport }), domid: 1 });
  server.mapMmio(0x2000000n, 0x200, {
    read: (offset) => (offset === 0 ? 0x74726976 : offset === 4 ? 2 : 0), // "virt", version 2
    write: (offset, size, value) => console.log(`device write +0x${offset.toString(16)}/${size} = ${value}`),
  });
  const notifier = new XenNotifier(server);
  const kick = notifier.ioeventfd({ addr: 0x2000050n, len: 4, datamatch: 0n });
  console.log("notifier:", notifier.kind, "queue 0 doorbell:", kick.kind);
  sim.unpause(1);
  const guest = sim.startGuest({
    domid: 1,
    program: "mmio",
    args: { accesses: [{ op: "r", addr: "0x2000000" }, { op: "r", addr: "0x2000004" }, { op: "w", addr: "0x2000050", value: 0 }, { op: "w", addr: "0x2000070", value: 0xf }] },
  });
  console.log("guest read:", await guest.result); // [ '0x74726976', '0x2', null, null ]
  console.log("kicks:", kick.eventfd.read()); // 1n
  notifier.close();
  server.close(); // destroys the ioreq server in (simulated) Xen
} finally {
  transport.close();
  await sim.close();
}
