// The bridge's configuration: from the seed-compatible command line, or from a JSON file for many devices
// and guests. Everything is validated up front into one typed value; a mistake is a ConfigError that names
// the flag or the JSON path and what was expected.
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { deviceType, parseDtCompatible } from "@xen-vhost/virtio-mmio";
import { FS_MAX_REQUEST_QUEUES, NET_MTU_MAX, NET_MTU_MIN, fsTagProblem, parseMac, type DeviceOptions, type FsDeviceOptions, type NetDeviceOptions } from "./device-config.js";

export class ConfigError extends Error {
  override readonly name = "ConfigError";
  /** The flag or JSON path at fault ("--irq", "devices[2].socket"). */
  readonly where: string;
  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.where = where;
  }
}

export type LogLevel = "debug" | "info" | "warn" | "error";
export type MemoryMode = "auto" | "foreign" | "grant";
export type SocketMode = "client" | "server";
/** Shadow virtqueues (issue 9): auto = only for a backend without XEN_MMAP; always; never. */
export type ShadowMode = "auto" | "always" | "never";

/**
 * One backend the bridge serves a device from. `fs` / `net` (DeviceOptions) are the config space the bridge
 * supplies when the backend has none (no VHOST_USER_PROTOCOL_F_CONFIG), as QEMU's device properties do.
 */
export interface DeviceConfig extends DeviceOptions {
  /** Virtio device type (ID); from `--name`/`type` or, in discovery mode, from xenstore. */
  deviceId: number | undefined;
  /** The guest; undefined = any guest (discovery decides). */
  domid: number | undefined;
  /** MMIO window base and SPI; undefined = from xenstore. */
  mmioBase: bigint | undefined;
  irq: number | undefined;
  /**
   * The backend's socket. A path ending in "/" is a directory prefix, as in xen-vhost-frontend:
   * `<dir><name>.sock<N>` with N counting devices of that type.
   */
  socket: string;
  /** client: connect to a listening backend (vhost-device daemons); server: listen for it. */
  socketMode: SocketMode;
  /** How the backend reaches guest memory: foreign mapping, grants, or decided from the guest's addresses. */
  memory: MemoryMode;
  /** Command line to spawn the backend (restarted if it dies). */
  backendCmd: string[] | undefined;
  /** Queue size offered to the driver. */
  queueMaxSize: number;
  /**
   * Shadow virtqueues: the backend gets memfd shadow memory and rings and the bridge copies requests
   * between them and the guest's rings. auto (default): when the backend lacks XEN_MMAP (stock
   * qemu-storage-daemon, virtiofsd, DPDK); always; never (a backend without XEN_MMAP is refused).
   */
  shadow: ShadowMode;
}

export interface BridgeConfig {
  devices: DeviceConfig[];
  /** Watch xenstore for devices (true when any device lacks domid/base/irq). */
  discovery: boolean;
  /** Backend domain whose `backend/` tree is watched. */
  backendDomid: number;
  logLevel: LogLevel;
  /** Serve Prometheus text counters on this unix socket path or TCP port. */
  metrics: string | number | undefined;
  /** Validate configuration and environment, then exit. */
  check: boolean;
}

