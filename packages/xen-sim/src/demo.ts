// `pnpm demo`: boots a simulated Arm guest, puts a virtio-rng device model (on the xen-sys API, through
// SimTransport) at the toolstack's virtio-mmio slot and lets the guest probe it and read random bytes,
// printing what each side saw. Once the bridge exists, it takes the device model's place.
import { Xen, XenStore, socketConnector } from "@xen-vhost/xen-sys";
import { startSimulator } from "./simulator.js";
import { XenVirtioMmioDevice } from "./devmodel/xen-virtio-mmio.js";
import { BlkDevice, RngDevice } from "./devmodel/devices.js";
import { GUEST_VIRTIO_MMIO_BASE, GUEST_VIRTIO_MMIO_SPI_FIRST } from "./layout.js";
import { registerName } from "@xen-vhost/virtio-mmio";

export interface DemoOptions {
  /** Where to print (default console.log; the package itself never prints). */
  print?: (line: string) => void;
  /** Show this many ioreqs of the device model (default 24). */
  showAccesses?: number;
}

export async function runDemo(options: DemoOptions = {}): Promise<void> {
  const print = options.print ?? ((l: string) => console.log(l));
  const show = options.showAccesses ?? 24;
  const base = GUEST_VIRTIO_MMIO_BASE;
  const irq = GUEST_VIRTIO_MMIO_SPI_FIRST;
  print("== xen-sim demo: a simulated Xen on this machine ==");
  const sim = await startSimulator({ domains: [{ domid: 1, name: "demo-guest", ram: 64 << 20, vcpus: 1 }] });
  try {
    print(`[xl]   created d1 "demo-guest" paused (RAM0 64 MiB at 0x40000000), simulator socket ${sim.socketPath}`);
    const bpath = sim.addVirtioDevice({ domid: 1, devid: 0, type: "virtio,device4", base, irq });
    print(`[xl]   wrote ${bpath} (type virtio,device4, base 0x${base.toString(16)}, irq ${irq})`);

    const xen = Xen.open({ transport: sim.connect() });
    for (const d of xen.listDomains()) {
      print(`[dom0] domain ${d.domid}: ${d.paused ? "paused" : "running"}, ${Number(d.totPages) / 256} MiB, ${d.onlineVcpus} vCPU, arch ${d.arch.arch}`);
    }
    if (sim.xenstorePath) {
      const xs = await XenStore.open({ connector: socketConnector(sim.xenstorePath) });
      const type = await xs.read(`${bpath}/type`);
      print(`[dom0] xenstore ${bpath}/type = ${type}`);
      await xs.write(`${bpath}/state`, "2");
      print("[dom0] backend state -> 2 (InitWait)");
      xs.close();
    }
    let seen = 0;
    const dev = new XenVirtioMmioDevice(xen, {
      domid: 1, base, irq, device: (m, s) => new RngDevice(m, s),
      onAccess: (a) => {
        if (seen++ < show) print(`[dm]     ioreq ${a.dir} ${registerName(a.offset).padEnd(18)} size ${a.size} ${a.dir === "R" ? "->" : "<-"} 0x${a.value.toString(16)}`);
        else if (seen === show + 1) print("[dm]     ... (more ioreqs)");
      },
    });
    print(`[dm]   ioreq server ${dev.serverId} for d1: mmio 0x${base.toString(16)}-0x${(base + 0x1ffn).toString(16)}, irq ${irq}`);
    sim.unpause(1);
    print("[xl]   unpaused d1");
    const g = sim.startGuest({ domid: 1, program: "virtio-rng", args: { base: `0x${base.toString(16)}`, irq, reads: 3, bytes: 16 }, onLog: (m) => print(`[guest] ${m}`) });
    const r = (await g.result) as { interrupts: number };
    print(`[guest] done: ${r.interrupts} interrupts taken`);
    dev.close();

    print("-- now a virtio-blk disk in the same slot --");
    const blkDev = new XenVirtioMmioDevice(xen, { domid: 1, base, irq, device: (m, s) => new BlkDevice(m, s, 2048) });
    const g2 = sim.startGuest({ domid: 1, program: "virtio-blk", args: { base: `0x${base.toString(16)}`, irq }, onLog: (m) => print(`[guest] ${m}`) });
    await g2.result;
    blkDev.close();
    xen.transport.close();
  } finally {
    await sim.close();
  }
  print("== done ==");
}
