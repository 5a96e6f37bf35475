// Starts qemu-storage-daemon's vhost-user-blk export on a raw image with known content, for the
// real-backend tests. Image content: sector i = "VUSECTOR" + u64le(i) + 496 x byte((7i+1) & 0xff).
import { spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { spawnDaemon } from "./reap.js";

export const SECTOR = 512;

/** True if qemu-storage-daemon is on PATH (Debian: qemu-system-common). */
export const hasQsd = spawnSync("sh", ["-c", "command -v qemu-storage-daemon"]).status === 0;

/** The expected content of sector `i`. */
export function sectorContent(i: number): Uint8Array {
  const s = new Uint8Array(SECTOR);
  s.set(new TextEncoder().encode("VUSECTOR"), 0);
  new DataView(s.buffer).setBigUint64(8, BigInt(i), true);
  s.fill((7 * i + 1) & 0xff, 16);
  return s;
}

export interface Qsd {
  socket: string;
  image: string;
  sectors: number;
  pid: number;
  /** SIGKILL, keeping the image (restart with `startQsd({ reuse })`). */
  crash(): Promise<void>;
  stop(): Promise<void>;
}

/** Writes the image and starts the daemon; resolves once the socket exists. */
export async function startQsd(options: { sectors?: number; numQueues?: number; reuse?: Qsd } = {}): Promise<Qsd> {
  const sectors = options.reuse?.sectors ?? options.sectors ?? 16384;
  const dir = options.reuse ? dirname(options.reuse.image) : mkdtempSync(join(tmpdir(), "qsd-"));
  const image = join(dir, "disk.raw");
  const socket = join(dir, "vhost-blk.sock");
  if (!options.reuse) {
    const img = new Uint8Array(sectors * SECTOR);
    for (let i = 0; i < sectors; i++) img.set(sectorContent(i), i * SECTOR);
    writeFileSync(image, img);
  }
  rmSync(socket, { force: true });
  const logFd = openSync(join(dir, "qsd.log"), "a");
  const child: ChildProcess = spawnDaemon("qemu-storage-daemon", [
    "--blockdev", `driver=file,node-name=file0,filename=${image},cache.direct=off`,
    "--blockdev", "driver=raw,node-name=disk0,file=file0",
    "--export", `type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=${socket},writable=on,num-queues=${options.numQueues ?? 1}`,
  ], { stdio: ["ignore", "ignore", logFd] });
  // The log goes to a file, not a pipe: a pipe would be an fd of this process for the daemon's lifetime.
  closeSync(logFd);
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  for (let i = 0; i < 100 && !existsSync(socket); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!existsSync(socket)) {
    child.kill("SIGKILL");
    await exited;
    const log = readFileSync(join(dir, "qsd.log"), "utf8");
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`qemu-storage-daemon did not create ${socket}: ${log}`);
  }
  return {
    socket,
    image,
    sectors,
    pid: child.pid ?? -1,
    async crash() {
      if (child.exitCode === null) child.kill("SIGKILL");
      await exited;
    },
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
