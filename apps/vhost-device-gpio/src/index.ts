export * from "./abi.js";
export { GpioError, type GpioErrorKind } from "./error.js";
export type { GpioChip, GpioEventListener } from "./chip.js";
export { SimChip } from "./sim.js";
export { HostChip, encodeLineRequest, realOps, type GpioDevOps } from "./passthrough.js";
export { GpioDevice, namesBlock } from "./device.js";
export { parse, parseChipList, help, type ChipSpec, type GpioArgs } from "./cli.js";
export { openChips } from "./build.js";
export { simCommand } from "./sim-control.js";