export const USAGE = `Usage: xen-vhost-master [options]

Serves Xen guests' virtio-mmio devices from vhost-user backends. Runs in dom0 (or a driver domain).

Seed-compatible (one device):
  --socket-path PATH     backend socket; a path ending in "/" is a directory: PATH<name>.sock<N>
  --name NAME            device type: rng, i2c, gpio, blk, fs, net, ... or a virtio device id
  --domid N              the guest (default: discovered from xenstore)
  --mmio-base ADDR       the device's MMIO base, e.g. 0x2000000 (default: from xenstore)
  --irq N                the device's SPI, e.g. 33 (default: from xenstore)
  --socket-mode MODE     client (connect to the backend, default) or server (listen for it)
  --memory MODE          auto (default), foreign or grant
  --backend-cmd CMD      spawn the backend with this command line, restart it if it dies
  --queue-size N         largest queue size offered to the guest (default 1024)
  --shadow MODE          shadow virtqueues for backends that cannot map Xen guest memory: auto (default:
                         when the backend lacks XEN_MMAP), always, never

Device config the bridge supplies when the backend has none (virtiofsd, DPDK: no CONFIG protocol feature):
  --fs-tag TAG           virtio-fs mount tag, at most 36 bytes (default "virtiofs")
  --fs-queues N          virtio-fs request queues (default: what the backend reports, else 1)
  --mac MAC              virtio-net MAC address, e.g. 52:54:00:12:34:56 (offers VIRTIO_NET_F_MAC)
  --mtu N                virtio-net MTU to advise (offers VIRTIO_NET_F_MTU)

Many devices:
  --config FILE          JSON: { "devices": [ { "name": "i2c", "socket": "/run/i2c.sock", ... } ], ... }
                         per device also "fs": { "tag": "myfs", "requestQueues": 1 } or
                         "net": { "mac": "52:54:00:12:34:56", "mtu": 1500 }

General:
  --backend-domid N      domain whose backend/ tree is watched (default 0)
  --log-level LEVEL      debug, info (default), warn, error; logs are JSON lines on stderr
  --metrics SOCKET|PORT  serve counters in Prometheus text format
  --check                validate the configuration and the environment, print what is missing, exit
  -h, --help             this text
`;

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

function int(where: string, text: string | number | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const v = typeof text === "number" ? text : /^(0[xX][0-9a-fA-F]+|[0-9]+)$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isInteger(v) || v < min || v > max) throw new ConfigError(where, `expected an integer in ${min}..${max}, got ${JSON.stringify(text)}`);
  return v;
}

function address(where: string, text: string | number | undefined): bigint | undefined {
  if (text === undefined) return undefined;
  const t = String(text).trim();
  if (!/^(0[xX][0-9a-fA-F]+|[0-9]+)$/.test(t)) throw new ConfigError(where, `expected an address like 0x2000000, got ${JSON.stringify(text)}`);
  const v = BigInt(t);
  if (v % 0x200n !== 0n) throw new ConfigError(where, `MMIO base 0x${v.toString(16)} is not 0x200-aligned`);
  return v;
}

/** "i2c", "34", "0x22" or "virtio,device22" -> 34. */
export function parseDeviceName(where: string, name: string | number | undefined): number | undefined {
  if (name === undefined) return undefined;
  if (typeof name === "number") return int(where, name, 1, 0xffff);
  const byName = deviceType(name.trim());
  if (byName) return byName.id;
  const dt = parseDtCompatible(name);
  if (dt !== undefined) return dt;
  const n = /^(0[xX][0-9a-fA-F]+|[0-9]+)$/.test(name.trim()) ? Number(name.trim()) : NaN;
  if (!deviceType(n)) throw new ConfigError(where, `unknown device type ${JSON.stringify(name)} (try rng, i2c, gpio, blk, fs, net, or a virtio id)`);
  return n;
}

function oneOf<T extends string>(where: string, v: string | undefined, allowed: readonly T[], dflt: T): T {
  if (v === undefined) return dflt;
  if (!(allowed as readonly string[]).includes(v)) throw new ConfigError(where, `expected one of ${allowed.join(", ")}, got ${JSON.stringify(v)}`);
  return v as T;
}

function splitCommand(where: string, cmd: string | string[] | undefined): string[] | undefined {
  if (cmd === undefined) return undefined;
  const argv = Array.isArray(cmd) ? cmd : cmd.trim().split(/\s+/);
  if (argv.length === 0 || argv.some((a) => typeof a !== "string" || a.length === 0)) throw new ConfigError(where, "expected a command line");
  return argv;
}

/** Expands a directory-prefix socket ("/run/vhost/") into xen-vhost-frontend's `<dir><name>.sock<N>`. */
export function socketFor(socket: string, deviceId: number | undefined, index: number): string {
  if (!socket.endsWith("/")) return socket;
  const name = deviceId === undefined ? "virtio" : (deviceType(deviceId)?.name ?? `device${deviceId}`);
  return join(socket, `${name}.sock${index}`);
}

