// The bridge's log sink: one JSON object per line on stderr, with a level filter and per-device context
// (`child({ device: "virtio/3/0" })`), like cloud-hypervisor's event monitor. Packages get this as their
// `logger` option; they never print themselves.
import type { Logger } from "@xen-vhost/vmm-sys-util";
import type { LogLevel } from "./config.js";

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface JsonLogger extends Logger {
  /** A logger that adds `fields` to every line. */
  child(fields: Record<string, unknown>): JsonLogger;
}

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : `0x${value.toString(16)}`;
  if (value instanceof Error) return { name: value.name, message: value.message };
  return value;
}

export function jsonLogger(
  level: LogLevel,
  write: (line: string) => void = (l) => process.stderr.write(l),
  context: Record<string, unknown> = {},
): JsonLogger {
  const min = rank[level];
  const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (rank[lvl] < min) return;
    write(`${JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...context, ...fields }, replacer)}\n`);
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => jsonLogger(level, write, { ...context, ...fields }),
  };
}
