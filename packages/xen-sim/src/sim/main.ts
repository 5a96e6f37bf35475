// The simulator process: `node dist/sim/main.js '<json config>'`. Prints one JSON line
// {"ready": true, "socket": ..., "xenstore": ...} on stdout when listening and exits when stdin closes (its
// parent went away), so a crashed test never leaves a simulator behind.
import { readdirSync } from "node:fs";
import { XenStoreTestServer } from "@xen-vhost/xen-sys/testing";
import { Hypervisor, type HypervisorConfig } from "./hypervisor.js";
import { SimServer } from "./server.js";
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
  const xs = cfg.xenstore === false ? undefined : await XenStoreTestServer.listen();
  const seed = (path: string, value: string): void => xs?.seed(path, value);
  const announce = (d: Domain): void => {
    writeDomain(seed, d.domid, d.name, uuidString(d.uuid), d.vcpus, Number(d.totPages()) * 4);
  };
  seed("/local/domain/0/name", "Domain-0");
  seed("/local/domain/0/domid", "0");
  for (const dc of cfg.domains ?? []) announce(hv.createDomain(dc));

  const ok = (result: unknown = {}): Reply => ({ result });
  const server: SimServer = new SimServer(hv, cfg.socket, {
    ...(xs ? { xenstore: xs } : {}),
    methods: {
      "control.createDomain": (_c, p: { config: DomainConfig }) => {
        const d = hv.createDomain(p.config ?? {});
        announce(d);
        return ok({ domid: d.domid });
      },
      "control.pause": (_c, p: { domid: number }) => (hv.domain(p.domid).pause(), ok()),
      "control.unpause": (_c, p: { domid: number }) => (hv.domain(p.domid).unpause(), ok()),
      "control.destroy": (_c, p: { domid: number; lingerMs?: number }) => {
        hv.destroyDomain(p.domid, p.lingerMs !== undefined ? { lingerMs: p.lingerMs } : {});
        xs?.remove(`/local/domain/${p.domid}`);
        return ok();
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
      "control.xsWrite": (_c, p: { path: string; value: string }) => (seed(p.path, p.value), ok()),
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
