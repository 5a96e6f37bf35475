#!/usr/bin/env node
// `pnpm demo`: the seed's flow on a laptop, without Xen. A simulated Arm guest gets a virtio-mmio slot in
// xenstore (as xl writes it), the project's vhost-device-rng backend serves it (then vhost-device-i2c with
// the seed's RTC), and xen-vhost-master - started with the seed's command line - bridges the two. When
// Debian's qemu-storage-daemon is installed, a third slot is a virtio-blk disk served by that stock
// backend through the bridge's shadow rings (it has no XEN_MMAP). Prints, step by step, what each party
// did and what the guest saw. Every line above xen-sys's transport is the code that runs in dom0 on real Xen.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startSimulator } from "@xen-vhost/xen-sim";
import { hasQsd, startQsd } from "@xen-vhost/vhost-user-master/testing";

const here = dirname(fileURLToPath(import.meta.url));
const bridgeMain = join(here, "..", "dist", "main.js");
const rngMain = join(here, "..", "..", "vhost-device-rng", "dist", "main.js");
const i2cMain = join(here, "..", "..", "vhost-device-i2c", "dist", "main.js");
const mapper = join(here, "sim-region-mapper.mjs");
const say = (who, msg) => console.log(`${`[${who}]`.padEnd(10)} ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function start(who, script, args, env, show) {
  const child = spawn(process.execPath, [script, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let buf = "";
  const onData = (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const o = JSON.parse(line);
        if (show(o)) say(who, `${o.msg}${o.device ? ` (${o.device})` : ""}${extra(o)}`);
      } catch {
        if (line.trim()) say(who, line);
      }
    }
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  return child;
}

function extra(o) {
  const keep = ["mode", "socket", "deviceId", "base", "irq", "features", "protocolFeatures", "queues", "kind", "reason", "banks"];
  const parts = keep.filter((k) => o[k] !== undefined).map((k) => `${k}=${typeof o[k] === "object" ? JSON.stringify(o[k]) : o[k]}`);
  return parts.length ? `: ${parts.join(" ")}` : "";
}

// Each bridge serves one device type and sees every slot: show only what it says about its own device
// (and what is about no device in particular).
const mine = (key) => (o) => o.level !== "debug" && (o.device ?? o.key ?? key) === key;

async function waitFor(what, cond, ms = 20_000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const dir = mkdtempSync(join(tmpdir(), "xen-vhost-demo-"));
const sim = await startSimulator({ domains: [{ domid: 1, name: "demo-guest", ram: 64 << 20, vcpus: 1 }] });
const children = [];
const stops = [];
try {
  const env = sim.env();
  say("xl", `created domain 1 "demo-guest" paused: 64 MiB RAM at 0x40000000, 1 vCPU (simulated Xen 4.17, arm64)`);
  const path = sim.addVirtioDevice({ domid: 1, devid: 0, type: "virtio,device4", base: 0x2000000n, irq: 33 });
  say("xl", `wrote ${path}: type virtio,device4 (rng), base 0x2000000, irq 33`);

  const sock = join(dir, "rng.sock");
  say("dom0", `vhost-device-rng -s ${sock} --xen-mapper <vm-memory-xen on the simulator>`);
  const rng = start("backend", rngMain, ["-s", sock, "--xen-mapper", mapper], env, (o) => o.level !== "debug");
  children.push(rng);
  await waitFor("the backend's socket", () => existsSync(`${sock}0`));

  say("dom0", `xen-vhost-master --socket-path ${sock}0 --name rng`);
  const bridge = start("bridge", bridgeMain, ["--socket-path", `${sock}0`, "--name", "rng"], env, mine("virtio/1/0"));
  children.push(bridge);
  await waitFor("the device to be served", () => sim.xenstoreRead(`${path}/state`) === "4");
  say("xenstore", `${path}/state = 4 (Connected)`);

  sim.unpause(1);
  say("xl", "unpaused domain 1; its vCPU probes the virtio-mmio window");
  const guest = sim.startGuest({
    domid: 1,
    program: "virtio-rng",
    args: { reads: 4, bytes: 32, irq: 33 },
    onLog: (l) => say("guest", l),
  });
  const result = await guest.result;
  say("guest", `read ${result.samples.length} x 32 random bytes, ${result.interrupts} interrupt(s) on SPI 33`);

  // The seed's own device: vhost-device-i2c with a DS1338 RTC at 0x20, and the seed's exact command line.
  const i2cPath = sim.addVirtioDevice({ domid: 1, devid: 1, type: "virtio,device22", base: 0x2000200n, irq: 34 });
  say("xl", `wrote ${i2cPath}: type virtio,device22 (i2c), base 0x2000200, irq 34`);
  const i2cSock = join(dir, "vi2c.sock");
  say("dom0", `vhost-device-i2c -s ${i2cSock} -l sim:rtc@0x20 --xen-mapper <vm-memory-xen on the simulator>`);
  children.push(start("backend", i2cMain, ["-s", i2cSock, "-l", "sim:rtc@0x20", "--xen-mapper", mapper], env, (o) => o.level !== "debug"));
  await waitFor("the i2c backend's socket", () => existsSync(`${i2cSock}0`));
  say("dom0", `xen-vhost-master --socket-path ${i2cSock}0 --name i2c`);
  const bridge2 = start("bridge", bridgeMain, ["--socket-path", `${i2cSock}0`, "--name", "i2c"], env, mine("virtio/1/1"));
  children.push(bridge2);
  await waitFor("the i2c device to be served", () => sim.xenstoreRead(`${i2cPath}/state`) === "4");
  say("xenstore", `${i2cPath}/state = 4 (Connected)`);
  const rtc = await sim.startGuest({ domid: 1, program: join(here, "guest-rtc.mjs"), args: { base: "0x2000200", irq: 34 }, onLog: (l) => say("guest", l) }).result;
  say("guest", `the RTC says ${rtc.time}; the host clock says ${new Date().toISOString().slice(0, 19).replace("T", " ")} UTC`);

  // A stock backend nobody here wrote: Debian's qemu-storage-daemon exporting a raw image as vhost-user-blk.
  // It cannot map Xen guest memory, so the bridge copies each request between the guest's ring and a
  // shadow ring in memfd memory it shares with qsd (shadow mode, chosen because qsd lacks XEN_MMAP).
  const bridges = [bridge, bridge2];
  if (hasQsd) {
    const diskPath = sim.addVirtioDevice({ domid: 1, devid: 2, type: "virtio,device2", base: 0x2000400n, irq: 35 });
    say("xl", `wrote ${diskPath}: type virtio,device2 (blk), base 0x2000400, irq 35`);
    const qsd = await startQsd({ sectors: 8192 });
    stops.push(() => qsd.stop());
    say("dom0", `qemu-storage-daemon --blockdev driver=file,filename=<4 MiB image with known sectors> --export type=vhost-user-blk,addr.path=${qsd.socket}`);
    say("dom0", `xen-vhost-master --socket-path ${qsd.socket} --name blk`);
    const bridge3 = start("bridge", bridgeMain, ["--socket-path", qsd.socket, "--name", "blk"], env, mine("virtio/1/2"));
    children.push(bridge3);
    bridges.push(bridge3);
    await waitFor("the disk to be served", () => sim.xenstoreRead(`${diskPath}/state`) === "4");
    say("xenstore", `${diskPath}/state = 4 (Connected)`);
    const disk = await sim.startGuest({ domid: 1, program: join(here, "guest-disk.mjs"), args: { base: "0x2000400", irq: 35 }, onLog: (l) => say("guest", l) }).result;
    say("guest", `read ${disk.sectors.length} known sectors, 4 KiB write round trip ${disk.roundTrip ? "intact" : "BROKEN"}, ${disk.interrupts} interrupt(s) on SPI 35`);
  } else {
    say("dom0", "qemu-storage-daemon is not installed (Debian: qemu-system-common): skipping the stock-backend disk");
  }

  for (const b of bridges) b.kill("SIGTERM");
  await waitFor("the bridges to stop", () => bridges.every((b) => b.exitCode !== null), 5000);
  say("dom0", `xen-vhost-master stopped (exit ${bridge.exitCode}): ioreq server destroyed, mappings released`);
  console.log("\nDone. On real Xen the same commands (a backend and a bridge per device type) run in dom0; see apps/xen-vhost-master/README.md.");
} catch (err) {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
} finally {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  for (const stop of stops) await stop();
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
}
