#!/usr/bin/env node
// vhost-device-gpio: one virtio-gpio device per socket, socket i on chip i of -l, until SIGINT/SIGTERM.
import { runDaemons, runMain, serveUntilStopped } from "@xen-vhost/vhost-user-backend";
import { parse, help } from "./cli.js";
import { openChips } from "./build.js";
import { GpioDevice } from "./device.js";
import { createInterface } from "node:readline";
import { simCommand } from "./sim-control.js";

async function main(argv: readonly string[]): Promise<number> {
  const args = parse(argv);
  if (args.help) {
    process.stdout.write(`${help}\n`);
    return 0;
  }
  const chips = openChips(args.chips);
  let running;
  try {
    running = await runDaemons("vhost-device-gpio", args.common, (i) => new GpioDevice(chips[i]!));
  } catch (err) {
    for (const c of chips) c.close();
    throw err;
  }
  const r = running;
  r.logger.info("device.started", { sockets: r.daemons.length, chips: chips.map((c) => ({ name: c.name, lines: c.ngpio })) });
  if (args.simStdin) {
    const rl = createInterface({ input: process.stdin });
    rl.on("line", (line) => {
      const err = simCommand(chips, line);
      if (err) r.logger.warn("sim-stdin: command refused", { error: err });
      else if (line.trim() !== "") r.logger.info("sim-stdin", { command: line.trim() });
    });
  }
  return serveUntilStopped(r, () => {
    for (const c of chips) c.close();
    process.stdin.destroy();
  });
}

runMain("vhost-device-gpio", help, () => main(process.argv.slice(2)));