interface JsonDevice {
  name?: string | number;
  domid?: number;
  mmioBase?: string | number;
  irq?: number;
  socket?: string;
  socketMode?: string;
  memory?: string;
  backendCmd?: string | string[];
  queueSize?: number;
  shadow?: string;
  fs?: { tag?: string; requestQueues?: number | string };
  net?: { mac?: string; mtu?: number | string };
}

function subObject(where: string, v: unknown, keys: readonly string[]): Record<string, unknown> | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ConfigError(where, "expected an object");
  for (const k of Object.keys(v)) if (!keys.includes(k)) throw new ConfigError(`${where}.${k}`, `unknown key (expected ${keys.join(", ")})`);
  return v as Record<string, unknown>;
}

function fsOptions(where: string, v: unknown): FsDeviceOptions | undefined {
  const o = subObject(where, v, ["tag", "requestQueues"]);
  if (!o) return undefined;
  const out: FsDeviceOptions = {};
  if (o["tag"] !== undefined) {
    if (typeof o["tag"] !== "string") throw new ConfigError(`${where}.tag`, "expected a string");
    const problem = fsTagProblem(o["tag"]);
    if (problem) throw new ConfigError(`${where}.tag`, problem);
    out.tag = o["tag"];
  }
  const q = int(`${where}.requestQueues`, o["requestQueues"] as number | string | undefined, 1, FS_MAX_REQUEST_QUEUES);
  if (q !== undefined) out.requestQueues = q;
  return out;
}

function netOptions(where: string, v: unknown): NetDeviceOptions | undefined {
  const o = subObject(where, v, ["mac", "mtu"]);
  if (!o) return undefined;
  const out: NetDeviceOptions = {};
  if (o["mac"] !== undefined) {
    if (typeof o["mac"] !== "string") throw new ConfigError(`${where}.mac`, "expected a string like 52:54:00:12:34:56");
    const mac = parseMac(o["mac"]);
    if (typeof mac === "string") throw new ConfigError(`${where}.mac`, mac);
    out.mac = mac;
  }
  const mtu = int(`${where}.mtu`, o["mtu"] as number | string | undefined, NET_MTU_MIN, NET_MTU_MAX);
  if (mtu !== undefined) out.mtu = mtu;
  return out;
}

function deviceFrom(where: string, d: JsonDevice): DeviceConfig {
  if (typeof d !== "object" || d === null) throw new ConfigError(where, "expected an object");
  const known = new Set(["name", "domid", "mmioBase", "irq", "socket", "socketMode", "memory", "backendCmd", "queueSize", "shadow", "fs", "net"]);
  for (const k of Object.keys(d)) if (!known.has(k)) throw new ConfigError(`${where}.${k}`, "unknown key");
  if (typeof d.socket !== "string" || d.socket.length === 0) throw new ConfigError(`${where}.socket`, "a backend socket path is required");
  const queueMaxSize = int(`${where}.queueSize`, d.queueSize, 1, 32768) ?? 1024;
  if ((queueMaxSize & (queueMaxSize - 1)) !== 0) throw new ConfigError(`${where}.queueSize`, `${queueMaxSize} is not a power of two`);
  const deviceId = parseDeviceName(`${where}.name`, d.name);
  const fs = fsOptions(`${where}.fs`, d.fs);
  const net = netOptions(`${where}.net`, d.net);
  // Options for another device type are a mistake the user should hear about, not silently unused.
  const typeName = deviceId === undefined ? undefined : deviceType(deviceId)?.name;
  if (fs && typeName !== undefined && typeName !== "fs") throw new ConfigError(`${where}.fs`, `virtio-fs options on a ${typeName} device`);
  if (net && typeName !== undefined && typeName !== "net") throw new ConfigError(`${where}.net`, `virtio-net options on a ${typeName} device`);
  return {
    deviceId,
    domid: int(`${where}.domid`, d.domid, 1, 0x7fef),
    mmioBase: address(`${where}.mmioBase`, d.mmioBase),
    irq: int(`${where}.irq`, d.irq, 0, 1019),
    socket: d.socket,
    socketMode: oneOf(`${where}.socketMode`, d.socketMode, ["client", "server"], "client"),
    memory: oneOf(`${where}.memory`, d.memory, ["auto", "foreign", "grant"], "auto"),
    backendCmd: splitCommand(`${where}.backendCmd`, d.backendCmd),
    queueMaxSize,
    shadow: oneOf(`${where}.shadow`, d.shadow, ["auto", "always", "never"], "auto"),
    ...(fs ? { fs } : {}),
    ...(net ? { net } : {}),
  };
}

