// How the monitor reaches Xen, chosen once at start-up: privcmd in dom0, or - for tests and the demo - a
// xen-sim simulator named by XEN_VHOST_SIM (the same choice as xen-vhost-master's). Nothing above differs.
import { PrivcmdTransport, type XenTransport } from "@xen-vhost/xen-sys";
import { MonitorError } from "./error.js";

/** The environment variable naming a xen-sim socket (packages/xen-sim). */
export const SIM_ENV = "XEN_VHOST_SIM";

export interface OpenedTransport {
  transport: XenTransport;
  /** The simulator's XenStore socket, when it runs one. */
  xenstorePath: string | undefined;
}

/** @throws MonitorError "PrivcmdMissing" / "NotPrivileged" / "Failed" */
export async function openTransport(env: NodeJS.ProcessEnv): Promise<OpenedTransport> {
  const sim = env[SIM_ENV];
  try {
    if (sim) {
      // The simulator is a test aid, not a dependency of the product: loaded only when asked for.
      let mod: { SimTransport: { connect(path: string): XenTransport & { xenstorePath?: string | undefined } } };
      try {
        mod = await import("@xen-vhost/xen-sim");
      } catch (err) {
        throw new MonitorError("Failed", `${SIM_ENV} is set but @xen-vhost/xen-sim is not installed`, { cause: err });
      }
      const transport = mod.SimTransport.connect(sim);
      return { transport, xenstorePath: transport.xenstorePath };
    }
    return { transport: PrivcmdTransport.open(), xenstorePath: undefined };
  } catch (err) {
    throw MonitorError.from(err);
  }
}
