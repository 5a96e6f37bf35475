// Shared by the simulator tests: spawning the built daemons and the bridge, collecting their logs, and
// waiting on conditions driven by events (polled, with a deadline that prints the recent logs).
import { spawn, type ChildProcess } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const bridgeMain = join(here, "..", "dist", "main.js");
export const daemonMain = (name: "rng" | "i2c" | "gpio"): string => join(here, "..", "..", `vhost-device-${name}`, "dist", "main.js");
/** The vm-memory-xen region mapper bound to the simulator (what --xen-mapper loads in a backend). */
export const simMapper = join(here, "..", "demo", "sim-region-mapper.mjs");
export const fixture = (name: string): string => join(here, "fixtures", name);

export interface Spawned {
  child: ChildProcess;
  log: string[];
}

export class Processes {
  readonly all: Spawned[] = [];

  start(cmd: string, args: string[], env: Record<string, string>, name: string, options: { stdin?: boolean } = {}): Spawned {
    const child = spawn(process.execPath, [cmd, ...args], { env: { ...process.env, ...env }, stdio: [options.stdin ? "pipe" : "ignore", "pipe", "pipe"] });
    const log: string[] = [];
    const collect = (d: Buffer): void => {
      log.push(...d.toString().split("\n").filter(Boolean).map((l) => `[${name}] ${l}`));
    };
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    const s = { child, log };
    this.all.push(s);
    return s;
  }

  logs(): string[] {
    return this.all.flatMap((s) => s.log);
  }

  killAll(): void {
    for (const s of this.all.splice(0)) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill("SIGKILL");
  }
}

export async function waitFor(what: string, cond: () => boolean, ms = 20_000, logs: () => string[] = () => []): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${logs().slice(-40).join("\n")}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
