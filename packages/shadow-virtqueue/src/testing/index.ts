export { relayHarness, GUEST_RAM, type Harness, type HarnessOptions } from "./harness.js";
