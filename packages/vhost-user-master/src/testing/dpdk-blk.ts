// DPDK 22.11's examples/vhost_blk for the real-backend tests and the benchmark: a busy-polling back-end with a
// 128 MiB RAM disk (32768 blocks of 4 KiB, addressed in 512-byte sectors) that offers INFLIGHT_SHMFD and
// STATUS. Debian ships the example as source (dpdk-doc); it is built once per DPDK version into $TMPDIR.
import { spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, cpSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnDaemon } from "./reap.js";

const EXAMPLE = "/usr/share/dpdk/examples/vhost_blk";

/** True if the example's source and what building it needs are here (Debian: dpdk-doc, dpdk-dev, make, gcc, pkg-config). */
export const hasDpdkVhostBlk = existsSync(EXAMPLE) && spawnSync("sh", ["-c", "pkg-config --exists libdpdk && command -v make && command -v cc"]).status === 0;

/** The RAM disk: 32768 blocks of 4096 bytes (vhost_blk.c: vhost_blk_bdev_construct(..., 4096, 32768, 0)). */
export const DPDK_BLK_BLOCKS = 32768;
export const DPDK_BLK_BLOCK_SIZE = 4096;

/** Builds the example once per machine (cached by DPDK version) and returns the binary. */
export function buildDpdkVhostBlk(): string {
  const version = spawnSync("pkg-config", ["--modversion", "libdpdk"], { encoding: "utf8" }).stdout.trim();
  const dir = join(tmpdir(), `xen-vhost-dpdk-vhost-blk-${version}`);
  const bin = join(dir, "build", "vhost-blk");
  if (existsSync(bin)) return bin;
  rmSync(dir, { recursive: true, force: true });
  cpSync(EXAMPLE, dir, { recursive: true });
  const r = spawnSync("make", ["-C", dir], { encoding: "utf8" });
  if (r.status !== 0 || !existsSync(bin)) throw new Error(`building vhost_blk failed: ${r.stderr}`);
  return bin;
}

export interface DpdkVhostBlk {
  /** `$dir/vhost.socket`: the example always listens on $PWD/vhost.socket. */
  readonly socket: string;
  readonly dir: string;
  readonly pid: number;
  /** SIGKILL (the RAM disk dies with it); `restart()` starts a new process on the same socket. */
  crash(): Promise<void>;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

let starts = 0;

/** Builds (if needed) and starts the example in a fresh directory; resolves once its socket exists. */
export async function startDpdkVhostBlk(options: { lcore?: number } = {}): Promise<DpdkVhostBlk> {
  const bin = buildDpdkVhostBlk();
  const dir = mkdtempSync(join(tmpdir(), "dpdk-blk-"));
  const socket = join(dir, "vhost.socket");
  let child!: ChildProcess;
  let exited!: Promise<void>;
  const start = async (): Promise<void> => {
    rmSync(socket, { force: true });
    const log = openSync(join(dir, "vhost-blk.log"), "a");
    // No hugepages, no PCI: a plain process with 512 MiB of ordinary memory, one busy-polling lcore.
    child = spawnDaemon(bin, ["-l", String(options.lcore ?? 1), "--no-huge", "-m", "512", "--no-pci", "--iova-mode=va", `--file-prefix=vublk${process.pid}-${starts++}`],
      { cwd: dir, stdio: ["ignore", log, log] });
    closeSync(log);
    const c = child;
    exited = new Promise((r) => c.once("exit", () => r()));
    for (let i = 0; i < 150 && !existsSync(socket) && c.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
    if (!existsSync(socket)) {
      c.kill("SIGKILL");
      await exited;
      throw new Error(`vhost-blk did not start: ${readFileSync(join(dir, "vhost-blk.log"), "utf8")}`);
    }
  };
  const kill = async (signal: NodeJS.Signals): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const t = setTimeout(() => child.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(t);
  };
  await start();
  return {
    socket, dir,
    get pid() {
      return child.pid ?? -1;
    },
    crash: () => kill("SIGKILL"),
    restart: start,
    async stop() {
      await kill("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
