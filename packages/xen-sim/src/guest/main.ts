// A guest vCPU process: `node dist/guest/main.js '<json>'` with {socket, domid, vcpu, program, args}.
// Attaches to the domain, waits for it to be unpaused, runs the program and reports on stdout as JSON lines:
// {"log": "..."} for each step the guest takes, then {"result": ...} or {"error": "..."}.
import { writeSync } from "node:fs";
import { isAbsolute } from "node:path";
import { pathToFileURL } from "node:url";
import { Guest } from "./guest.js";
import type { GuestProgram, GuestContext } from "./program.js";

interface GuestProcessConfig {
  socket: string;
  domid: number;
  vcpu?: number;
  program: string;
  args?: unknown;
  ioreqTimeoutMs?: number;
}

function emit(obj: unknown): void {
  writeSync(1, `${JSON.stringify(obj, (_k, v: unknown) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v))}\n`);
}

async function main(): Promise<number> {
  const cfg = JSON.parse(process.argv[2] ?? "{}") as GuestProcessConfig;
  const spec = isAbsolute(cfg.program) ? pathToFileURL(cfg.program).href : `./programs/${cfg.program}.js`;
  const mod = (await import(spec)) as { default: GuestProgram };
  const guest = Guest.attach(cfg.socket, cfg.domid);
  try {
    const ctx: GuestContext = {
      guest,
      vcpu: guest.vcpu(cfg.vcpu ?? 0, cfg.ioreqTimeoutMs !== undefined ? { ioreqTimeoutMs: cfg.ioreqTimeoutMs } : {}),
      args: cfg.args ?? {},
      log: (msg: string) => emit({ log: msg }),
    };
    guest.waitRunnable();
    const result = await mod.default(ctx);
    emit({ result: result ?? null, counters: ctx.vcpu.counters });
    return 0;
  } catch (err) {
    emit({ error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
    return 1;
  } finally {
    guest.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    emit({ error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
    process.exit(1);
  },
);
