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

/**
 * A source of labelled counters (the bridge registers each device); `gauges` are values that go down as well
 * (in-flight requests), rendered without the `_total` suffix.
 */
export type CounterSource = () => Iterable<{
  labels: Record<string, string | number>;
  counters: Partial<DeviceCounters> & Record<string, number>;
  gauges?: Record<string, number>;
}>;

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
  // shadow mode, per device and queue (ShadowRings.stats() summed over the device's activations)
  shadowPosted: "guest requests posted to the backend's shadow ring",
  shadowCompleted: "requests returned to the guest's used ring",
  shadowBytesIn: "bytes copied from guest buffers into shadow memory",
  shadowBytesOut: "bytes copied from shadow memory back into guest buffers",
  shadowStalls: "times the relay stopped taking guest requests (shadow pool or ring full)",
  shadowReposted: "requests posted again to a reconnected backend",
  shadowFailed: "requests completed to the guest as failed (backend lost)",
  shadowKicks: "kicks the relay sent to the backend",
  shadowInterrupts: "used-buffer interrupts the relay raised in the guest",
  shadowInFlight: "requests in the backend's shadow ring now",
  shadowPoolBytesUsed: "shadow buffer pool bytes in use now",
};

function escape(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Renders the counters as Prometheus text. */
export function renderMetrics(source: CounterSource): string {
  // One family per metric name: HELP and TYPE once, then a line per label set.
  const families = new Map<string, { type: "counter" | "gauge"; help: string; lines: string[] }>();
  const add = (metric: string, type: "counter" | "gauge", help: string, l: string, value: number): void => {
    let f = families.get(metric);
    if (!f) families.set(metric, (f = { type, help, lines: [] }));
    f.lines.push(`${metric}{${l}} ${value}`);
  };
  for (const { labels, counters, gauges } of source()) {
    const l = Object.entries(labels).map(([k, v]) => `${k}="${escape(String(v))}"`).join(",");
    for (const [name, value] of Object.entries(counters)) add(`xen_vhost_${name}_total`, "counter", HELP[name] ?? name, l, value);
    for (const [name, value] of Object.entries(gauges ?? {})) add(`xen_vhost_${name}`, "gauge", HELP[name] ?? name, l, value);
  }
  let out = "";
  for (const [metric, f] of families) out += `# HELP ${metric} ${f.help}\n# TYPE ${metric} ${f.type}\n${f.lines.join("\n")}\n`;
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
