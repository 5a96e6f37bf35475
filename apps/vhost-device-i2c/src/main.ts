#!/usr/bin/env node
// vhost-device-i2c: one virtio-i2c device per socket, all on the adapters of -l, until SIGINT/SIGTERM.
import { runDaemons, runMain, serveUntilStopped } from "@xen-vhost/vhost-user-backend";
import { parse, help } from "./cli.js";
import { openAdapters } from "./build.js";
import { I2cDevice } from "./device.js";

async function main(argv: readonly string[]): Promise<number> {
  const args = parse(argv);
  if (args.help) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  const adapters = openAdapters(args.adapters);
  let running;
  try {
    running = await runDaemons("vhost-device-i2c", args.common, () => new I2cDevice(adapters, { inflight: args.inflight }));
  } catch (err) {
    for (const a of adapters) a.close();
    throw err;
  }
  running.logger.info("device.started", { sockets: running.daemons.length, adapters: adapters.map((a) => ({ name: a.name, addresses: a.addresses })) });
  return serveUntilStopped(running, () => adapters.forEach((a) => a.close()));
}

runMain("vhost-device-i2c", help, () => main(process.argv.slice(2)));
