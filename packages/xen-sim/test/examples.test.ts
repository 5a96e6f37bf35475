// The README's runnable example must keep running: execute it as a user would and check what it prints.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);

describe("examples/", () => {
  it("quickstart.mjs: virtio-net frames echo, the guest's xenbus write reaches a dom0 watch, a read-only node is refused", async () => {
    const script = fileURLToPath(new URL("../examples/quickstart.mjs", import.meta.url));
    const { stdout } = await run(process.execPath, [script], { timeout: 30_000 });
    expect(stdout).toContain("[guest] virtio-net: mac 52:54:00:5e:00:01, link up");
    expect(stdout).toContain("[guest] frame 2: 64 bytes sent and received back");
    expect(stdout).toContain("[dom0]  watch fired: /local/domain/1/data/ready");
    expect(stdout).toContain("tryWrite: { name: 'EACCES' }");
    expect(stdout).toContain("[dom0]  /local/domain/1/data/ready = 1");
  });
});
