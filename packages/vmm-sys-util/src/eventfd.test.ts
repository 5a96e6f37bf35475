import { describe, expect, it } from "vitest";
import { EventFd } from "./eventfd.js";
import { FdWatcher, PollEvents } from "./poller.js";
import { SysError } from "./errno.js";

describe("EventFd", () => {
  it("counts writes and resets on read", () => {
    using e = new EventFd();
    expect(e.read()).toBeNull(); // nonblocking: nothing yet
    e.write();
    e.write(4);
    expect(e.read()).toBe(5n);
    expect(e.read()).toBeNull();
  });

  it("take() and signal(): the counter as a number and write(1), without bigints", () => {
    using e = new EventFd();
    expect(e.take()).toBe(0);
    expect(e.signal()).toBe(true);
    expect(e.signal()).toBe(true);
    e.write(40n);
    expect(e.take()).toBe(42);
    expect(e.take()).toBe(0);
    e.write(0xffff_ffff_fffe_0000n); // above 2^53: rounded, still a number
    expect(e.take()).toBe(Number(0xffff_ffff_fffe_0000n));
    // a full counter: signal reports false instead of blocking
    e.write(0xffff_ffff_ffff_fffen);
    expect(e.signal()).toBe(false);
    e.close();
    expect(() => e.take()).toThrow(expect.objectContaining({ code: "EBADF" }));
    expect(() => e.signal()).toThrow(expect.objectContaining({ code: "EBADF" }));
  });

  it("semaphore mode takes one per read", () => {
    using e = new EventFd({ semaphore: true, initval: 2 });
    expect(e.read()).toBe(1n);
    expect(e.read()).toBe(1n);
    expect(e.read()).toBeNull();
  });

  it("reports a full counter as false instead of blocking", () => {
    using e = new EventFd();
    expect(e.write(0xffff_ffff_ffff_fffen)).toBe(true);
    expect(e.write(1)).toBe(false);
  });

  it("rejects bad arguments before any syscall", () => {
    expect(() => new EventFd({ initval: -1 })).toThrow(RangeError);
    using e = new EventFd();
    expect(() => e.write(0)).toThrow(RangeError);
    expect(() => e.write(1.5)).toThrow(RangeError);
  });

  it("close is idempotent and use after close is EBADF", () => {
    const e = new EventFd();
    e.close();
    e.close();
    expect(e.closed).toBe(true);
    expect(() => e.write()).toThrow(SysError);
    try {
      e.read();
    } catch (err) {
      expect((err as SysError).code).toBe("EBADF");
    }
  });

  it("ping-pongs through the watcher on the event loop", async () => {
    using a = new EventFd();
    using b = new EventFd();
    const rounds = 1000;
    let seen = 0;
    // a -> (watcher) -> b -> (watcher) -> a ...
    const done = new Promise<void>((resolve) => {
      const wa = new FdWatcher(a.fd, () => {
        a.read();
        b.write();
      }).start();
      const wb = new FdWatcher(b.fd, () => {
        b.read();
        if (++seen === rounds) {
          wa.close();
          wb.close();
          resolve();
        } else a.write();
      }).start(PollEvents.READABLE);
    });
    a.write();
    await done;
    expect(seen).toBe(rounds);
  });
});
