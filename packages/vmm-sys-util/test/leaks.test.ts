// The whole API exercised in a loop: no fd survives its owner's close().
import { describe, expect, it } from "vitest";
import {
  EventFd, FdWatcher, MemoryMapping, UnixListener, UnixStream, memfdCreate, ftruncate, close, dup,
} from "../src/index.js";
import { fdLeakCheck } from "../src/testing/index.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

describe("fd hygiene", () => {
  it("opens and closes everything without leaking an fd", () => {
    const leaks = fdLeakCheck();
    const dir = mkdtempSync(join(tmpdir(), "leak-"));
    for (let i = 0; i < 50; i++) {
      using e = new EventFd();
      using w = new FdWatcher(e.fd, () => {}).start();
      w.stop();
      const m = memfdCreate("leak");
      ftruncate(m, 4096);
      using map = new MemoryMapping(4096, { fd: m });
      new Uint8Array(map.buffer)[0] = i;
      const d = dup(m);
      close(d);
      close(m);
      const [a, b] = UnixStream.pair();
      a.send(new Uint8Array(1), [e.fd]);
      const got = b.recv(new Uint8Array(1), 1)!;
      got.fds.forEach(close);
      a.close();
      b.close();
      using l = new UnixListener(join(dir, `s${i}`));
      using c = UnixStream.connect(l.path);
      l.accept()!.close();
      c.close();
    }
    rmSync(dir, { recursive: true, force: true });
    expect(leaks.check()).toEqual([]);
  });

  it("every fd is close-on-exec", async () => {
    using e = new EventFd();
    const m = memfdCreate("cloexec");
    const [a, b] = UnixStream.pair();
    const { readFileSync } = await import("node:fs");
    for (const fd of [e.fd, m, a.fd, b.fd]) {
      const flags = /flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))![1]!;
      expect(parseInt(flags, 8) & 0o2000000).toBe(0o2000000); // O_CLOEXEC
    }
    close(m);
    a.close();
    b.close();
  });
});
