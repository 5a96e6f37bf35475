import type { GpioChip } from "./chip.js";
import type { ChipSpec } from "./cli.js";
import { HostChip, realOps, type GpioDevOps } from "./passthrough.js";
import { SimChip } from "./sim.js";

/** Opens every chip; if one fails, the ones already opened are closed. @throws GpioError ChipMissing */
export function openChips(specs: readonly ChipSpec[], ops: GpioDevOps = realOps): GpioChip[] {
  const out: GpioChip[] = [];
  try {
    specs.forEach((s, i) => out.push(s.kind === "host" ? new HostChip(s.index, ops) : new SimChip(s.lines, `sim${i}`)));
    return out;
  } catch (err) {
    for (const c of out.reverse()) c.close();
    throw err;
  }
}
