#!/usr/bin/env node
// vhost-device-i2c: one virtio-i2c device per socket, all on the adapters of -l, until SIGINT/SIGTERM.
import { runDaemons, UsageError } from "@xen-vhost/vhost-user-backend";
import { parse, help } from "./cli.js";
import { openAdapters } from "./build.js";
import { I2cDevice } from "./device.js";

async function main(argv: readonly string[]): Promise<number> {
  let args;
  try {
    args = parse(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`vhost-device-i2c: ${err.message}\n\n${help}\n`);
      return 2;
    }
    throw err;
  }
  if (args.help) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  const adapters = openAdapters(args.adapters);
  let running;
  try {
    running = await runDaemons("vhost-device-i2c", args.common, () => new I2cDevice(adapters));
  } catch (err) {
    for (const a of adapters) a.close();
    throw err;
  }
  const r = running;
  r.logger.info("device.started", { sockets: r.daemons.length, adapters: adapters.map((a) => ({ name: a.name, addresses: a.addresses })) });
  const stop = (): void => {
    r.logger.info("device.stopping", {});
    r.close();
    for (const a of adapters) a.close();
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return new Promise((resolve) => {
    let open = r.daemons.length;
    for (const d of r.daemons)
      d.once("close", (cause) => {
        if (cause) r.logger.error("daemon stopped", { error: cause.message });
        if (--open === 0) resolve(cause ? 1 : 0);
      });
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vhost-device-i2c: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
