// Adapters from their specs.
import type { I2cAdapter } from "./adapter.js";
import type { AdapterSpec } from "./cli.js";
import { PhysicalAdapter, type I2cDevOps, realOps } from "./passthrough.js";
import { SimAdapter, simDeviceTypes, type SimI2cDevice } from "./sim.js";

/**
 * Opens every adapter; if one fails, the ones already opened are closed.
 * @throws I2cError AdapterMissing / Unsupported for a host adapter that cannot be used
 */
export function openAdapters(specs: readonly AdapterSpec[], ops: I2cDevOps = realOps): I2cAdapter[] {
  const out: I2cAdapter[] = [];
  try {
    specs.forEach((s, i) => {
      if (s.kind === "host") out.push(new PhysicalAdapter(s.bus, s.addresses, ops));
      else out.push(new SimAdapter(new Map<number, SimI2cDevice>(s.devices.map((d) => [d.addr, simDeviceTypes[d.type]()])), `sim${i}`));
    });
    return out;
  } catch (err) {
    for (const a of out.reverse()) a.close();
    throw err;
  }
}
