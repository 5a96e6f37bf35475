// The README's example must not rot: its code block is examples/read-sector.mjs byte for byte, and that
// script, run as a user would (node, the built package resolved by its own name), reads sector 0 from a
// real qemu-storage-daemon.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { hasQsd, startQsd, sectorContent, type Qsd } from "../src/testing/qsd.js";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const script = join(pkg, "examples", "read-sector.mjs");

describe("README example", () => {
  it("is examples/read-sector.mjs, verbatim, and about 20 lines", () => {
    const readme = readFileSync(join(pkg, "README.md"), "utf8");
    const block = /## Example[^\n]*\n\n```js\n([\s\S]*?)```/.exec(readme);
    expect(block, "README has a ```js block under ## Example").not.toBeNull();
    expect(block![1]).toBe(readFileSync(script, "utf8"));
    expect(block![1]!.trimEnd().split("\n").length).toBeLessThanOrEqual(22);
  });

  describe.skipIf(!hasQsd)("against qemu-storage-daemon (needs qemu-storage-daemon from qemu-system-common)", () => {
    let qsd: Qsd;
    beforeAll(async () => {
      qsd = await startQsd();
    });
    afterAll(async () => {
      await qsd?.stop();
    });

    it("runs with node and prints sector 0 with status 0", async () => {
      const { stdout } = await promisify(execFile)(process.execPath, [script, qsd.socket], { cwd: pkg, timeout: 30_000 });
      expect(stdout.trim()).toBe(`status 0 sector 0: ${Buffer.from(sectorContent(0)).toString("hex")}`);
    }, 40_000);
  });
});
