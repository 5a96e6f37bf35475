// What a guest program is: a module whose default export runs on a vCPU of the simulated guest.
import type { Guest } from "./guest.js";
import type { Vcpu } from "./vcpu.js";

export interface GuestContext {
  guest: Guest;
  vcpu: Vcpu;
  /** The `args` given to startGuest. */
  args: unknown;
  /** Reports a step (shown by the demo, collected by tests). */
  log: (message: string) => void;
}

/** A guest program: synchronous guest code (it may be async only to import things). */
export type GuestProgram = (ctx: GuestContext) => unknown;
