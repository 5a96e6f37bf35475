import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BackendProcess } from "./backend-process.js";

const dir = mkdtempSync(join(tmpdir(), "xvm-backend-"));
// A stand-in backend: creates its "socket" file and lives until killed (a real daemon does the same).
const fakeBackend = (sock: string) => ["sh", "-c", `touch ${sock}; exec sleep 30`];

describe("BackendProcess", () => {
  it("starts, waits for the socket, restarts after a crash, stops", async () => {
    const sock = join(dir, "a.sock");
    const b = new BackendProcess({ command: fakeBackend(sock), socket: sock, restartDelayMs: 10 });
    const pid = await b.start();
    expect(existsSync(sock)).toBe(true);
    const restarted = new Promise<number>((r) => b.once("ready", r));
    process.kill(pid, "SIGKILL");
    const pid2 = await restarted;
    expect(pid2).not.toBe(pid);
    expect(b.restarts).toBe(1);
    await b.stop();
    expect(b.pid).toBeUndefined();
  });

  it("fails clearly when the backend dies before creating its socket, or cannot be run", async () => {
    const b = new BackendProcess({ command: ["sh", "-c", "exit 3"], socket: join(dir, "never.sock") });
    await expect(b.start()).rejects.toThrow(/exited before creating/);
    await b.stop();
    const c = new BackendProcess({ command: ["/nonexistent/backend"] });
    await expect(c.start()).rejects.toThrow(/ENOENT/);
    await c.stop();
  });
});
