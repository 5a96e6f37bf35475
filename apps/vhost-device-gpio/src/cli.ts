// Command line of vhost-device-gpio, as rust-vmm's: `-s PATH -c N -l <chip>[:<chip>...]` with one chip per
// socket (socket i serves chip i): a number N is /dev/gpiochipN, `s<N>` a simulated chip of N lines named
// dummy0..dummy<N-1> (rust-vmm's mock chip), and (our addition) `sim=<name>,<name>,...` a simulated chip
// with named lines.
import { parseArgs } from "node:util";
import { UsageError, commonArgs, commonHelp, commonOptions, parseNumber, type CommonArgs } from "@xen-vhost/vhost-user-backend";

export type ChipSpec = { kind: "host"; index: number } | { kind: "sim"; lines: number | string[] };

export const help = `vhost-device-gpio: a vhost-user virtio-gpio back-end (virtio 1.2 section 5.19)

Usage: vhost-device-gpio -s <PATH> [-c <N>] -l <CHIP>[:<CHIP>...]

${commonHelp}
  -l, --device-list <LIST>   one chip per socket, ':'-separated (socket i serves chip i):
                               <N>                 host chip /dev/gpiochip<N> (GPIO v2 character device)
                               s<N>                simulated chip, N lines named dummy0..dummy<N-1>
                               sim=<name>,<name>   simulated chip with named lines
                             e.g. -c 2 -l 0:s8     -l sim=led0,led1,button
      --sim-stdin            drive simulated input lines from stdin, one command per line:
                               <chip> <line> <0|1>   (chip = socket index, line = number or name)

Features: VERSION_1, EVENT_IDX, INDIRECT_DESC, NOTIFY_ON_EMPTY, VIRTIO_GPIO_F_IRQ (as rust-vmm: 0x171000001);
two queues (requests, events); config {ngpio, gpio_names_size}. Protocol features: MQ, REPLY_ACK, BACKEND_REQ,
CONFIGURE_MEM_SLOTS, RESET_DEVICE, STATUS, CONFIG, INFLIGHT_SHMFD, XEN_MMAP with --xen-mapper. Malformed
requests (bad lengths, unknown types, lines out of range) get VIRTIO_GPIO_STATUS_ERR.

Exit status: 0 after SIGINT/SIGTERM, 1 on a fatal error, 2 for a bad command line.`;

export function parseChipList(list: string): ChipSpec[] {
  const out: ChipSpec[] = [];
  for (const raw of list.split(":")) {
    const e = raw.trim();
    if (e === "") throw new UsageError(`empty entry in chip list "${list}"`);
    if (e.startsWith("sim=")) {
      const names = e.slice(4).split(",").map((n) => n.trim());
      if (names.some((n) => n === "")) throw new UsageError(`"${e}": empty line name`);
      if (names.some((n) => /[\0:]/.test(n))) throw new UsageError(`"${e}": line names cannot contain NUL or ':'`);
      if (names.length > 0xffff) throw new UsageError(`"${e}": too many lines`);
      out.push({ kind: "sim", lines: names });
    } else if (/^s\d+$/i.test(e)) {
      const n = parseNumber(e.slice(1), `"${e}": line count`, 0xffff);
      if (n < 1) throw new UsageError(`"${e}": a chip needs at least one line`);
      out.push({ kind: "sim", lines: n });
    } else if (/^\d+$/.test(e)) {
      out.push({ kind: "host", index: parseNumber(e, `"${e}": chip`) });
    } else throw new UsageError(`"${e}" is neither a chip number, s<N>, nor sim=<names>`);
  }
  return out;
}

export interface GpioArgs {
  common: CommonArgs;
  chips: ChipSpec[];
  simStdin: boolean;
  help: boolean;
}

export function parse(argv: readonly string[]): GpioArgs {
  let values;
  try {
    ({ values } = parseArgs({ args: [...argv], options: { ...commonOptions, "device-list": { type: "string", short: "l" }, "sim-stdin": { type: "boolean", default: false } }, strict: true }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return { common: undefined as never, chips: [], simStdin: false, help: true };
  const common = commonArgs(values);
  if (!values["device-list"]) throw new UsageError("--device-list is required");
  const chips = parseChipList(values["device-list"]);
  if (chips.length !== common.socketCount)
    throw new UsageError(`--device-list has ${chips.length} chip(s) but --socket-count is ${common.socketCount}: one chip per socket`);
  return { common, chips, simStdin: values["sim-stdin"] === true, help: false };
}
