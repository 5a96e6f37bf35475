import { request } from "node:http";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { renderMetrics, serveMetrics, type CounterSource } from "./metrics.js";
import { jsonLogger } from "./log.js";

const source: CounterSource = () => [
  { labels: { device: "virtio/3/0", type: "i2c" }, counters: { ioreqs: 12, kicks: 3, interrupts: 2, configReads: 0, errors: 1 } },
  { labels: { device: 'odd"name' }, counters: { ioreqs: 1 } },
];

describe("metrics", () => {
  it("renders Prometheus text with one family per counter", () => {
    const t = renderMetrics(source);
    expect(t).toContain("# TYPE xen_vhost_ioreqs_total counter\n");
    expect(t).toContain('xen_vhost_ioreqs_total{device="virtio/3/0",type="i2c"} 12\n');
    expect(t).toContain('xen_vhost_ioreqs_total{device="odd\\"name"} 1\n');
    expect(t).toContain('xen_vhost_kicks_total{device="virtio/3/0",type="i2c"} 3');
  });

  it("renders gauges without _total, one family each, beside per-queue counters", () => {
    const t = renderMetrics(() => [
      { labels: { device: "virtio/1/0", queue: 0 }, counters: { shadowCompleted: 7 }, gauges: { shadowInFlight: 2 } },
      { labels: { device: "virtio/1/0", queue: 1 }, counters: { shadowCompleted: 3 }, gauges: { shadowInFlight: 0 } },
    ]);
    expect(t).toBe(
      "# HELP xen_vhost_shadowCompleted_total requests returned to the guest's used ring\n# TYPE xen_vhost_shadowCompleted_total counter\n" +
        'xen_vhost_shadowCompleted_total{device="virtio/1/0",queue="0"} 7\nxen_vhost_shadowCompleted_total{device="virtio/1/0",queue="1"} 3\n' +
        "# HELP xen_vhost_shadowInFlight requests in the backend's shadow ring now\n# TYPE xen_vhost_shadowInFlight gauge\n" +
        'xen_vhost_shadowInFlight{device="virtio/1/0",queue="0"} 2\nxen_vhost_shadowInFlight{device="virtio/1/0",queue="1"} 0\n',
    );
  });

  it("serves them on a unix socket", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "xvm-metrics-")), "m.sock");
    const server = await serveMetrics(path, source);
    const body = await new Promise<string>((resolve, reject) => {
      request({ socketPath: path, path: "/" }, (res) => {
        let b = "";
        res.on("data", (d: Buffer) => (b += d.toString()));
        res.on("end", () => resolve(b));
      }).on("error", reject).end();
    });
    server.close();
    expect(body).toContain("xen_vhost_interrupts_total");
  });
});

describe("jsonLogger", () => {
  it("writes JSON lines with context, filtered by level", () => {
    const lines: string[] = [];
    const log = jsonLogger("info", (l) => lines.push(l)).child({ device: "virtio/1/0" });
    log.debug("hidden");
    log.info("up", { base: 0x2000000n, err: new Error("x") });
    expect(lines).toHaveLength(1);
    const o = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(o).toMatchObject({ level: "info", msg: "up", device: "virtio/1/0", base: 0x2000000, err: { message: "x" } });
  });
});
