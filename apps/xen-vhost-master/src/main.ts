#!/usr/bin/env node
// xen-vhost-master: serves Xen guests' virtio-mmio devices from vhost-user backends. See --help.
import { ConfigError, USAGE, parseCommandLine, type BridgeConfig } from "./config.js";
import { jsonLogger } from "./log.js";
import { openTransport } from "./transport.js";
import { checkEnvironment } from "./check.js";
import { Bridge } from "./bridge.js";
import { serveMetrics } from "./metrics.js";

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let config: BridgeConfig | "help";
  try {
    config = parseCommandLine(argv);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`xen-vhost-master: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (config === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  const log = jsonLogger(config.logLevel);
  if (config.check) {
    const r = await checkEnvironment(config, env, () => openTransport(env, log));
    process.stdout.write(`${r.lines.join("\n")}\n${r.ok ? "everything needed is in place" : "some things are missing (FAIL lines)"}\n`);
    return r.ok ? 0 : 1;
  }
  const transport = await openTransport(env, log);
  const bridge = new Bridge({ config, transport, logger: log, ...(env["XENSTORED_PATH"] ? { xenstorePath: env["XENSTORED_PATH"] } : {}) });
  let stopping: Promise<void> | undefined;
  const stop = (why: string): Promise<void> => {
    stopping ??= (async () => {
      log.info("shutting down", { reason: why });
      await bridge.close();
      transport.close();
      log.info("stopped");
    })();
    return stopping;
  };
  const exitCode = new Promise<number>((resolve) => {
    for (const sig of ["SIGTERM", "SIGINT"] as const) {
      process.once(sig, () => {
        // An orderly teardown takes milliseconds; a hard deadline guards against a wedged backend.
        setTimeout(() => process.exit(1), 2000).unref();
        void stop(sig).then(() => resolve(0));
      });
    }
  });
  try {
    await bridge.start();
  } catch (err) {
    log.error("start-up failed", { error: err });
    await stop("start-up failed");
    return 1;
  }
  if (config.metrics !== undefined) {
    const server = await serveMetrics(config.metrics, () => [...bridge.counters(), ...bridge.guestCounters(), ...bridge.shadowCounters()]);
    log.info("metrics", { where: config.metrics });
    void exitCode.then(() => server.close());
  }
  log.info("running", { devices: config.devices.length, discovery: config.discovery });
  return exitCode;
}

// Run when executed directly (not when imported by tests).
if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("/xen-vhost-master")) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`xen-vhost-master: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
