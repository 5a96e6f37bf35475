// virtio-net round trips through the simulator: guest driver (vCPU process) -> MMIO kicks and interrupt
// handling as ioreqs -> device model on xen-sys (NetDevice loopback) -> used ring, in foreign mode (the
// device maps all guest RAM) and grant mode (every ring and buffer access maps grant refs through gntdev).
// Prints figures and the same-run ratio; asserts nothing. `node bench/net.mjs [frames]` after `pnpm build`.
import { fileURLToPath } from "node:url";
import { Xen } from "@xen-vhost/xen-sys";
import { NetDevice, XenVirtioMmioDevice, startSimulator } from "../dist/index.js";

const frames = Number(process.argv[2] ?? 2000);
const program = fileURLToPath(new URL("./net-guest.mjs", import.meta.url));
const out = {};
for (const dma of ["foreign", "grant"]) {
  const sim = await startSimulator({ xenstore: false, domains: [{ domid: 1, ram: 16 << 20 }] });
  const xen = Xen.open({ transport: sim.connect() });
  const dev = new XenVirtioMmioDevice(xen, { domid: 1, base: 0x2000000n, irq: 33, dma, device: (m, s) => new NetDevice(m, s) });
  sim.unpause(1);
  out[dma] = await sim.startGuest({ domid: 1, program, args: { dma, frames: dma === "grant" ? Math.ceil(frames / 4) : frames } }).result;
  dev.close();
  xen.transport.close();
  await sim.close();
}
out.grantOverForeign = out.grant.usPerFrame / out.foreign.usPerFrame;
console.log(JSON.stringify(out, null, 2));
