// @xen-vhost/xen-sim/guest: the simulated guest's side, for guest programs (modules run by startGuest).
export { Guest, sleepSync, type GuestInfo } from "./guest.js";
export { Vcpu, type VcpuCounters } from "./vcpu.js";
export { GrantTable } from "./grants.js";
export type { GuestContext, GuestProgram } from "./program.js";
