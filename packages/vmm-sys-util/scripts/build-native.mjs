#!/usr/bin/env node
// Builds the addon with node-gyp against the local Node headers, never downloading them (this project
// must build offline). A prebuild under prebuilds/<platform>-<arch>/ (prebuildify) makes this a no-op.
//   node scripts/build-native.mjs            build for this machine
//   node scripts/build-native.mjs --arch=arm64   cross-build (set CC/CXX/LINK to aarch64-linux-gnu-*)
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const arch = args.find((a) => a.startsWith("--arch="))?.slice(7) ?? process.arch;
if (arch === process.arch && existsSync(join(root, "prebuilds", `linux-${arch}`)) && !args.includes("--force")) {
  console.log(`vmm-sys-util: using prebuilds/linux-${arch}`);
  process.exit(0);
}
// The headers of the Node that runs us: <prefix>/include/node/node_api.h (Debian's nodejs and the
// official tarballs both ship them).
const prefix = dirname(dirname(process.execPath));
const nodedir = [process.env.npm_config_nodedir, prefix, "/usr"].find(
  (d) => d && existsSync(join(d, "include", "node", "node_api.h")),
);
if (!nodedir) {
  console.error("vmm-sys-util: Node headers not found (looked for include/node/node_api.h under " +
    `${prefix} and /usr). Install Node's development headers (Debian: libnode-dev) or set npm_config_nodedir.`);
  process.exit(1);
}
const require = createRequire(import.meta.url);
const gyp = require.resolve("node-gyp/bin/node-gyp.js");
// Incremental `build` when configured for this arch already; `rebuild` (configure + build) otherwise.
const configured = existsSync(join(root, "build", "Makefile")) && existsSync(join(root, "build", `.arch-${arch}`));
const r = spawnSync(process.execPath, [gyp, configured ? "build" : "rebuild", "--loglevel=warn", `--nodedir=${nodedir}`, `--arch=${arch}`, ...args.filter((a) => a.startsWith("--") && !a.startsWith("--arch=") && a !== "--force")], {
  cwd: root,
  stdio: "inherit",
});
if (r.status === 0 && !configured) writeFileSync(join(root, "build", `.arch-${arch}`), "");
process.exit(r.status ?? 1);
