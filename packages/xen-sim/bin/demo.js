#!/usr/bin/env node
// `pnpm demo` entry: runs the xen-sim demo (build the package first).
import { runDemo } from "../dist/demo.js";

runDemo().catch((err) => {
  console.error(err);
  process.exit(1);
});
