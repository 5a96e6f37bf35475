// A simulated guest's virtio-net or virtio-fs driver served by the repository's bridge (xen-vhost-master,
// shadow rings: the backend never maps Xen memory) from a stock backend: DPDK testpmd echoing frames, or QEMU's
// virtiofsd sharing a directory. Needs the built bridge (`pnpm turbo run build --filter=xen-vhost-master...`),
// dpdk-testpmd (Debian `dpdk`) or /usr/lib/qemu/virtiofsd (`qemu-system-common`, as root).
//   node examples/bridge-stock-backends.mjs net|fs
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startSimulator } from "@xen-vhost/xen-sim";

const kind = process.argv[2] === "fs" ? "fs" : "net";
const bridgeMain = fileURLToPath(new URL("../../../apps/xen-vhost-master/dist/main.js", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "xen-sim-bridge-"));
const sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 64 << 20 }] });
const children = [];
const start = (cmd, args, env, name) => {
  const c = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  c.stderr.on("data", (d) => process.env.VERBOSE && process.stderr.write(`[${name}] ${d}`));
  c.stdout.resume();
  children.push(c);
  return c;
};
const waitFor = async (what, cond, ms = 30_000) => {
  for (const end = Date.now() + ms; !cond(); await new Promise((r) => setTimeout(r, 50))) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
};
try {
  const sock = join(dir, `${kind}.sock`);
  if (kind === "net") {
    // io forwarding on a looped port: every frame the guest sends comes back (--stats-period keeps it running
    // without a terminal).
    start("dpdk-testpmd", ["-l", "0-1", "--no-huge", "-m", "256", "--no-pci", "--iova-mode=va", `--file-prefix=xsim${process.pid}`,
      "--vdev", `net_vhost0,iface=${sock},queues=1`, "--", "--forward-mode=io", "--port-topology=loop", "--auto-start",
      "--stats-period=30", "--nb-cores=1", "--rxq=1", "--txq=1", "--total-num-mbufs=16384"], {}, "testpmd");
  } else {
    mkdirSync(join(dir, "share"));
    writeFileSync(join(dir, "share", "hello.txt"), "hello from the host, through the bridge\n");
    start("/usr/lib/qemu/virtiofsd", [`--socket-path=${sock}`, "-o", `source=${join(dir, "share")}`, "-o", "sandbox=chroot", "-o", "cache=none", "-f"], {}, "virtiofsd");
  }
  await waitFor("the backend socket", () => existsSync(sock));
  // What xl writes for `virtio = ["type=virtio,device1, transport=mmio"]` (1a for fs).
  sim.addVirtioDevice({ domid: 1, devid: 0, type: kind === "net" ? "virtio,device1" : "virtio,device1a", base: 0x2000000n, irq: 33 });
  const bridge = start(process.execPath, [bridgeMain, "--socket-path", sock, "--name", kind], sim.env(), "bridge");
  await waitFor("the bridge (backend state Connected)", () => sim.xenstoreRead("/local/domain/0/backend/virtio/1/0/state") === "4");
  sim.unpause(1);
  const program = kind === "net" ? "virtio-net" : "virtio-fs";
  const args = kind === "net" ? { irq: 33, frames: 5, length: 80 } : { irq: 33, path: "hello.txt" };
  const g = sim.startGuest({ domid: 1, program, args, onLog: (l) => console.log(`[guest] ${l}`) });
  console.log("[guest] result:", await g.result);
  bridge.kill("SIGTERM");
} finally {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
}
