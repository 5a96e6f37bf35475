#!/usr/bin/env node
// vhost-device-rng: one virtio-rng device per socket until SIGINT/SIGTERM.
import { runDaemons, runMain, serveUntilStopped } from "@xen-vhost/vhost-user-backend";
import { parse, help } from "./cli.js";
import { RngDevice } from "./device.js";

async function main(argv: readonly string[]): Promise<number> {
  const args = parse(argv);
  if (args.help) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  const devices: RngDevice[] = [];
  const running = await runDaemons("vhost-device-rng", args.common, () => {
    const d = new RngDevice(args.rng);
    devices.push(d);
    return d;
  });
  running.logger.info("device.started", { sockets: running.daemons.length, rng: { ...args.rng } });
  return serveUntilStopped(running, () => devices.forEach((d) => d.close()));
}

runMain("vhost-device-rng", help, () => main(process.argv.slice(2)));
