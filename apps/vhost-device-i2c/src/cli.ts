// Command line of vhost-device-i2c. rust-vmm's syntax for host adapters, `-l <bus>:<addr>[:<addr>][,...]`
// (e.g. `-l 1:32:33,2:80`: clients 32 and 33 on /dev/i2c-1, 80 on /dev/i2c-2; decimal as rust-vmm, 0x-hex
// also accepted), extended with simulated adapters: `sim:rtc@0x20:eeprom@0x50`, or with commas as in
// `-l sim:rtc@0x20,eeprom@0x50` (a `type@addr` entry continues the last simulated adapter).
import { parseArgs } from "node:util";
import { UsageError, commonArgs, commonHelp, commonOptions, parseNumber, type CommonArgs } from "@xen-vhost/vhost-user-backend";
import { simDeviceTypes, type SimDeviceType } from "./sim.js";

export type AdapterSpec =
  | { kind: "host"; bus: number; addresses: number[] }
  | { kind: "sim"; devices: { type: SimDeviceType; addr: number }[] };

export const help = `vhost-device-i2c: a vhost-user virtio-i2c back-end (virtio 1.2 section 5.18)

Usage: vhost-device-i2c -s <PATH> [-c <N>] -l <ADAPTERS>

${commonHelp}
  -l, --device-list <LIST>   adapters and their clients, comma-separated:
                               <bus>:<addr>[:<addr>...]       host adapter /dev/i2c-<bus> (I2C_RDWR, SMBus fallback)
                               sim:<type>@<addr>[:<type>@<addr>...]   simulated adapter
                               <type>@<addr>                  one more device on the last simulated adapter
                             simulated types: rtc (= ds1338: BCD time from the host clock, writable),
                             eeprom (= 24c02: 256 bytes, 8-byte pages); addresses decimal or 0x-hex, 7-bit
                             e.g. -l 1:32:0x50   -l sim:rtc@0x20,eeprom@0x50
      --no-inflight          do not offer INFLIGHT_SHMFD (a daemon killed inside a transfer then loses it
                             instead of running it again after the restart)

All sockets share the adapters. Features: VERSION_1, EVENT_IDX, INDIRECT_DESC, NOTIFY_ON_EMPTY,
VIRTIO_I2C_F_ZERO_LENGTH_REQUEST (as rust-vmm: 0x171000001). Protocol features: MQ, REPLY_ACK, BACKEND_REQ,
CONFIGURE_MEM_SLOTS, RESET_DEVICE, STATUS, INFLIGHT_SHMFD (unless --no-inflight), XEN_MMAP with --xen-mapper.
Malformed requests (bad lengths, unknown flags, addresses not served) get VIRTIO_I2C_MSG_ERR.

Exit status: 0 after SIGINT/SIGTERM, 1 on a fatal error, 2 for a bad command line.`;

function addr(text: string, where: string): number {
  const a = parseNumber(text, `${where}: address`);
  if (a > 0x7f) throw new UsageError(`${where}: address ${text} is not a 7-bit I2C address (0..0x7f)`);
  return a;
}

function simDevice(text: string): { type: SimDeviceType; addr: number } {
  const m = /^([a-z0-9]+)@(.+)$/i.exec(text);
  if (!m) throw new UsageError(`"${text}": a simulated device is <type>@<addr>`);
  const type = m[1]!.toLowerCase();
  if (!(type in simDeviceTypes))
    throw new UsageError(`"${text}": unknown simulated device "${type}" (known: ${Object.keys(simDeviceTypes).join(", ")})`);
  return { type: type as SimDeviceType, addr: addr(m[2]!, text) };
}

/** Parses the -l list. @throws UsageError naming the bad entry */
export function parseDeviceList(list: string): AdapterSpec[] {
  const out: AdapterSpec[] = [];
  const seen = new Map<number, string>();
  const claim = (a: number, entry: string): void => {
    const prev = seen.get(a);
    if (prev !== undefined) throw new UsageError(`address 0x${a.toString(16)} appears twice ("${prev}" and "${entry}")`);
    seen.set(a, entry);
  };
  for (const raw of list.split(",")) {
    const entry = raw.trim();
    if (entry === "") throw new UsageError(`empty entry in device list "${list}"`);
    const parts = entry.split(":");
    if (parts[0]!.toLowerCase() === "sim") {
      if (parts.length < 2) throw new UsageError(`"${entry}": a simulated adapter needs at least one <type>@<addr>`);
      const devices = parts.slice(1).map(simDevice);
      for (const d of devices) claim(d.addr, entry);
      out.push({ kind: "sim", devices });
    } else if (parts.length === 1 && entry.includes("@")) {
      const last = out[out.length - 1];
      if (last?.kind !== "sim") throw new UsageError(`"${entry}": a <type>@<addr> entry must follow a sim: adapter`);
      const d = simDevice(entry);
      claim(d.addr, entry);
      last.devices.push(d);
    } else {
      if (parts.length < 2) throw new UsageError(`"${entry}": a host adapter is <bus>:<addr>[:<addr>...]`);
      const bus = parseNumber(parts[0]!, `"${entry}": bus`, 0xffff);
      const addresses = parts.slice(1).map((p) => addr(p, `"${entry}"`));
      for (const a of addresses) claim(a, entry);
      out.push({ kind: "host", bus, addresses });
    }
  }
  if (out.length === 0) throw new UsageError("the device list is empty");
  return out;
}

export interface I2cArgs {
  common: CommonArgs;
  adapters: AdapterSpec[];
  /** Offer INFLIGHT_SHMFD (default true; --no-inflight). */
  inflight: boolean;
  help: boolean;
}

export function parse(argv: readonly string[]): I2cArgs {
  let values;
  try {
    ({ values } = parseArgs({ args: [...argv], options: { ...commonOptions, "device-list": { type: "string", short: "l" }, "no-inflight": { type: "boolean", default: false } }, strict: true }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return { common: undefined as never, adapters: [], inflight: true, help: true };
  const common = commonArgs(values);
  if (!values["device-list"]) throw new UsageError("--device-list is required");
  return { common, adapters: parseDeviceList(values["device-list"]), inflight: !values["no-inflight"], help: false };
}
