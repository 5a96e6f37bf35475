import { describe, expect, it } from "vitest";
import { EventFd } from "./eventfd.js";
import { FdWatcher } from "./poller.js";
import { SysError } from "./errno.js";

describe("FdWatcher", () => {
  it("stops and restarts delivery", async () => {
    using e = new EventFd();
    let calls = 0;
    using w = new FdWatcher(e.fd, () => {
      calls++;
      e.read();
    }).start();
    e.write();
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toBe(1);
    w.stop();
    e.write();
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toBe(1);
    w.start();
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toBe(2);
  });

  it("routes a throwing callback to onError and keeps watching", async () => {
    using e = new EventFd();
    const errors: unknown[] = [];
    let calls = 0;
    using _w = new FdWatcher(
      e.fd,
      () => {
        e.read();
        if (++calls === 1) throw new Error("listener bug");
      },
      { onError: (err) => errors.push(err) },
    ).start();
    e.write();
    await new Promise((r) => setTimeout(r, 20));
    e.write();
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toBe(2);
    expect(errors).toHaveLength(1);
    expect((errors[0] as Error).message).toBe("listener bug");
  });

  it("close is idempotent; methods after close are EBADF", () => {
    using e = new EventFd();
    const w = new FdWatcher(e.fd, () => {});
    w.start();
    w.close();
    w.close();
    expect(w.closed).toBe(true);
    expect(() => w.start()).toThrow(SysError);
  });

  it("an unref'd watcher does not keep the loop alive, a ref'd one is reported active", () => {
    using e = new EventFd();
    using w = new FdWatcher(e.fd, () => {}).start();
    w.unref();
    w.ref();
    w.unref();
    expect(w.closed).toBe(false);
  });

  it("rejects bad arguments", () => {
    expect(() => new FdWatcher(-1, () => {})).toThrow(RangeError);
    // @ts-expect-error deliberately wrong
    expect(() => new FdWatcher(0, 5)).toThrow(TypeError);
  });

  it("many watchers created and closed leave nothing behind", async () => {
    using e = new EventFd();
    for (let i = 0; i < 2000; i++) new FdWatcher(e.fd, () => {}).start().close();
    // Unclosed watchers are released by GC; exercise that path too.
    for (let i = 0; i < 200; i++) new FdWatcher(e.fd, () => {});
    await new Promise((r) => setTimeout(r, 10));
  });
});
