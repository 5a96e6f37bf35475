// A Logger that writes JSON lines to a stream: what the daemons wire in (packages never print by themselves).
import type { Logger } from "@xen-vhost/vmm-sys-util";

type Level = "debug" | "info" | "warn" | "error";
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** JSON lines `{"time","level","name","msg",...fields}` at or above `level` to `out` (default stderr). */
export function jsonLogger(name: string, level: Level = "info", out: { write(s: string): unknown } = process.stderr): Logger {
  const min = order[level];
  const line = (l: Level) => (msg: string, fields: Record<string, unknown> = {}) => {
    if (order[l] < min) return;
    out.write(`${JSON.stringify({ time: new Date().toISOString(), level: l, name, msg, ...fields }, (_k, v: unknown) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v))}\n`);
  };
  return { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
}
