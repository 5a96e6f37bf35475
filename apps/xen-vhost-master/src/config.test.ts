import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, parseCommandLine, socketFor, type BridgeConfig } from "./config.js";

const dir = mkdtempSync(join(tmpdir(), "xvm-config-"));
function cfg(argv: string[]): BridgeConfig {
  const c = parseCommandLine(argv);
  if (c === "help") throw new Error("help");
  return c;
}
function err(argv: string[]): ConfigError {
  try {
    parseCommandLine(argv);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

describe("command line", () => {
  it("takes the seed's command line: discovery mode for one device type", () => {
    const c = cfg(["--socket-path", "/root/vi2c.sock0", "--name", "i2c"]);
    expect(c.discovery).toBe(true);
    expect(c.devices).toEqual([
      { deviceId: 34, domid: undefined, mmioBase: undefined, irq: undefined, socket: "/root/vi2c.sock0", socketMode: "client",
        memory: "auto", backendCmd: undefined, queueMaxSize: 1024, shadow: "auto" },
    ]);
    expect(c.logLevel).toBe("info");
  });

  it("takes a static device with hex base, and xen-vhost-frontend's --foreign-mapping", () => {
    const c = cfg(["--socket-path", "/run/rng.sock", "--name", "virtio,device4", "--domid", "3", "--mmio-base", "0x2000200",
      "--irq", "34", "--foreign-mapping", "--backend-cmd", "vhost-device-rng -s /run/rng.sock", "--log-level", "debug"]);
    expect(c.discovery).toBe(false);
    expect(c.devices[0]).toMatchObject({ deviceId: 4, domid: 3, mmioBase: 0x2000200n, irq: 34, memory: "foreign",
      backendCmd: ["vhost-device-rng", "-s", "/run/rng.sock"] });
    expect(c.logLevel).toBe("debug");
  });

  it("names the flag at fault", () => {
    expect(err(["--socket-path", "/s", "--name", "toaster"]).where).toBe("command line.name");
    expect(err(["--socket-path", "/s", "--name", "rng", "--irq", "x"]).where).toBe("--irq");
    expect(err(["--socket-path", "/s", "--name", "rng", "--domid", "1"]).message).toMatch(/all of domid, MMIO base and irq/);
    expect(err(["--socket-path", "/s", "--name", "rng", "--mmio-base", "0x2000100", "--domid", "1", "--irq", "3"]).message).toMatch(/0x200-aligned/);
    expect(err(["--name", "rng"]).where).toBe("--socket-path");
    expect(err(["--socket-path", "/s", "--bogus"]).message).toMatch(/bogus/);
    expect(err(["--socket-path", "/s", "--log-level", "loud"]).where).toBe("--log-level");
    expect(parseCommandLine(["--help"])).toBe("help");
  });

  it("reads a JSON file for many devices, with command-line overrides", () => {
    const f = join(dir, "bridge.json");
    writeFileSync(f, JSON.stringify({
      logLevel: "warn",
      metrics: "/run/xvm.metrics",
      devices: [
        { name: "i2c", socket: "/run/vhost/" },
        { name: "gpio", socket: "/run/gpio.sock", domid: 2, mmioBase: "0x2000200", irq: 34, socketMode: "server", memory: "grant", queueSize: 256 },
      ],
    }));
    const c = cfg(["--config", f, "--log-level", "debug"]);
    expect(c.logLevel).toBe("debug");
    expect(c.metrics).toBe("/run/xvm.metrics");
    expect(c.discovery).toBe(true);
    expect(c.devices[1]).toMatchObject({ deviceId: 41, domid: 2, socketMode: "server", memory: "grant", queueMaxSize: 256 });
  });

  it("names the JSON key at fault", () => {
    const f = join(dir, "bad.json");
    writeFileSync(f, JSON.stringify({ devices: [{ name: "rng", socket: "/s" }, { name: "rng", socket: "/t", queueSize: 100 }] }));
    expect(err(["--config", f]).where).toBe(`${f}: devices[1].queueSize`);
    writeFileSync(f, JSON.stringify({ devices: [{ name: "rng", sockt: "/s" }] }));
    expect(err(["--config", f]).where).toBe(`${f}: devices[0].sockt`);
    writeFileSync(f, "{ not json");
    expect(err(["--config", f]).message).toMatch(/not valid JSON/);
    expect(err(["--config", join(dir, "missing.json")]).message).toMatch(/cannot read/);
  });

  it("expands directory-prefix sockets the way xen-vhost-frontend does", () => {
    expect(socketFor("/root/", 34, 0)).toBe("/root/i2c.sock0");
    expect(socketFor("/run/vhost/", 41, 2)).toBe("/run/vhost/gpio.sock2");
    expect(socketFor("/run/rng.sock", 4, 5)).toBe("/run/rng.sock");
  });
});