function finish(devices: DeviceConfig[], rest: Omit<BridgeConfig, "devices" | "discovery">): BridgeConfig {
  if (devices.length === 0) throw new ConfigError("devices", "no device configured (give --socket-path and --name, or --config)");
  for (const [i, d] of devices.entries()) {
    const pinned = [d.domid, d.mmioBase, d.irq].filter((x) => x !== undefined).length;
    if (pinned !== 0 && pinned !== 3)
      throw new ConfigError(`devices[${i}]`, "give all of domid, MMIO base and irq (a static device) or none of them (discovered from xenstore)");
    if (pinned === 3 && d.deviceId === undefined) throw new ConfigError(`devices[${i}].name`, "a static device needs its type (--name)");
    if (d.socketMode === "server" && d.socket.endsWith("/")) throw new ConfigError(`devices[${i}].socket`, "a server socket must be a path, not a directory prefix");
  }
  return { devices, discovery: devices.some((d) => d.domid === undefined), ...rest };
}

/** Parses the command line (without node and script). @throws ConfigError */
export function parseCommandLine(argv: readonly string[]): BridgeConfig | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        "socket-path": { type: "string" },
        name: { type: "string" },
        domid: { type: "string" },
        "mmio-base": { type: "string" },
        irq: { type: "string" },
        "socket-mode": { type: "string" },
        memory: { type: "string" },
        "backend-cmd": { type: "string" },
        "queue-size": { type: "string" },
        shadow: { type: "string" },
        "fs-tag": { type: "string" },
        "fs-queues": { type: "string" },
        mac: { type: "string" },
        mtu: { type: "string" },
        config: { type: "string" },
        "backend-domid": { type: "string" },
        "log-level": { type: "string" },
        metrics: { type: "string" },
        check: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        // xen-vhost-frontend's flag: foreign mapping instead of grants.
        "foreign-mapping": { type: "boolean" },
      },
    });
  } catch (err) {
    const m = (err as Error).message;
    const flag = /'(-[^']+)'/.exec(m)?.[1] ?? "command line";
    throw new ConfigError(flag, `${m.replace(/\. To specify.*$/, "")} (see --help)`);
  }
  const v = parsed.values;
  if (v.help) return "help";
  const metricsText = v.metrics;
  const metrics =
    metricsText === undefined ? undefined : /^[0-9]+$/.test(metricsText) ? int("--metrics", metricsText, 1, 65535) : metricsText;
  const backendDomid = int("--backend-domid", v["backend-domid"], 0, 0x7fef);
  const logLevel = v["log-level"] === undefined ? undefined : oneOf("--log-level", v["log-level"], LOG_LEVELS, "info");
  const check = v.check ?? false;
  if (v.config !== undefined) {
    for (const flag of ["socket-path", "name", "fs-tag", "fs-queues", "mac", "mtu"] as const)
      if (v[flag] !== undefined) throw new ConfigError("--config", `use either --config or --${flag} (per-device options go in the file), not both`);
    // General flags given on the command line override the file.
    const fromFile = loadConfigFile(v.config);
    return {
      ...fromFile,
      backendDomid: backendDomid ?? fromFile.backendDomid,
      logLevel: logLevel ?? fromFile.logLevel,
      metrics: metrics ?? fromFile.metrics,
      check,
    };
  }
  const rest = { backendDomid: backendDomid ?? 0, logLevel: logLevel ?? "info", metrics, check };
  if (v["socket-path"] === undefined) throw new ConfigError("--socket-path", "required (or use --config)");
  // Per-device config flags, checked here so the error names the flag (deviceFrom names JSON paths).
  let fs: JsonDevice["fs"];
  if (v["fs-tag"] !== undefined || v["fs-queues"] !== undefined) {
    fs = {};
    if (v["fs-tag"] !== undefined) {
      const problem = fsTagProblem(v["fs-tag"]);
      if (problem) throw new ConfigError("--fs-tag", problem);
      fs.tag = v["fs-tag"];
    }
    if (v["fs-queues"] !== undefined) fs.requestQueues = int("--fs-queues", v["fs-queues"], 1, FS_MAX_REQUEST_QUEUES)!;
  }
  let net: JsonDevice["net"];
  if (v.mac !== undefined || v.mtu !== undefined) {
    net = {};
    if (v.mac !== undefined) {
      const mac = parseMac(v.mac);
      if (typeof mac === "string") throw new ConfigError("--mac", mac);
      net.mac = v.mac;
    }
    if (v.mtu !== undefined) net.mtu = int("--mtu", v.mtu, NET_MTU_MIN, NET_MTU_MAX)!;
  }
  const typeName = v.name === undefined || (!fs && !net) ? undefined : deviceType(parseDeviceName("command line.name", v.name)!)?.name;
  if (fs && typeName !== undefined && typeName !== "fs") throw new ConfigError(v["fs-tag"] !== undefined ? "--fs-tag" : "--fs-queues", `virtio-fs options with --name ${v.name}`);
  if (net && typeName !== undefined && typeName !== "net") throw new ConfigError(v.mac !== undefined ? "--mac" : "--mtu", `virtio-net options with --name ${v.name}`);
  const device = deviceFrom("command line", {
    socket: v["socket-path"],
    ...(v.name !== undefined ? { name: v.name } : {}),
    ...(v.domid !== undefined ? { domid: int("--domid", v.domid, 1, 0x7fef)! } : {}),
    ...(v["mmio-base"] !== undefined ? { mmioBase: v["mmio-base"] } : {}),
    ...(v.irq !== undefined ? { irq: int("--irq", v.irq, 0, 1019)! } : {}),
    ...(v["socket-mode"] !== undefined ? { socketMode: v["socket-mode"] } : {}),
    memory: v["foreign-mapping"] ? "foreign" : (v.memory ?? "auto"),
    ...(v["backend-cmd"] !== undefined ? { backendCmd: v["backend-cmd"] } : {}),
    ...(v["queue-size"] !== undefined ? { queueSize: int("--queue-size", v["queue-size"], 1, 32768)! } : {}),
    ...(v.shadow !== undefined ? { shadow: oneOf("--shadow", v.shadow, ["auto", "always", "never"], "auto") } : {}),
    ...(fs ? { fs } : {}),
    ...(net ? { net } : {}),
  });
  return finish([device], rest);
}

