// The command line: options, their checks, and the usage text (which documents the exit statuses).
import { parseArgs } from "node:util";
import { EXIT_CODES, MonitorError } from "./error.js";

export interface MonitorConfig {
  /** Seconds between polls. */
  interval: number;
  /** Print the domain table once and exit. */
  once: boolean;
  /** JSON lines on stdout instead of text. */
  json: boolean;
  /** Write each change to the Xen console (console_io). */
  console: boolean;
  /** Also report running / runnable / blocked flips. */
  scheduling: boolean;
  /** Names from XenStore; false skips it (domains show as "domain <id>"). */
  xenstore: boolean;
  /** xenstored's socket, when not the default (XENSTORED_PATH, then /var/run/xenstored/socket, then xenbus). */
  xenstorePath: string | undefined;
}

export const USAGE = `Usage: xen-monitor [options]

Polls every domain's state (sysctl getdomaininfolist through /dev/xen/privcmd) and reports each change:
created, paused/unpaused, running/runnable/blocked, shut down with its reason (poweroff, reboot, suspend, crash,
watchdog, soft_reset), dying, destroyed, vCPU count and memory changes. Each change is one line on the Xen
console (console_io hypercall, prefixed "xen-monitor: ") and on stdout. Runs in dom0 as root.

Options:
  --interval <seconds>  time between polls (default 1; 0.05 to 3600)
  --once                print the domain table like \`xl list\` and exit
  --json                JSON lines on stdout ({"time", "type", "domid", "name", ...})
  --no-console          do not write to the Xen console
  --scheduling          also report running / runnable / blocked flips (noisy: guests flip whenever they
                        wake or sleep)
  --xenstore <path>     xenstored socket for domain names (default: $XENSTORED_PATH, the xenstored socket,
                        then /dev/xen/xenbus)
  --no-xenstore         do not look names up (domains show as "domain <id>")
  -h, --help            this text

Environment: XEN_VHOST_SIM=<socket> watches a xen-sim simulator instead of Xen.

Exit status:
  ${EXIT_CODES.ok}  --once printed the table, or stopped by SIGINT/SIGTERM
  ${EXIT_CODES.Failed}  a hypercall kept failing while running
  ${EXIT_CODES.Usage}  bad command line
  ${EXIT_CODES.PrivcmdMissing}  /dev/xen/privcmd does not exist (not on Xen, or xen_privcmd not loaded)
  ${EXIT_CODES.NotPrivileged}  not privileged: privcmd cannot be opened (not root) or Xen refused the sysctl (not dom0)
  ${EXIT_CODES.InterfaceVersion}  this Xen's sysctl interface version is not one xen-sys supports
`;

/** Parses argv (without node and the script). @throws MonitorError "Usage" */
export function parseCommandLine(argv: readonly string[]): MonitorConfig | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        interval: { type: "string" },
        once: { type: "boolean" },
        json: { type: "boolean" },
        "no-console": { type: "boolean" },
        scheduling: { type: "boolean" },
        xenstore: { type: "string" },
        "no-xenstore": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    throw new MonitorError("Usage", `${(err as Error).message} (see --help)`, { cause: err });
  }
  const v = parsed.values;
  if (v.help) return "help";
  let interval = 1;
  if (v.interval !== undefined) {
    interval = Number(v.interval);
    if (!/^\d+(\.\d+)?$/.test(v.interval) || !(interval >= 0.05 && interval <= 3600)) {
      throw new MonitorError("Usage", `--interval ${v.interval}: expected seconds between 0.05 and 3600`);
    }
  }
  if (v.xenstore !== undefined && v["no-xenstore"]) throw new MonitorError("Usage", "--xenstore and --no-xenstore contradict each other");
  if (v.once && v.interval !== undefined) throw new MonitorError("Usage", "--once takes no --interval (it polls once)");
  return {
    interval,
    once: v.once === true,
    json: v.json === true,
    console: v["no-console"] !== true,
    scheduling: v.scheduling === true,
    xenstore: v["no-xenstore"] !== true,
    xenstorePath: v.xenstore,
  };
}
