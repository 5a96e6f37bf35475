// Daemons a test starts must not outlive the test process, even when a hook that would stop them failed or
// timed out, or the test runner killed its worker (the daemon would keep busy-polling a CPU forever).
// `spawnDaemon` starts them through util-linux's `setpriv --pdeathsig KILL` (prctl PR_SET_PDEATHSIG, kept
// across the exec), so the kernel kills them when this process dies however it dies; the pid is the daemon's.
// Without setpriv it falls back to a process 'exit' handler, which covers an orderly exit only.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from "node:child_process";

const hasSetpriv = spawnSync("setpriv", ["--pdeathsig", "KILL", "--", "true"]).status === 0;
const children = new Set<ChildProcess>();
let installed = false;

/** SIGKILLs `child` when this process exits normally, unless it exited first. Returns `child`. */
export function killOnExit(child: ChildProcess): ChildProcess {
  if (!installed) {
    installed = true;
    process.once("exit", () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    });
  }
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** `spawn(command, args, options)` for a daemon that dies with this process. */
export function spawnDaemon(command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  const child = hasSetpriv ? spawn("setpriv", ["--pdeathsig", "KILL", "--", command, ...args], options) : spawn(command, args, options);
  return killOnExit(child);
}
