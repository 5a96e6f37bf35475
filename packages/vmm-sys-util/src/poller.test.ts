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

  it("drainEventfd: the counter arrives as the third argument, a drained wake-up calls nothing, microtasks run after", async () => {
    using e = new EventFd();
    const seen: string[] = [];
    using _w = new FdWatcher(e.fd, (_events, errno, count) => {
      seen.push(`cb ${count} ${errno}`);
      // a microtask queued in the callback runs before the loop polls again
      void Promise.resolve().then(() => seen.push("microtask"));
    }, { drainEventfd: true }).start();
    e.write(3);
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual(["cb 3 0", "microtask"]);
    expect(e.read()).toBeNull(); // the watcher reset the counter
    // readable, but drained by someone else before the watcher ran: no callback
    e.write(1);
    expect(e.take()).toBe(1);
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual(["cb 3 0", "microtask"]);
    e.write(2);
    await new Promise((r) => setTimeout(r, 20));
    expect(seen).toEqual(["cb 3 0", "microtask", "cb 2 0", "microtask"]);
  });

  it("without drainEventfd the callback reads the fd itself and count is 0", async () => {
    using e = new EventFd();
    const counts: number[] = [];
    using _w = new FdWatcher(e.fd, (_events, _errno, count) => {
      counts.push(count);
      e.read();
    }).start();
    e.write(5);
    await new Promise((r) => setTimeout(r, 20));
    expect(counts).toEqual([0]);
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
