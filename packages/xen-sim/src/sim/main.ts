// The simulator process: `node dist/sim/main.js '<json config>'`. Prints one JSON line
// {"ready": true, "socket": ..., "xenstore": ...} on stdout when listening and exits when stdin closes (its
// parent went away), so a crashed test never leaves a simulator behind.
import { readdirSync } from "node:fs";
import { close as closeFd } from "@xen-vhost/vmm-sys-util";
import type { XsPermission } from "@xen-vhost/xen-sys";
import { Hypervisor, type HypervisorConfig } from "./hypervisor.js";
import { SimServer } from "./server.js";
import { SimXenStored } from "./xenstored.js";
import { writeDomain, writeVirtioDevice, writeVirtioDisk } from "./libxl.js";
import { refuse } from "../error.js";
import type { Domain, DomainConfig } from "./domain.js";
import type { Reply } from "./hypervisor.js";

export interface SimProcessConfig extends HypervisorConfig {
  socket: string;
  /** Start a XenStore (default true). */
  xenstore?: boolean;
}

function uuidString(u: Uint8Array): string {
  const h = Buffer.from(u).toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? "{}") as SimProcessConfig;
  const hv = new Hypervisor({ ...cfg, domains: [] });
  const xs = cfg.xenstore === false ? undefined : await SimXenStored.listen(`${cfg.socket}.xenstored`);
  const seed = (path: string, value: string, perms?: XsPermission[]): void => xs?.seed(path, value, perms);
  // Domains xenstored knows about, and whether it has seen them shut down (xenstored_domain.c keeps the
  // same per-domain flag to fire @releaseDomain once per shutdown).
  const known = new Map<number, { shutdown: boolean }>();
  const announce = (d: Domain): void => {
    writeDomain(seed, d.domid, d.name, uuidString(d.uuid), d.vcpus, Number(d.totPages()) * 4);
    known.set(d.domid, { shutdown: false });
    // libxl introduces every new domain to xenstored (xs_introduce_domain): @introduceDomain.
    xs?.introduceDomain(d.domid);
  };
  /**
   * xenstored's domain_cleanup, run where the real one runs on VIRQ_DOM_EXC: after every operation that can
   * kill or shut down a domain (any request on the sim socket). A domain that is gone or dying loses its
   * xenstore connections; a newly shut down one keeps them; either fires @releaseDomain.
   */
  const cleanup = (): void => {
    if (!xs) return;
    for (const [domid, k] of known) {
      const d = hv.domains.get(domid);
      if (!d || d.dying) {
        known.delete(domid);
        xs.releaseDomain(domid);
      } else if (d.shutdownReason !== undefined && !k.shutdown) {
        k.shutdown = true;
        xs.releaseDomain(domid, { dropConnections: false });
      }
    }
  };
  seed("/local/domain/0/name", "Domain-0");
  seed("/local/domain/0/domid", "0");
  for (const dc of cfg.domains ?? []) announce(hv.createDomain(dc));

  const ok = (result: unknown = {}): Reply => ({ result });
  const server: SimServer = new SimServer(hv, cfg.socket, {
    ...(xs ? { xenstore: xs } : {}),
    afterRequest: cleanup,
    methods: {
      "control.createDomain": (_c, p: { config: DomainConfig }) => {
        const d = hv.createDomain(p.config ?? {});
        announce(d);
        return ok({ domid: d.domid });
      },
      "control.pause": (_c, p: { domid: number }) => (hv.domain(p.domid).pause(), ok()),
      "control.unpause": (_c, p: { domid: number }) => (hv.domain(p.domid).unpause(), ok()),
      "control.destroy": (_c, p: { domid: number; lingerMs?: number }) => {
        // xl destroy: libxl removes the domain's xenstore directory and destroys the domain; xenstored then
        // notices the death (cleanup, after this request) and fires @releaseDomain.
        hv.destroyDomain(p.domid, p.lingerMs !== undefined ? { lingerMs: p.lingerMs } : {});
        xs?.remove(`/local/domain/${p.domid}`);
        return ok();
      },
      // The guest's xenbus: a xenstored connection bound to its domid (the ring page + event channel of a
      // real PV guest, as a socketpair).
      "guest.xenbus": (_c, p: { domid: number }) => {
        const d = hv.domain(p.domid);
        if (!xs) refuse("ENOSYS", "no xenstore");
        if (d.domid === 0) refuse("EINVAL", "dom0 uses the xenstored socket");
        const fd = xs.connectDomain(d.domid);
        // The reply (with a dup of the fd) is sent as soon as this handler returns; our copy goes after that.
        setImmediate(() => closeFd(fd));
        return { result: {}, fds: [fd] };
      },
      "control.domain": (_c, p: { domid: number }) => {
        const d = hv.domain(p.domid);
        return ok({ domid: d.domid, name: d.name, paused: d.paused, attached: d.attached, ports: [...d.ports.keys()], servers: [...d.ioreqServers.keys()] });
      },
      "control.shutdown": (_c, p: { domid: number; reason: number }) => (hv.shutdownDomain(p.domid, p.reason), ok()),
      "control.setVcpus": (_c, p: { domid: number; vcpus: number }) => (hv.domain(p.domid).setOnlineVcpus(p.vcpus), ok()),
      "control.setMemory": (_c, p: { domid: number; pages: number }) => (hv.domain(p.domid).setCurrentPages(p.pages), ok()),
      "control.irqLevel": (_c, p: { domid: number; irq: number }) => ok({ level: hv.domain(p.domid).irqLevel(p.irq) }),
      "control.console": () => ok({ text: hv.console }),
      "control.addVirtioDevice": (_c, p: { spec: Parameters<typeof writeVirtioDevice>[1] }) => {
        if (!xs) refuse("ENOSYS", "no xenstore");
        return ok({ path: writeVirtioDevice(seed, p.spec) });
      },
      "control.addVirtioDisk": (_c, p: { spec: Parameters<typeof writeVirtioDisk>[1] }) => {
        if (!xs) refuse("ENOSYS", "no xenstore");
        return ok({ path: writeVirtioDisk(seed, p.spec) });
      },
      "control.xsRead": (_c, p: { path: string }) => ok({ value: xs?.get(p.path) ?? null }),
      "control.xsWrite": (_c, p: { path: string; value: string; perms?: XsPermission[] }) => (seed(p.path, p.value, p.perms), ok()),
      "control.xsPerms": (_c, p: { path: string }) => ok({ perms: xs?.getPerms(p.path) ?? null }),
      "control.stats": (): Reply =>
        ok({ connections: server.connections, domains: [...hv.domains.keys()], fds: readdirSync("/proc/self/fd").length }),
    },
  });

  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    server.close();
    hv.close();
    await xs?.close();
    process.exit(0);
  };
  process.stdin.on("end", () => void stop());
  process.stdin.on("error", () => void stop());
  process.stdin.resume();
  process.on("SIGTERM", () => void stop());
  process.stdout.write(`${JSON.stringify({ ready: true, socket: cfg.socket, xenstore: xs?.path ?? null, pid: process.pid })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`xen-sim: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
