// --check: validates the configuration and the environment and says, in plain words, what is missing.
import { accessSync, constants, existsSync, readFileSync, statSync } from "node:fs";
import { Xen, XenStore, type XenTransport } from "@xen-vhost/xen-sys";
import { socketFor, type BridgeConfig } from "./config.js";
import { SIM_ENV } from "./transport.js";

export interface CheckResult {
  ok: boolean;
  lines: string[];
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

export async function checkEnvironment(config: BridgeConfig, env: NodeJS.ProcessEnv, openTransport: () => Promise<XenTransport>): Promise<CheckResult> {
  const lines: string[] = [];
  let ok = true;
  const good = (m: string) => lines.push(`ok    ${m}`);
  const bad = (m: string) => {
    ok = false;
    lines.push(`FAIL  ${m}`);
  };
  const note = (m: string) => lines.push(`note  ${m}`);
  const sim = env[SIM_ENV];
  if (!sim) {
    for (const node of ["/dev/xen/privcmd", "/dev/xen/evtchn", "/dev/xen/gntdev"]) {
      if (!existsSync(node)) bad(`${node} is missing: run in dom0 (or a driver domain) with the xen-privcmd, xen-evtchn and xen-gntdev modules loaded`);
      else {
        try {
          accessSync(node, constants.R_OK | constants.W_OK);
          good(`${node} is usable`);
        } catch {
          bad(`${node} exists but is not readable and writable by this user (run as root)`);
        }
      }
    }
  } else good(`simulator selected by ${SIM_ENV}=${sim}`);
  try {
    const transport = await openTransport();
    using xen = Xen.open({ transport });
    const phys = xen.physinfo();
    good(`Xen answers sysctl physinfo: ${phys.nrCpus} CPU(s)`);
    const caps = transport.capabilities();
    if (caps.ioeventfd && caps.irqfd) good("kernel ioeventfd/irqfd (privcmd, Linux >= 6.7): queue notifications bypass userspace");
    else note("kernel ioeventfd/irqfd are not available: notifications are relayed in userspace (works, slower)");
    const doms = xen.listDomains();
    good(`hypercalls work: ${doms.length} domain(s) visible`);
    for (const d of config.devices) {
      if (d.domid !== undefined && !doms.some((x) => x.domid === d.domid)) bad(`domain ${d.domid} (configured) does not exist`);
    }
  } catch (err) {
    bad(`cannot talk to Xen: ${(err as Error).message}`);
  }
  if (config.discovery) {
    try {
      const xs = await XenStore.open(env["XENSTORED_PATH"] ? { socketPath: env["XENSTORED_PATH"] } : {});
      good(`XenStore reachable (${xs.description})`);
      xs.close();
    } catch (err) {
      bad(`XenStore is not reachable (discovery needs it): ${(err as Error).message}`);
    }
  }
  for (const [i, d] of config.devices.entries()) {
    const path = socketFor(d.socket, d.deviceId, 0);
    if (d.backendCmd) good(`device ${i}: backend will be started: ${d.backendCmd.join(" ")}`);
    else if (d.socketMode === "server") good(`device ${i}: will listen on ${path} for the backend`);
    else if (isSocket(path)) good(`device ${i}: backend socket ${path} exists`);
    else bad(`device ${i}: no backend listening at ${path} (start the backend, or use --backend-cmd / --socket-mode server)`);
  }
  try {
    const release = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
    note(`kernel ${release}`);
  } catch {
    // not Linux: the device nodes above already failed
  }
  return { ok, lines };
}
