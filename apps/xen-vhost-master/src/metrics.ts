// Counters per device and queue, readable at runtime in the Prometheus text exposition format (version
// 0.0.4) over a local unix socket or TCP port on localhost: `curl --unix-socket /run/xvm.metrics http://x/`.
import { createServer, type Server } from "node:http";
import { chmodSync, rmSync } from "node:fs";

export interface DeviceCounters {
  ioreqs: number;
  kicks: number;
  interrupts: number;
  configReads: number;
  errors: number;
}

/** A source of labelled counters (the bridge registers each device). */
export type CounterSource = () => Iterable<{ labels: Record<string, string | number>; counters: Partial<DeviceCounters> & Record<string, number> }>;

const HELP: Record<string, string> = {
  ioreqs: "MMIO accesses (ioreqs) served for the device",
  kicks: "queue notifications relayed to the backend",
  interrupts: "interrupts raised in the guest",
  configReads: "config-space reads by the guest",
  errors: "bad guest accesses and backend errors",
  kicksOffloadedQueues: "queues whose doorbell the kernel completes (their kicks are not in kicks_total)",
  ioreqsHandled: "ioreqs the guest's IOREQ server answered (all devices)",
  doorbells: "QueueNotify writes relayed to a backend by the userspace doorbell path (all devices)",
  spurious: "ioreq events with no request behind them (on Linux >= 6.7 mostly doorbells the kernel completed)",
  unmapped: "guest accesses to addresses no device holds",
  badIoreqs: "malformed ioreqs (bad size, rep count, type, vCPU)",
  handlerErrors: "device handlers that failed",
};

function escape(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Renders the counters as Prometheus text. */
export function renderMetrics(source: CounterSource): string {
  const byName = new Map<string, string[]>();
  for (const { labels, counters } of source()) {
    const l = Object.entries(labels).map(([k, v]) => `${k}="${escape(String(v))}"`).join(",");
    for (const [name, value] of Object.entries(counters)) {
      const lines = byName.get(name) ?? [];
      lines.push(`xen_vhost_${name}_total{${l}} ${value}`);
      byName.set(name, lines);
    }
  }
  let out = "";
  for (const [name, lines] of byName) {
    out += `# HELP xen_vhost_${name}_total ${HELP[name] ?? name}\n# TYPE xen_vhost_${name}_total counter\n${lines.join("\n")}\n`;
  }
  return out;
}

/** Serves the counters; `where` is a unix socket path (mode 0600) or a TCP port bound to 127.0.0.1. */
export async function serveMetrics(where: string | number, source: CounterSource): Promise<Server> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
    res.end(renderMetrics(source));
  });
  server.unref();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if (typeof where === "number") server.listen(where, "127.0.0.1", resolve);
    else {
      rmSync(where, { force: true });
      server.listen(where, () => {
        chmodSync(where, 0o600);
        resolve();
      });
    }
  });
  return server;
}
