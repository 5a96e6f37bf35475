// Runnable: `pnpm build && node examples/quickstart.mjs` (Linux, no Xen needed). A simulated Xen with one
// guest; a device model on the xen-sys API serves it a virtio-net loopback; the guest's driver sends frames
// and gets them back; the guest publishes a value through its xenbus and dom0's XenStore watch sees it.
import { Xen, XenStore, socketConnector } from "@xen-vhost/xen-sys";
import { NetDevice, XenVirtioMmioDevice, startSimulator } from "@xen-vhost/xen-sim";

const sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 16 << 20 }] }); // paused, like xl create -p
try {
  const xen = Xen.open({ transport: sim.connect() }); // what the bridge does on real Xen, over the simulator
  const dev = new XenVirtioMmioDevice(xen, { domid: 1, base: 0x2000000n, irq: 33, device: (mem, signal) => new NetDevice(mem, signal) });
  const xs = await XenStore.open({ connector: socketConnector(sim.xenstorePath) });
  xs.on("watch", (e) => e.token === "data" && console.log(`[dom0]  watch fired: ${e.path}`));
  await xs.watch("/local/domain/1/data", { token: "data" });
  sim.unpause(1);
  const net = sim.startGuest({ domid: 1, program: "virtio-net", args: { irq: 33, frames: 3 }, onLog: (l) => console.log(`[guest] ${l}`) });
  console.log("[guest] result:", await net.result);
  const bus = sim.startGuest({ domid: 1, program: "xenbus", args: { publish: { "data/ready": "1" }, tryWrite: ["name"] } });
  console.log("[guest] xenbus:", await bus.result); // writing libxl's read-only "name" is refused: EACCES
  console.log(`[dom0]  /local/domain/1/data/ready = ${await xs.read("/local/domain/1/data/ready")}`);
  xs.close();
  dev.close();
  xen.transport.close();
} finally {
  await sim.close();
}
