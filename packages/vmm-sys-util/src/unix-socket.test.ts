import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { UnixListener, UnixStream, TruncatedMessageError } from "./unix-socket.js";
import { EventFd } from "./eventfd.js";
import { memfdCreate, ftruncate } from "./memfd.js";
import { MemoryMapping } from "./mmap.js";
import { close } from "./fd.js";
import type { SysError } from "./errno.js";

const dir = mkdtempSync(join(tmpdir(), "vmm-sys-util-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("UnixStream", () => {
  it("passes an eventfd that works on the other side", () => {
    const [a, b] = UnixStream.pair();
    using _a = a;
    using _b = b;
    using e = new EventFd();
    expect(a.send(new Uint8Array([1, 2, 3]), [e.fd])).toBe(3);
    const buf = new Uint8Array(16);
    const m = b.recv(buf, 4)!;
    expect(m.bytes).toBe(3);
    expect(m.fds).toHaveLength(1);
    using received = EventFd.fromFd(m.fds[0]!);
    expect(received.fd).not.toBe(e.fd); // a new fd for the same counter
    received.write(7);
    expect(e.read()).toBe(7n);
  });

  it("passes a memfd that re-maps to the same memory", () => {
    const [a, b] = UnixStream.pair();
    using _a = a;
    using _b = b;
    const fd = memfdCreate("shared");
    ftruncate(fd, 4096);
    using mine = new MemoryMapping(4096, { fd });
    new Uint8Array(mine.buffer).set([0xde, 0xad]);
    a.send(new Uint8Array(1), [fd]);
    close(fd);
    const m = b.recv(new Uint8Array(1), 1)!;
    const theirs = new MemoryMapping(4096, { fd: m.fds[0]! });
    close(m.fds[0]!);
    expect([...new Uint8Array(theirs.buffer, 0, 2)]).toEqual([0xde, 0xad]);
    new Uint8Array(theirs.buffer)[2] = 0xbe;
    expect(new Uint8Array(mine.buffer)[2]).toBe(0xbe);
    theirs.close();
  });

  it("detects more fds than allowed, closing the extras (no leak)", () => {
    const [a, b] = UnixStream.pair();
    using _a = a;
    using _b = b;
    using e1 = new EventFd();
    using e2 = new EventFd();
    using e3 = new EventFd();
    a.send(new Uint8Array(4), [e1.fd, e2.fd, e3.fd]);
    expect(() => b.recv(new Uint8Array(4), 1)).toThrow(TruncatedMessageError);
  });

  it("returns null on EAGAIN and 0 bytes when the peer closed", () => {
    const [a, b] = UnixStream.pair();
    b.setNonblocking();
    expect(b.recv(new Uint8Array(4))).toBeNull();
    a.close();
    expect(b.recv(new Uint8Array(4))!.bytes).toBe(0);
    b.close();
  });

  it("a send to a closed peer is EPIPE, not a SIGPIPE", () => {
    const [a, b] = UnixStream.pair();
    b.close();
    try {
      a.send(new Uint8Array(4));
      expect.unreachable();
    } catch (e) {
      expect((e as SysError).code).toBe("EPIPE");
    } finally {
      a.close();
    }
  });

  it("listens with mode 0600, accepts and connects", () => {
    const path = join(dir, "l.sock");
    using l = new UnixListener(path).setNonblocking();
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(l.accept()).toBeNull();
    using c = UnixStream.connect(path);
    using s = l.accept()!;
    c.send(new TextEncoder().encode("hi"));
    const buf = new Uint8Array(8);
    expect(s.recv(buf)!.bytes).toBe(2);
    expect(new TextDecoder().decode(buf.subarray(0, 2))).toBe("hi");
  });

  it("connecting to a missing socket names the path", () => {
    expect(() => UnixStream.connect(join(dir, "nope.sock"))).toThrow(/connect .*nope\.sock: ENOENT/);
  });

  it("rejects a path too long for sun_path", () => {
    expect(() => UnixStream.connect("/" + "x".repeat(200))).toThrow(RangeError);
  });
});
