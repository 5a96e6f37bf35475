// What every vhost-device daemon shares on its command line (rust-vmm vhost-device style): `-s SOCKET -c N`
// serving SOCKET0..SOCKET(N-1), `--client` to connect instead of listen, `--xen-mapper MODULE` to plug in
// Xen foreign/grant mapping, `--log-level`; and running one daemon per socket until SIGINT/SIGTERM.
import type { ParseArgsConfig } from "node:util";
import type { Logger } from "@xen-vhost/vmm-sys-util";
import type { VhostUserDevice } from "./device.js";
import { VhostUserDaemon, socketPaths } from "./daemon.js";
import { jsonLogger } from "./json-logger.js";
import { loadXenRegionMapper } from "./mapper-loader.js";
import type { XenRegionMapper } from "./memory.js";

/** node:util parseArgs options common to the daemons. */
export const commonOptions = {
  "socket-path": { type: "string", short: "s" },
  "socket-count": { type: "string", short: "c", default: "1" },
  client: { type: "boolean", default: false },
  "xen-mapper": { type: "string" },
  "xen-mapper-option": { type: "string", multiple: true },
  "log-level": { type: "string", default: "info" },
  help: { type: "boolean", short: "h", default: false },
} as const satisfies NonNullable<ParseArgsConfig["options"]>;

/** Help text for the common options. */
export const commonHelp = `  -s, --socket-path <PATH>   vhost-user socket; suffixed 0..N-1 (PATH0, PATH1, ...)
  -c, --socket-count <N>     number of sockets / devices [default: 1]
      --client               connect to PATH<i> (the front-end listens) instead of listening; retries and reconnects
      --xen-mapper <MODULE>  load a Xen region mapper (e.g. @xen-vhost/vm-memory-xen or ./mapper.js) and offer XEN_MMAP
      --xen-mapper-option <KEY=VALUE>  an option for the mapper's createXenRegionMapper(), repeatable
                             (vm-memory-xen: grantAccess=copy maps no NO_ADVANCE_MAP grant, it copies)
      --log-level <LEVEL>    debug | info | warn | error [default: info]; JSON lines on stderr
  -h, --help                 print this help`;

export interface CommonArgs {
  socketPath: string;
  socketCount: number;
  client: boolean;
  xenMapper: string | undefined;
  /** --xen-mapper-option KEY=VALUE pairs, given to createXenRegionMapper(). */
  xenMapperOptions: Record<string, string>;
  logLevel: "debug" | "info" | "warn" | "error";
}

/** Thrown for bad command lines; main prints the message and exits 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** Parses a decimal or 0x-hex non-negative integer. */
export function parseNumber(text: string, what: string, max = Number.MAX_SAFE_INTEGER): number {
  const t = text.trim();
  if (!/^(0x[0-9a-f]+|[0-9]+)$/i.test(t)) throw new UsageError(`${what}: "${text}" is not a number`);
  const n = Number(t);
  if (n > max) throw new UsageError(`${what}: ${n} is larger than ${max}`);
  return n;
}

/** Checks the common values out of parseArgs' `values`. */
export function commonArgs(values: Record<string, string | boolean | string[] | undefined>): CommonArgs {
  const socketPath = values["socket-path"];
  if (typeof socketPath !== "string" || socketPath.length === 0) throw new UsageError("--socket-path is required");
  const socketCount = parseNumber(String(values["socket-count"] ?? "1"), "--socket-count", 64);
  if (socketCount < 1) throw new UsageError("--socket-count must be at least 1");
  const logLevel = String(values["log-level"] ?? "info");
  if (!["debug", "info", "warn", "error"].includes(logLevel)) throw new UsageError(`--log-level: "${logLevel}" is not debug, info, warn or error`);
  const xen = values["xen-mapper"];
  const raw = values["xen-mapper-option"];
  const list = Array.isArray(raw) ? raw : typeof raw === "string" ? [raw] : [];
  const xenMapperOptions: Record<string, string> = {};
  for (const kv of list) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(kv);
    if (!m) throw new UsageError(`--xen-mapper-option: "${kv}" is not KEY=VALUE`);
    xenMapperOptions[m[1]!] = m[2]!;
  }
  if (list.length > 0 && typeof xen !== "string") throw new UsageError("--xen-mapper-option needs --xen-mapper");
  return {
    socketPath, socketCount, client: values["client"] === true,
    xenMapper: typeof xen === "string" ? xen : undefined,
    xenMapperOptions,
    logLevel: logLevel as CommonArgs["logLevel"],
  };
}

export interface RunningDaemons {
  readonly daemons: readonly VhostUserDaemon[];
  readonly logger: Logger;
  /** Closes every daemon. */
  close(): void;
}

/**
 * Starts one daemon per socket with `create(i)` as its device. Loads the Xen mapper first if asked (so a
 * missing module fails at start, not at the first Xen front-end).
 */
export async function runDaemons(name: string, args: CommonArgs, create: (index: number) => VhostUserDevice, logger?: Logger): Promise<RunningDaemons> {
  const log = logger ?? jsonLogger(name, args.logLevel);
  let xenMapper: XenRegionMapper | undefined;
  if (args.xenMapper) {
    xenMapper = await loadXenRegionMapper(args.xenMapper, { ...args.xenMapperOptions, logger: log });
    log.info("Xen region mapper loaded; offering XEN_MMAP", { mapper: xenMapper.name });
  }
  const daemons: VhostUserDaemon[] = [];
  try {
    socketPaths(args.socketPath, args.socketCount).forEach((socket, i) => {
      const d = new VhostUserDaemon(create(i), {
        socket, mode: args.client ? "client" : "server", logger: log, ...(xenMapper ? { xenMapper } : {}),
      });
      daemons.push(d);
      d.start();
    });
  } catch (err) {
    for (const d of daemons) d.close();
    throw err;
  }
  return { daemons, logger: log, close: () => daemons.forEach((d) => d.close()) };
}

/**
 * Serves until SIGINT/SIGTERM: then closes the daemons and calls `release` (the device's own resources).
 * Resolves with the exit status once every daemon has closed: 0, or 1 if one stopped on an error.
 */
export function serveUntilStopped(running: RunningDaemons, release: () => void = () => {}): Promise<number> {
  const stop = (): void => {
    running.logger.info("device.stopping", {});
    running.close();
    release();
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

/**
 * Runs a daemon's `main`: a UsageError prints the message and the help text with exit status 2, any other
 * failure its message with status 1.
 */
export function runMain(name: string, help: string, main: () => Promise<number>): void {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      if (err instanceof UsageError) {
        process.stderr.write(`${name}: ${err.message}\n\n${help}\n`);
        process.exitCode = 2;
        return;
      }
      process.stderr.write(`${name}: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
