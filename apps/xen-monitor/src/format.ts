// How events and the domain table read: one text line per event (the Xen console and stdout), one JSON
// object per event (--json), and `xl list`'s table (--once).
import type { MonitorEvent } from "./diff.js";
import { memMiB, shutdownReasonName, type DomainView } from "./view.js";

/** What every console line starts with, so the monitor's lines stand out in Xen's serial log. */
export const CONSOLE_PREFIX = "xen-monitor: ";

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** "monu paused (domain 1, was running)" / "domain 3 paused (was running)". */
export function formatEvent(e: MonitorEvent): string {
  const who = e.name ?? `domain ${e.domid}`;
  const paren = (...extra: string[]): string => {
    const parts = [...(e.name !== undefined ? [`domain ${e.domid}`] : []), ...extra];
    return parts.length > 0 ? ` (${parts.join(", ")})` : "";
  };
  switch (e.type) {
    case "present":
    case "created":
      return `${who} ${e.type}${paren()}: ${e.activity ?? "halted"}, ${plural(e.vcpus, "vCPU")}, ${memMiB(e.memKiB)} MiB`;
    case "state":
      if (e.from === "paused") return `${who} unpaused${paren()}: ${e.to}`;
      return `${who} ${e.to}${paren(...(e.from !== undefined ? [`was ${e.from}`] : []))}`;
    case "shutdown":
      return `${who} shut down: ${shutdownReasonName(e.code)}${paren()}`;
    case "dying":
    case "destroyed":
      return `${who} ${e.type}${paren()}`;
    case "vcpus":
      return `${who} vCPUs ${e.from} -> ${e.to}${paren()}`;
    case "memory":
      return `${who} memory ${memMiB(e.fromKiB)} MiB -> ${memMiB(e.toKiB)} MiB${paren()}`;
    case "renamed":
      return `${who} renamed from ${e.from}${paren()}`;
  }
}

/** The line written to the Xen console (console_io CONSOLEIO_write). */
export function consoleLine(e: MonitorEvent): string {
  return `${CONSOLE_PREFIX}${formatEvent(e)}\n`;
}

/** One JSON object per event: `{"time", "type", "domid", "name", ...}` (name null when unknown). */
export function jsonEvent(e: MonitorEvent, time: Date): string {
  const fields: Record<string, unknown> = { time: time.toISOString(), ...e, name: e.name ?? null };
  if (e.type === "shutdown") fields["reason"] = shutdownReasonName(e.code);
  if ("activity" in e) fields["activity"] = e.activity ?? null;
  if (e.type === "state") fields["from"] = e.from ?? null;
  return JSON.stringify(fields);
}

/** `xl list`'s State column: r b p s c d (libxl's list_domains). */
export function stateLetters(v: DomainView): string {
  return [
    v.running ? "r" : "-",
    v.blocked ? "b" : "-",
    v.paused ? "p" : "-",
    v.shutdownCode !== undefined ? "s" : "-",
    v.shutdownCode === 3 ? "c" : "-", // SHUTDOWN_crash
    v.dying ? "d" : "-",
  ].join("");
}

/**
 * The table `xl list` prints (tools/xl/xl_list.c: "%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f"), domains in
 * domid order; a domain whose name XenStore did not give reads "(unknown)".
 */
export function formatTable(views: Iterable<DomainView>): string {
  const rows = [...views].sort((a, b) => a.domid - b.domid);
  const lines = [`${"Name".padEnd(40)} ${"ID".padStart(5)} ${"Mem".padStart(5)} VCPUs\tState\tTime(s)`];
  for (const v of rows) {
    lines.push(
      `${(v.name ?? "(unknown)").padEnd(40)} ${String(v.domid).padStart(5)} ${String(memMiB(v.memKiB)).padStart(5)} ` +
        `${String(v.vcpus).padStart(5)}     ${stateLetters(v)}  ${v.cpuSeconds.toFixed(1).padStart(8)}`,
    );
  }
  return `${lines.join("\n")}\n`;
}
