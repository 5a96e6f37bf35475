// Command line of vhost-device-rng, as rust-vmm's: -s SOCKET -c N, -p PERIOD (ms), -m MAX_BYTES, -f FILE.
import { parseArgs } from "node:util";
import { UsageError, commonArgs, commonHelp, commonOptions, parseNumber, type CommonArgs } from "@xen-vhost/vhost-user-backend";
import type { RngOptions } from "./device.js";

export const help = `vhost-device-rng: a vhost-user virtio-rng back-end (virtio 1.2 section 5.4)

Usage: vhost-device-rng -s <PATH> [-c <N>] [-p <MS>] [-m <BYTES>] [-f <FILE>]

${commonHelp}
  -p, --period <MS>          rate-limit period in milliseconds [default: 65536]
  -m, --max-bytes <BYTES>    bytes allowed per period [default: unlimited]
  -f, --filename <FILE>      entropy source [default: the kernel CSPRNG via getrandom(2)]

Each socket serves one device. Protocol features offered: MQ, REPLY_ACK, BACKEND_REQ, CONFIGURE_MEM_SLOTS,
RESET_DEVICE, STATUS, INFLIGHT_SHMFD, and XEN_MMAP when --xen-mapper is given.

Exit status: 0 after SIGINT/SIGTERM, 1 on a fatal error, 2 for a bad command line.`;

export interface RngArgs {
  common: CommonArgs;
  rng: RngOptions;
  help: boolean;
}

export function parse(argv: readonly string[]): RngArgs {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        ...commonOptions,
        period: { type: "string", short: "p" },
        "max-bytes": { type: "string", short: "m" },
        filename: { type: "string", short: "f" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return { common: undefined as never, rng: {}, help: true };
  const rng: RngOptions = {};
  if (values.period !== undefined) {
    rng.periodMs = parseNumber(values.period, "--period");
    if (rng.periodMs === 0) throw new UsageError("--period must be positive");
  }
  if (values["max-bytes"] !== undefined) {
    rng.maxBytes = parseNumber(values["max-bytes"], "--max-bytes");
    if (rng.maxBytes === 0) throw new UsageError("--max-bytes must be positive");
  }
  if (values.filename !== undefined) rng.filename = values.filename;
  return { common: commonArgs(values), rng, help: false };
}
