// How the bridge reaches Xen, chosen once at start-up: the kernel's privcmd driver in dom0, or - for tests
// and the demo - a simulator named by XEN_VHOST_SIM. Nothing above this choice differs between the two.
import { PrivcmdTransport, type XenTransport } from "@xen-vhost/xen-sys";
import type { Logger } from "@xen-vhost/vmm-sys-util";

/** The environment variable naming a xen-sim socket (packages/xen-sim). */
export const SIM_ENV = "XEN_VHOST_SIM";
/** Set to 1 with SIM_ENV: the simulated dom0 kernel has no privcmd ioeventfd/irqfd (userspace relay). */
export const SIM_NO_OFFLOAD_ENV = "XEN_VHOST_SIM_NO_OFFLOAD";

export async function openTransport(env: NodeJS.ProcessEnv, logger: Logger): Promise<XenTransport> {
  const sim = env[SIM_ENV];
  if (sim) {
    // The simulator is a test aid, not a dependency of the product: loaded only when asked for.
    let mod: { SimTransport: { connect(path: string): XenTransport & { disableEventfdOffload(): void } } };
    try {
      mod = (await import("@xen-vhost/xen-sim"));
    } catch (err) {
      throw new Error(`${SIM_ENV} is set but @xen-vhost/xen-sim is not installed: ${(err as Error).message}`, { cause: err });
    }
    logger.info("using the Xen simulator", { socket: sim });
    const t = mod.SimTransport.connect(sim);
    // The simulator offers privcmd's ioeventfd/irqfd (Linux >= 6.7); benchmarks and tests of the userspace
    // relay (older dom0 kernels) turn it off.
    if (env[SIM_NO_OFFLOAD_ENV] === "1") t.disableEventfdOffload();
    return t;
  }
  return PrivcmdTransport.open({ logger });
}
