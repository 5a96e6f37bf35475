// The monitor as a user runs it (the built dist/main.js in its own process) against the simulator process:
// real getdomaininfolist bytes over SimTransport, the simulator's XenStore for names, console_io into the
// simulator's console. The toolstack side (create, pause, unpause, shutdown, destroy...) is driven here.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { startSimulator, type Simulator } from "@xen-vhost/xen-sim";
import { consoleLine, type MonitorEvent } from "../src/index.js";

const main = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "main.js");

interface Run {
  child: ChildProcess;
  lines: string[];
  stderr: () => string;
  exit: Promise<number | null>;
}

function runMonitor(args: string[], env: Record<string, string | undefined>): Run {
  const child = spawn(process.execPath, [main, ...args], { env: { ...process.env, XEN_VHOST_SIM: undefined, XENSTORED_PATH: undefined, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  createInterface({ input: child.stdout }).on("line", (l) => lines.push(l));
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  running.push(child);
  return { child, lines, stderr: () => err, exit };
}

const running: ChildProcess[] = [];
let sim: Simulator | undefined;
afterEach(async () => {
  for (const c of running.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await sim?.close();
  sim = undefined;
});

async function until(what: string, cond: () => boolean, run: Run, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; monitor said:\n${run.lines.join("\n")}\n${run.stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

type JsonEvent = MonitorEvent & { time: string; name: string | null };
const events = (run: Run): JsonEvent[] => run.lines.map((l) => JSON.parse(l) as JsonEvent);

describe("xen-monitor on the simulator", () => {
  it("reports each transition on stdout (JSON) and writes the same changes to the Xen console", async () => {
    sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 64 << 20, vcpus: 2, paused: false }] });
    const run = runMonitor(["--json", "--interval", "0.05"], sim.env());
    const seen = (pred: (e: JsonEvent) => boolean): (() => boolean) => () => events(run).some(pred);
    await until("the first poll", () => events(run).length >= 2, run);
    expect(events(run).slice(0, 2)).toMatchObject([
      { type: "present", domid: 0, name: "Domain-0", activity: "running" },
      { type: "present", domid: 1, name: "guest1", activity: "blocked", vcpus: 2, memKiB: 65536 },
    ]);

    const web = sim.createDomain({ name: "web", ram: 128 << 20, vcpus: 1 }); // paused, like xl create -p
    await until("created", seen((e) => e.type === "created" && e.domid === web), run);
    sim.unpause(web);
    await until("unpaused", seen((e) => e.type === "state" && e.domid === web && e.from === "paused"), run);
    sim.pause(1);
    await until("paused", seen((e) => e.type === "state" && e.domid === 1 && e.to === "paused"), run);
    sim.unpause(1);
    await until("unpaused 1", seen((e) => e.type === "state" && e.domid === 1 && e.from === "paused"), run);
    sim.control("setVcpus", { domid: 1, vcpus: 1 });
    await until("vcpus", seen((e) => e.type === "vcpus"), run);
    sim.control("setMemory", { domid: web, pages: 8192 });
    await until("memory", seen((e) => e.type === "memory"), run);
    sim.control("shutdown", { domid: web, reason: 3 });
    await until("shutdown", seen((e) => e.type === "shutdown"), run);
    sim.control("destroy", { domid: web, lingerMs: 2000 });
    await until("dying", seen((e) => e.type === "dying"), run);
    await until("web destroyed", seen((e) => e.type === "destroyed" && e.domid === web), run);
    sim.destroy(1);
    await until("guest1 destroyed", seen((e) => e.type === "destroyed" && e.domid === 1), run);

    run.child.kill("SIGTERM");
    expect(await run.exit).toBe(0);
    const all = events(run);
    // Names come from XenStore; the destroyed domains keep theirs although the toolstack removed the nodes.
    expect(all.slice(2).map(({ time: _t, ...e }) => e)).toEqual([
      { type: "created", domid: web, name: "web", activity: "paused", vcpus: 1, memKiB: 131072 },
      { type: "state", domid: web, name: "web", from: "paused", to: "blocked" },
      { type: "state", domid: 1, name: "guest1", from: "blocked", to: "paused" },
      { type: "state", domid: 1, name: "guest1", from: "paused", to: "blocked" },
      { type: "vcpus", domid: 1, name: "guest1", from: 2, to: 1 },
      { type: "memory", domid: web, name: "web", fromKiB: 131072, toKiB: 32768 },
      { type: "shutdown", domid: web, name: "web", code: 3, reason: "crash" },
      { type: "dying", domid: web, name: "web" },
      { type: "destroyed", domid: web, name: "web" },
      { type: "destroyed", domid: 1, name: "guest1" },
    ]);
    // The console got every change through console_io, in order, as text.
    const text = sim.control<{ text: string }>("console").text;
    expect(text).toBe(all.map((e) => consoleLine({ ...e, name: e.name ?? undefined })).join(""));
    expect(text).toContain("xen-monitor: web shut down: crash (domain 2)\n");
    expect(text).toContain("xen-monitor: guest1 paused (domain 1, was blocked)\n");
  });

  it("--once prints the domains as xl list would", async () => {
    sim = await startSimulator({
      domains: [
        { domid: 1, name: "guest1", ram: 64 << 20, vcpus: 2 },
        { domid: 5, name: "db", ram: 256 << 20, vcpus: 4, paused: false },
      ],
    });
    sim.control("shutdown", { domid: 5, reason: 0 });
    const run = runMonitor(["--once"], sim.env());
    expect(await run.exit).toBe(0);
    expect(run.lines[0]).toBe("Name                                        ID   Mem VCPUs\tState\tTime(s)");
    const rows = run.lines.slice(1).map((l) => l.trim().split(/\s+/));
    expect(rows.map((r) => r.slice(0, 5))).toEqual([
      ["Domain-0", "0", "0", "1", "r-----"],
      ["guest1", "1", "64", "2", "--p---"],
      ["db", "5", "256", "4", "---s--"],
    ]);
    for (const r of rows) expect(r[5]).toMatch(/^\d+\.\d$/);
    // --once is a read-only look: nothing on the console
    expect(sim.control<{ text: string }>("console").text).toBe("");
  });

  it("goes on without names when there is no XenStore", async () => {
    sim = await startSimulator({ xenstore: false, domains: [{ domid: 1, name: "guest1" }] });
    const run = runMonitor(["--once"], sim.env());
    expect(await run.exit).toBe(0);
    expect(run.stderr()).toMatch(/XenStore unavailable .*showing domain ids only/);
    expect(run.lines.slice(1).map((l) => l.split(/\s+/).slice(0, 2))).toEqual([["(unknown)", "0"], ["(unknown)", "1"]]);
  });

  it("exits 5 naming the problem when Xen's sysctl interface version is unknown", async () => {
    sim = await startSimulator({ release: "unreleased" as "4.17" });
    const run = runMonitor([], sim.env());
    expect(await run.exit).toBe(5);
    expect(run.stderr()).toMatch(/^xen-monitor: unsupported Xen: sysctl getdomaininfolist: Xen refused interface versions 0x15, 0x16, 0x14/);
  });

  it.skipIf(existsSync("/dev/xen/privcmd"))("exits 3 when privcmd is missing (needs a machine that is not a Xen domain)", async () => {
    const run = runMonitor(["--once"], {});
    expect(await run.exit).toBe(3);
    expect(run.stderr()).toContain("xen-monitor: /dev/xen/privcmd does not exist");
  });

  it("exits 2 on a bad command line and 0 for --help", async () => {
    const bad = runMonitor(["--interval", "fast"], {});
    expect(await bad.exit).toBe(2);
    expect(bad.stderr()).toContain("--interval fast");
    const help = runMonitor(["--help"], {});
    expect(await help.exit).toBe(0);
    expect(help.lines[0]).toBe("Usage: xen-monitor [options]");
  });
});
