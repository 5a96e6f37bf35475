// The per-device shadow option: --shadow on the command line, "shadow" in the JSON file.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, parseCommandLine, type BridgeConfig } from "../src/config.js";

const cli = (args: string[]) => parseCommandLine(args) as BridgeConfig;

describe("shadow option", () => {
  it("defaults to auto and takes --shadow always|never", () => {
    expect(cli(["--socket-path", "/run/blk.sock", "--name", "blk"]).devices[0]!.shadow).toBe("auto");
    expect(cli(["--socket-path", "/run/blk.sock", "--name", "blk", "--shadow", "always"]).devices[0]!.shadow).toBe("always");
    expect(cli(["--socket-path", "/run/blk.sock", "--name", "blk", "--shadow", "never"]).devices[0]!.shadow).toBe("never");
  });

  it("names the flag or JSON key at fault", () => {
    expect(() => cli(["--socket-path", "/s", "--name", "blk", "--shadow", "sometimes"])).toThrow(ConfigError);
    try {
      cli(["--socket-path", "/s", "--name", "blk", "--shadow", "sometimes"]);
    } catch (e) {
      expect((e as ConfigError).where).toBe("--shadow");
    }
    const dir = mkdtempSync(join(tmpdir(), "shadow-cfg-"));
    try {
      const f = join(dir, "c.json");
      writeFileSync(f, JSON.stringify({ devices: [{ name: "blk", socket: "/a", shadow: "always" }, { name: "fs", socket: "/b" }] }));
      const c = cli(["--config", f]);
      expect(c.devices.map((d) => d.shadow)).toEqual(["always", "auto"]);
      writeFileSync(f, JSON.stringify({ devices: [{ name: "blk", socket: "/a", shadow: true }] }));
      expect(() => cli(["--config", f])).toThrow(/devices\[0\]\.shadow/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
