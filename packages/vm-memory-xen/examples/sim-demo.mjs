// Runnable without Xen: a simulated guest (xen-sim) writes and grants memory; the bridge side maps it with
// the same calls it makes on real Xen. `pnpm build` in this package and in xen-sim first, then
// `node examples/sim-demo.mjs`.
import { Xen } from "@xen-vhost/xen-sys";
import { startSimulator } from "@xen-vhost/xen-sim";
import { Guest } from "@xen-vhost/xen-sim/guest";
import { XenGrantRegion, XenGuestMemory, discoverGuestRam, guestMemoryFromLayout } from "../dist/index.js";

const sim = await startSimulator({ domains: [{ domid: 1, ram: 16 << 20, vcpus: 1 }] });
const transport = sim.connect();
const xen = Xen.open({ transport });
const guest = Guest.attach(sim.socketPath, 1);
try {
  guest.memory.write(0x4000_1000, new TextEncoder().encode("written by the guest"));
  const layout = discoverGuestRam(xen, 1, { ramBytes: 16n << 20n }); // RAM0 at 0x4000_0000
  const ram = guestMemoryFromLayout(transport, layout);              // foreign mapping (MMAPBATCH_V2)
  console.log("foreign:", new TextDecoder().decode(ram.read(0x4000_1000, 20)));

  const { dma } = guest.grants.grantRange(0x4000_1000n, 20, { domid: 0 }); // 1 << 63 | gref << 12
  const grants = new XenGuestMemory([XenGrantRegion.forRefs(transport, 1, 0, 1024)]); // NO_ADVANCE_MAP
  console.log("grant:  ", new TextDecoder().decode(grants.read(dma, 20)), `(at 0x${dma.toString(16)})`);
  grants.close();
  ram.close();
} finally {
  guest.close();
  xen.close();
  transport.close();
  await sim.close();
}
