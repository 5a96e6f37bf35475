// The simulator and the guests run as separate processes from dist/: make sure it is built.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

export default function setup(): void {
  const main = fileURLToPath(new URL("../dist/sim/main.js", import.meta.url));
  if (!existsSync(main)) throw new Error(`xen-sim is not built (${main} missing): run \`pnpm build\` first`);
}
