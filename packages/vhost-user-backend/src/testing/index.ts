export { TestFrontend, collectUsed, post, waitForCall, type TestRing } from "./frontend.js";
