#!/usr/bin/env node
// xen-monitor: watches every domain and echoes each change to the Xen console. See --help.
import { Xen } from "@xen-vhost/xen-sys";
import { USAGE, parseCommandLine, type MonitorConfig } from "./cli.js";
import { MonitorError } from "./error.js";
import { consoleLine, formatEvent, formatTable, jsonEvent } from "./format.js";
import { Monitor } from "./monitor.js";
import { XenStoreNames, noNames } from "./names.js";
import { openTransport } from "./transport.js";
import type { MonitorEvent } from "./diff.js";

/** Where the monitor writes (process streams by default; tests pass their own). */
export interface MainIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Resolves when the monitor should stop (default: SIGINT or SIGTERM). */
  stopSignal?: Promise<void>;
}

/** Consecutive failed polls after which the monitor gives up (exit 1). */
const MAX_FAILURES = 5;

const processIo: MainIo = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

function signalled(): Promise<void> {
  return new Promise((resolve) => {
    for (const sig of ["SIGINT", "SIGTERM"] as const) process.once(sig, () => resolve());
  });
}

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, io: MainIo = processIo): Promise<number> {
  let config: MonitorConfig | "help";
  try {
    config = parseCommandLine(argv);
  } catch (err) {
    const e = MonitorError.from(err);
    io.stderr(`xen-monitor: ${e.message}\n`);
    return e.exitCode;
  }
  if (config === "help") {
    io.stdout(USAGE);
    return 0;
  }
  const warn = (text: string): void => io.stderr(`xen-monitor: ${text}\n`);
  let opened;
  try {
    opened = await openTransport(env);
  } catch (err) {
    const e = MonitorError.from(err);
    warn(e.message);
    return e.exitCode;
  }
  const { transport } = opened;
  const xen = Xen.open({ transport });
  const names = config.xenstore ? await XenStoreNames.open(config.xenstorePath ?? env["XENSTORED_PATH"] ?? opened.xenstorePath, warn) : noNames;
  try {
    return await run(config, xen, new Monitor({ xen, names, scheduling: config.scheduling }), io, warn);
  } finally {
    names.close();
    transport.close();
  }
}

async function run(config: MonitorConfig, xen: Xen, monitor: Monitor, io: MainIo, warn: (t: string) => void): Promise<number> {
  let first: MonitorEvent[];
  try {
    first = await monitor.poll();
  } catch (err) {
    const e = MonitorError.from(err);
    warn(e.message);
    return e.exitCode;
  }
  if (config.once) {
    io.stdout(formatTable(monitor.current!.values()));
    return 0;
  }
  let toConsole = config.console;
  const emit = (events: MonitorEvent[]): void => {
    const now = new Date();
    for (const e of events) {
      io.stdout(config.json ? `${jsonEvent(e, now)}\n` : `${now.toISOString()} ${formatEvent(e)}\n`);
      if (!toConsole) continue;
      try {
        xen.consoleWrite(consoleLine(e));
      } catch (err) {
        // Changes still go to stdout; one warning, not one per event.
        toConsole = false;
        warn(`cannot write to the Xen console (${(err as Error).message}); stdout only from now on`);
      }
    }
  };
  emit(first);
  const stop = io.stopSignal ?? signalled();
  let stopped = false;
  void stop.then(() => (stopped = true));
  let failures = 0;
  while (!stopped) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([stop, new Promise((r) => (timer = setTimeout(r, config.interval * 1000)))]);
    clearTimeout(timer);
    if (stopped) break;
    try {
      emit(await monitor.poll());
      failures = 0;
    } catch (err) {
      failures++;
      const e = MonitorError.from(err);
      warn(`poll failed (${failures}/${MAX_FAILURES}): ${e.message}`);
      if (failures >= MAX_FAILURES) return e.kind === "Failed" ? 1 : e.exitCode;
    }
  }
  return 0;
}

// Run when executed directly (not when imported by tests).
if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("/xen-monitor")) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`xen-monitor: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
