// Test helpers for this package and its dependents (published as `@xen-vhost/ioreq-eventfd/testing`).
export { RealModeVm, Asm16, type RealModeVmOptions } from "./real-mode.js";
