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

  it("takes the device config the bridge supplies: --fs-tag/--fs-queues, --mac/--mtu, and JSON fs/net", () => {
    expect(cfg(["--socket-path", "/s", "--name", "fs", "--fs-tag", "myfs", "--fs-queues", "2"]).devices[0]!.fs).toEqual({ tag: "myfs", requestQueues: 2 });
    const n = cfg(["--socket-path", "/s", "--name", "net", "--mac", "52:54:00:12:34:56", "--mtu", "1500"]).devices[0]!;
    expect(n.net).toEqual({ mac: Uint8Array.from([0x52, 0x54, 0, 0x12, 0x34, 0x56]), mtu: 1500 });
    expect(n.fs).toBeUndefined();
    const f = join(dir, "devcfg.json");
    writeFileSync(f, JSON.stringify({ devices: [
      { name: "fs", socket: "/fs.sock", fs: { tag: "myfs", requestQueues: 1 } },
      { name: "net", socket: "/net.sock", net: { mac: "02:00:00:00:00:01" } },
      { socket: "/any/", fs: { tag: "share" }, net: { mac: "02:00:00:00:00:02" } },
    ] }));
    const c = cfg(["--config", f]);
    expect(c.devices.map((d) => [d.fs, d.net])).toEqual([
      [{ tag: "myfs", requestQueues: 1 }, undefined],
      [undefined, { mac: Uint8Array.from([2, 0, 0, 0, 0, 1]) }],
      [{ tag: "share" }, { mac: Uint8Array.from([2, 0, 0, 0, 0, 2]) }],
    ]);
  });

  it("refuses bad device config with a ConfigError naming the flag or key", () => {
    const tooLong = err(["--socket-path", "/s", "--name", "fs", "--fs-tag", "x".repeat(37)]);
    expect([tooLong.where, tooLong.message]).toEqual(["--fs-tag", "--fs-tag: the tag is 37 bytes of UTF-8, at most 36 fit in virtio_fs_config.tag"]);
    expect(err(["--socket-path", "/s", "--name", "fs", "--fs-queues", "0"]).where).toBe("--fs-queues");
    expect(err(["--socket-path", "/s", "--name", "net", "--mac", "52:54:00:12:34"]).message).toMatch(/expected a MAC address/);
    const multicast = err(["--socket-path", "/s", "--name", "net", "--mac", "01:00:5e:00:00:01"]);
    expect(multicast.where).toBe("--mac");
    expect(multicast.message).toMatch(/multicast/);
    expect(err(["--socket-path", "/s", "--name", "net", "--mtu", "40"]).where).toBe("--mtu");
    expect(err(["--socket-path", "/s", "--name", "blk", "--mac", "52:54:00:12:34:56"]).message).toMatch(/virtio-net options with --name blk/);
    expect(err(["--socket-path", "/s", "--name", "net", "--fs-tag", "x"]).where).toBe("--fs-tag");
    const f = join(dir, "baddev.json");
    const bad = (dev: object): ConfigError => {
      writeFileSync(f, JSON.stringify({ devices: [dev] }));
      return err(["--config", f]);
    };
    const utf8 = bad({ name: "fs", socket: "/s", fs: { tag: "é".repeat(19) } });
    expect(utf8.where).toBe(`${f}: devices[0].fs.tag`);
    expect(utf8.message).toMatch(/38 bytes/);
    expect(bad({ name: "fs", socket: "/s", fs: { tag: 5 } }).where).toBe(`${f}: devices[0].fs.tag`);
    expect(bad({ name: "fs", socket: "/s", fs: { tags: "x" } }).where).toBe(`${f}: devices[0].fs.tags`);
    expect(bad({ name: "fs", socket: "/s", fs: "x" }).where).toBe(`${f}: devices[0].fs`);
    expect(bad({ name: "net", socket: "/s", net: { mac: "zz:54:00:12:34:56" } }).where).toBe(`${f}: devices[0].net.mac`);
    expect(bad({ name: "rng", socket: "/s", net: { mac: "52:54:00:12:34:56" } }).message).toMatch(/virtio-net options on a rng device/);
    expect(err(["--config", f, "--mac", "52:54:00:12:34:56"]).where).toBe("--config");
  });

  it("expands directory-prefix sockets the way xen-vhost-frontend does", () => {
    expect(socketFor("/root/", 34, 0)).toBe("/root/i2c.sock0");
    expect(socketFor("/run/vhost/", 41, 2)).toBe("/run/vhost/gpio.sock2");
    expect(socketFor("/run/rng.sock", 4, 5)).toBe("/run/rng.sock");
  });
});