/** Reads a JSON configuration file. @throws ConfigError naming the file and key */
export function loadConfigFile(path: string): BridgeConfig {
  let text: string;
  try {
    if (!statSync(path).isFile()) throw new Error("not a regular file");
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(path, `cannot read the configuration: ${(err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(path, `not valid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new ConfigError(path, "expected a JSON object");
  const o = json as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!["devices", "backendDomid", "logLevel", "metrics"].includes(k)) throw new ConfigError(`${path}: ${k}`, "unknown key");
  if (!Array.isArray(o["devices"])) throw new ConfigError(`${path}: devices`, "expected an array of devices");
  const devices = (o["devices"] as JsonDevice[]).map((d, i) => deviceFrom(`${path}: devices[${i}]`, d));
  const metrics = o["metrics"];
  if (metrics !== undefined && typeof metrics !== "string" && typeof metrics !== "number")
    throw new ConfigError(`${path}: metrics`, "expected a socket path or a TCP port");
  return finish(devices, {
    backendDomid: int(`${path}: backendDomid`, o["backendDomid"] as number | undefined, 0, 0x7fef) ?? 0,
    logLevel: oneOf(`${path}: logLevel`, o["logLevel"] as string | undefined, LOG_LEVELS, "info"),
    metrics,
    check: false,
  });
}
