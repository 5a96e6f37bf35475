// `--sim-stdin`: drive simulated input lines from text commands (`<chip> <line> <0|1>`), so a simulated
// button can be pressed from a shell or a test harness while a guest waits for its interrupt.
import type { GpioChip } from "./chip.js";
import { SimChip } from "./sim.js";

/** Applies one command; returns an error text or undefined. */
export function simCommand(chips: readonly GpioChip[], line: string): string | undefined {
  const t = line.trim();
  if (t === "" || t.startsWith("#")) return undefined;
  const m = /^(\d+)\s+(\S+)\s+([01])$/.exec(t);
  if (!m) return `"${t}": expected <chip> <line> <0|1>`;
  const chip = chips[Number(m[1])];
  if (!(chip instanceof SimChip)) return `"${t}": chip ${m[1]} is not a simulated chip`;
  const names = chip.names();
  const n = /^\d+$/.test(m[2]!) ? Number(m[2]) : names.indexOf(m[2]!);
  if (n < 0 || n >= chip.ngpio) return `"${t}": no line ${m[2]} on chip ${m[1]}`;
  chip.drive(n, m[3] === "1" ? 1 : 0);
  return undefined;
}
