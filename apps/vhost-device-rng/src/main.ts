#!/usr/bin/env node
// vhost-device-rng: one virtio-rng device per socket until SIGINT/SIGTERM.
import { runDaemons, UsageError } from "@xen-vhost/vhost-user-backend";
import { parse, help } from "./cli.js";
import { RngDevice } from "./device.js";

async function main(argv: readonly string[]): Promise<number> {
  let args;
  try {
    args = parse(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`vhost-device-rng: ${err.message}\n\n${help}\n`);
      return 2;
    }
    throw err;
  }
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
  const stop = (): void => {
    running.logger.info("device.stopping", {});
    running.close();
    for (const d of devices) d.close();
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return new Promise((resolve) => {
    let open = running.daemons.length;
    for (const d of running.daemons)
      d.once("close", (cause) => {
        if (cause) running.logger.error("daemon stopped", { error: cause.message });
        if (--open === 0) resolve(cause ? 1 : 0);
      });
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vhost-device-rng: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
