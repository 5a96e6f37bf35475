// The XenStore client end to end against the in-package test server: a real unix socket and the real wire
// format (xs_wire.h). Also the missing-transport and malformed-input paths.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { XenStore, type XenStoreWatch } from "../src/xenstore/client.js";
import { XenStoreTestServer } from "../src/testing/xenstore-server.js";
import { XenStoreError } from "../src/error.js";
import { XS } from "../src/abi/xs-wire.js";
import { encodeMessage } from "../src/xenstore/wire.js";

let server: XenStoreTestServer;
let leaks: ReturnType<typeof fdLeakCheck>;
const tick = () => new Promise((r) => setTimeout(r, 20));

async function caught(p: Promise<unknown>): Promise<XenStoreError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof XenStoreError) return e;
    throw e;
  }
  throw new Error("did not reject");
}

function nextChange(w: XenStoreWatch): Promise<string> {
  return new Promise((r) => w.once("change", r));
}

beforeEach(async () => {
  leaks = fdLeakCheck();
  server = await XenStoreTestServer.listen();
});

afterEach(async () => {
  await server.close();
  await tick();
  expect(leaks.check()).toEqual([]);
});

describe("XenStore over the unix socket", () => {
  it("read/write/mkdir/directory/rm/perms with the wire encodings of xs_wire.h", async () => {
    const xs = await XenStore.open({ socketPath: server.path });
    expect(xs.description).toBe(`socket ${server.path}`);
    await xs.write("/local/domain/7/name", "guest7");
    await xs.mkdir("/local/domain/7/device");
    expect(await xs.read("/local/domain/7/name")).toBe("guest7");
    expect(await xs.directory("/local/domain/7")).toEqual(["name", "device"]);
    await xs.setPerms("/local/domain/7/name", [{ domid: 7, perm: "none" }, { domid: 0, perm: "read" }]);
    expect(await xs.getPerms("/local/domain/7/name")).toEqual([{ domid: 7, perm: "none" }, { domid: 0, perm: "read" }]);
    await xs.rm("/local/domain/7");
    expect(await xs.tryRead("/local/domain/7/name")).toBeUndefined();
    // relative paths are the caller's domain's (dom0 here)
    await xs.write("data/x", "1");
    expect(server.get("/local/domain/0/data/x")).toBe("1");

    const w = server.requests.find((m) => m.type === XS.WRITE)!;
    expect(new TextDecoder().decode(w.payload)).toBe("/local/domain/7/name\0guest7"); // value not NUL-terminated
    const r = server.requests.find((m) => m.type === XS.READ)!;
    expect(new TextDecoder().decode(r.payload)).toBe("/local/domain/7/name\0");
    const ids = server.requests.map((m) => m.reqId);
    expect(new Set(ids).size).toBe(ids.length);
    xs.close();
  });

  it("correlates many requests in flight by req_id", async () => {
    const xs = await XenStore.open({ socketPath: server.path });
    for (let i = 0; i < 40; i++) server.seed(`/t/${i}`, `v${i}`);
    const values = await Promise.all(Array.from({ length: 40 }, (_, i) => xs.read(`/t/${i}`)));
    expect(values).toEqual(Array.from({ length: 40 }, (_, i) => `v${i}`));
    xs.close();
  });

  it("an XS_ERROR reply is a XenStoreError naming the errno, the op and the path", async () => {
    const xs = await XenStore.open({ socketPath: server.path });
    const err = await caught(xs.read("/local/domain/7/name"));
    expect(err.message).toBe("XenStoreError ENOENT read /local/domain/7/name");
    expect(err).toMatchObject({ name: "XenStoreError", kind: "XenStore", code: "ENOENT", errno: 2, op: "read", path: "/local/domain/7/name" });
    server.failNext(XS.WRITE, "EACCES");
    expect(await caught(xs.write("/a", "b"))).toMatchObject({ code: "EACCES", op: "write", path: "/a" });
    expect(await caught(xs.directory("/nope"))).toMatchObject({ code: "ENOENT", op: "directory" });
    expect(await caught(xs.write("/bad path", "x"))).toMatchObject({ code: "EINVAL", op: "write" });
    await expect(xs.read("")).rejects.toThrow(TypeError);
    xs.close();
  });

  it("watches: fired on registration, on writes below, when the path vanishes; unwatch stops them", async () => {
    const xs = await XenStore.open({ socketPath: server.path });
    server.seed("/local/domain/7/device/virtio/0/state", "1");
    const all: string[] = [];
    xs.on("watch", (e) => all.push(`${e.token}:${e.path}`));
    const first = new Promise<string>((r) => xs.once("watch", (e) => r(e.path)));
    const viaOption: string[] = [];
    const w = await xs.watch("/local/domain/7/device", { token: "dev", onChange: (p) => viaOption.push(p) });
    expect(await first).toBe("/local/domain/7/device");
    expect(viaOption).toEqual(["/local/domain/7/device"]); // the registration event reaches onChange
    const c1 = nextChange(w);
    server.seed("/local/domain/7/device/virtio/0/state", "2");
    expect(await c1).toBe("/local/domain/7/device/virtio/0/state");
    const c2 = nextChange(w);
    await xs.rm("/local/domain/7/device");
    expect(await c2).toBe("/local/domain/7/device");
    expect(await caught(xs.read("/local/domain/7/device/virtio/0/state"))).toMatchObject({ code: "ENOENT", op: "read" });
    await w.close();
    await w.close();
    server.seed("/local/domain/7/device/x", "1");
    await xs.read("/local/domain/7/device/x"); // a round trip after the write: a stray event would have arrived
    expect(all.every((e) => e.startsWith("dev:"))).toBe(true);
    expect(all).toHaveLength(3);
    expect(server.requests.filter((m) => m.type === XS.UNWATCH)).toHaveLength(1);
    xs.close();
  });

  it("watch tokens are unique and @introduceDomain / @releaseDomain fire on introduce / release", async () => {
    const xs = await XenStore.open({ socketPath: server.path });
    const intro = await xs.watch("@introduceDomain");
    const rel = await xs.watch("@releaseDomain");
    expect(intro.token).not.toBe(rel.token);
    await expect(xs.watch("/x", { token: intro.token })).rejects.toThrow(RangeError);
    expect(await xs.isDomainIntroduced(9)).toBe(false);
    const introduced = nextChange(intro);
    await xs.introduce(9, 0xfeffcn, 1);
    expect(await introduced).toBe("@introduceDomain");
    expect(await xs.isDomainIntroduced(9)).toBe(true);
    const released = nextChange(rel);
    await xs.release(9);
    expect(await released).toBe("@releaseDomain");
    expect(await xs.getDomainPath(9)).toBe("/local/domain/9");
    expect(new TextDecoder().decode(server.requests.find((m) => m.type === XS.INTRODUCE)!.payload)).toBe("9\0" + String(0xfeffc) + "\0" + "1\0");
    xs.close();
  });

  it("transactions: isolated until commit, EAGAIN on conflict, retried by the helper", async () => {
    const xs = await XenStore.open({ socketPath: server.path });
    const tx = await xs.transactionStart();
    await tx.write("/t/a", "1");
    expect(await xs.tryRead("/t/a")).toBeUndefined();
    expect(await tx.read("/t/a")).toBe("1");
    await tx.commit();
    expect(await xs.read("/t/a")).toBe("1");
    expect(server.requests.filter((m) => m.txId === tx.id).map((m) => m.type)).toEqual([XS.WRITE, XS.READ, XS.TRANSACTION_END]);

    const tx2 = await xs.transactionStart();
    await tx2.write("/t/b", "x");
    await xs.write("/t/c", "outside");
    expect(await caught(tx2.commit())).toMatchObject({ code: "EAGAIN", op: "transaction_end" });
    expect(await xs.tryRead("/t/b")).toBeUndefined();

    let attempts = 0;
    const result = await xs.transaction(async (t) => {
      attempts++;
      const v = Number(await t.read("/t/a"));
      if (attempts === 1) await xs.write("/t/other", "conflict"); // another writer in between
      await t.write("/t/a", String(v + 1));
      return v + 1;
    });
    expect([result, attempts, await xs.read("/t/a")]).toEqual([2, 2, "2"]);
    await expect(xs.transaction(() => Promise.reject(new Error("app error")))).rejects.toThrow("app error");
    expect(server.requests.filter((m) => m.type === XS.TRANSACTION_END).map((m) => new TextDecoder().decode(m.payload)).at(-1)).toBe("F\0");
    xs.close();
  });

  it("reconnects: pending requests fail as Disconnected, watches are re-registered", async () => {
    const xs = await XenStore.open({ socketPath: server.path, reconnect: { delayMs: 10 } });
    const w = await xs.watch("/r", { token: "r" });
    server.ignoreNext(XS.READ);
    const inFlight = xs.read("/r/y");
    await tick();
    const reconnected = new Promise<void>((r) => xs.once("reconnect", r));
    const rewatched = nextChange(w);
    server.dropConnections();
    expect(await caught(inFlight)).toMatchObject({ kind: "Disconnected", code: "ECONNRESET", op: "read", path: "/r/y" });
    expect(await caught(xs.read("/r/y"))).toMatchObject({ kind: "Disconnected", code: "EAGAIN" });
    await reconnected;
    expect(await rewatched).toBe("/r");
    server.seed("/r/x", "1");
    expect(await xs.read("/r/x")).toBe("1");
    expect(xs.closed).toBe(false);
    xs.close();
    expect(await caught(xs.read("/r/x"))).toMatchObject({ kind: "Closed", code: "EBADF" });
  });

  it("without reconnect a dropped connection closes the client and fails what was pending", async () => {
    const xs = await XenStore.open({ socketPath: server.path });
    const closed = new Promise<Error | undefined>((r) => xs.once("close", r));
    server.dropConnections();
    expect(await closed).toBeDefined();
    expect(await caught(xs.read("/x"))).toMatchObject({ kind: "Closed" });
    xs.close();
  });

  it("a malformed header (len > XENSTORE_PAYLOAD_MAX) drops the connection; pending requests fail", async () => {
    const xs = await XenStore.open({ socketPath: server.path });
    server.ignoreNext(XS.READ);
    const pending = xs.read("/p");
    await tick();
    const bad = new Uint8Array(16);
    new DataView(bad.buffer).setUint32(12, 5000, true);
    const closed = new Promise<Error | undefined>((r) => xs.once("close", r));
    server.sendRaw(bad);
    const cause = await closed;
    expect(cause).toMatchObject({ kind: "Protocol", code: "E2BIG" });
    expect(await caught(pending)).toMatchObject({ kind: "Disconnected", op: "read", path: "/p" });
    xs.close();
  });

  it("a short read (the peer dies mid-message) fails the pending request", async () => {
    const xs = await XenStore.open({ socketPath: server.path });
    await xs.write("/s", "1");
    const whole = encodeMessage({ type: XS.READ, reqId: 999, txId: 0, payload: new TextEncoder().encode("abcdef") });
    server.ignoreNext(XS.READ);
    const pending = xs.read("/never-answered-in-full");
    await tick();
    server.sendRaw(whole.subarray(0, 10));
    await tick();
    server.dropConnections();
    expect(await caught(pending)).toMatchObject({ kind: "Disconnected", code: "ECONNRESET", op: "read", path: "/never-answered-in-full" });
    xs.close();
  });
});

describe("missing transports", () => {
  it("auto: no socket and no /dev/xen/xenbus is DeviceMissing naming the device", async () => {
    const err = await caught(XenStore.open({ socketPath: "/nonexistent/xenstored/socket", xenbusPath: "/nonexistent/xen/xenbus" }));
    expect(err).toMatchObject({ kind: "DeviceMissing", op: "connect", path: "/nonexistent/xen/xenbus", code: "ENOENT" });
    expect(err.message).toBe("XenStoreError ENOENT connect /nonexistent/xen/xenbus");
  });

  it("socket only: names the socket", async () => {
    const err = await caught(XenStore.open({ transport: "socket", socketPath: "/nonexistent/xenstored/socket" }));
    expect(err).toMatchObject({ kind: "DeviceMissing", path: "/nonexistent/xenstored/socket" });
  });

  it("xenbus only: names the device", async () => {
    const err = await caught(XenStore.open({ transport: "xenbus", xenbusPath: "/nonexistent/xenbus" }));
    expect(err).toMatchObject({ kind: "DeviceMissing", path: "/nonexistent/xenbus" });
  });
});
