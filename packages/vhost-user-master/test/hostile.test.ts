// A hostile back-end: wrong request ids, short and oversized messages, missing and extra fds, replies
// without the reply flag, garbage where a REPLY_ACK belongs, disconnects mid-message. Each must give a
// typed error naming the problem, close the connection, leak nothing, and leave the process running.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { BackendReq, FrontendReq, encodeHeader, type VhostUserError } from "@xen-vhost/vhost-user-protocol";
import { Frontend } from "../src/index.js";
import { FakeBackend, type FakeBackendBehaviour } from "../src/testing/index.js";

let leaks: ReturnType<typeof fdLeakCheck>;
const cleanup: (() => void)[] = [];
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  while (cleanup.length) cleanup.pop()!();
  expect(leaks.check()).toEqual([]);
});

const REPLY = 0x5;

function hostile(behaviour: FakeBackendBehaviour) {
  const [s, be] = FakeBackend.pair({ behaviour });
  const fe = Frontend.fromStream(s, { timeoutMs: 300 });
  const closed = new Promise<VhostUserError | undefined>((r) => fe.once("close", r));
  cleanup.push(() => fe.close(), () => be.close());
  return { fe, be, closed };
}

/** Attacks on the reply to GET_FEATURES (1). */
const onGetFeatures = (f: (api: Parameters<FakeBackendBehaviour>[1]) => void): FakeBackendBehaviour => (m, api) => {
  if (m.request !== FrontendReq.GET_FEATURES) return false;
  f(api);
  return true;
};

describe("hostile back-end", () => {
  it.each([
    ["reply with the wrong request id", onGetFeatures((api) => api.reply({ kind: "u64", value: 1n }, [], REPLY, FrontendReq.GET_PROTOCOL_FEATURES)),
      "InvalidMessage", /reply to GET_FEATURES \(1\): reply names GET_PROTOCOL_FEATURES \(15\) instead/],
    ["reply without the REPLY flag", onGetFeatures((api) => api.reply({ kind: "u64", value: 1n }, [], 0x1)), "InvalidMessage", /REPLY flag missing/],
    ["short reply (4-byte u64)", onGetFeatures((api) => api.raw(Uint8Array.from([1, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]))),
      "InvalidMessage", /u64 payload must be 8 bytes, got 4/],
    ["oversized reply header", onGetFeatures((api) => api.raw(encodeHeader({ request: 1, flags: REPLY, size: 0x100000 }))), "OversizedMsg", /1048576 bytes exceeds/],
    ["reply with an unexpected fd", onGetFeatures((api) => {
      const e = new EventFd();
      api.reply({ kind: "u64", value: 1n }, [e.fd]);
      e.close();
    }), "IncorrectFds", /carries 1 fd\(s\), expected 0/],
    ["reply with a bad version", onGetFeatures((api) => api.raw(Uint8Array.from([1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]))), "InvalidMessage", /unsupported version 2/],
    ["disconnect mid-message", onGetFeatures((api) => {
      api.raw(Uint8Array.from([1, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 0xaa]));
      setTimeout(() => api.close(), 10);
    }), "PartialMessage", /in the middle of a message/],
    ["disconnect instead of replying", onGetFeatures((api) => api.close()), "Disconnected", /peer closed/],
  ] as const)("%s → %s", async (_n, behaviour, kind, re) => {
    const { fe, closed } = hostile(behaviour);
    const err = await fe.getFeatures().then(() => null, (e: VhostUserError) => e);
    expect(err?.kind).toBe(kind);
    expect(err?.message).toMatch(re);
    expect((await closed)?.kind).toBe(kind);
    expect(fe.closed).toBe(true);
  });

  it("GET_INFLIGHT_FD reply without its fd → IncorrectFds", async () => {
    const { fe, closed } = hostile((m, api) => {
      if (m.request !== FrontendReq.GET_INFLIGHT_FD) return false;
      api.reply({ kind: "inflight", mmapSize: 4096n, mmapOffset: 0n, numQueues: 1, queueSize: 64 });
      return true;
    });
    await fe.negotiate();
    await expect(fe.getInflightFd(1, 64)).rejects.toMatchObject({ kind: "IncorrectFds", message: /expected 1/ });
    expect((await closed)?.kind).toBe("IncorrectFds");
  });

  it.each([
    ["garbage instead of the REPLY_ACK", (api: Parameters<FakeBackendBehaviour>[1]) => api.raw(Uint8Array.from({ length: 20 }, (_, i) => i * 37)), "InvalidMessage"],
    ["an ack of the wrong size", (api: Parameters<FakeBackendBehaviour>[1]) => api.reply({ kind: "vring-state", index: 0, num: 0 }, [], REPLY) , "none"],
    ["an ack for another request", (api: Parameters<FakeBackendBehaviour>[1]) => api.reply({ kind: "u64", value: 0n }, [], REPLY, FrontendReq.SET_FEATURES), "InvalidMessage"],
    ["a request instead of the ack", (api: Parameters<FakeBackendBehaviour>[1]) => api.reply({ kind: "u64", value: 0n }, [], 0x9), "InvalidMessage"],
  ] as const)("%s during REPLY_ACK", async (_n, attack, kind) => {
    const { fe, closed } = hostile((m, api) => {
      if (m.request !== FrontendReq.SET_VRING_NUM) return false;
      attack(api);
      return true;
    });
    await fe.negotiate();
    const err = await fe.setVringNum(0, 64).then(() => null, (e: VhostUserError) => e);
    if (kind === "none") {
      // a vring-state is 8 bytes like a u64: it decodes as status 0x0 and is accepted; the stream stays sane
      expect(err).toBeNull();
      return;
    }
    expect(err?.kind).toBe(kind);
    expect((await closed)?.kind).toBe(kind);
  });

  it("a non-zero REPLY_ACK is BackendFailure and the connection stays usable", async () => {
    const { fe } = hostile((m, api) => {
      if (m.request !== FrontendReq.SET_VRING_NUM) return false;
      api.reply({ kind: "u64", value: 22n });
      return true;
    });
    await fe.negotiate();
    await expect(fe.setVringNum(0, 64)).rejects.toMatchObject({ kind: "BackendFailure", message: /SET_VRING_NUM: REPLY_ACK status 22/ });
    expect(fe.connected).toBe(true);
    expect(await fe.getQueueNum()).toBe(2);
  });

  it("an unsolicited message with fds while idle → InvalidMessage, fds closed", async () => {
    const { fe, be, closed } = hostile(() => false);
    await fe.negotiate();
    const e = new EventFd();
    be.conn.send({ request: FrontendReq.GET_FEATURES, flags: REPLY, payload: { kind: "u64", value: 0n } }, [e.fd]);
    e.close();
    const cause = await closed;
    expect(cause?.kind).toBe("InvalidMessage");
    expect(cause?.message).toMatch(/unsolicited GET_FEATURES \(1\)/);
  });

  it("garbage on the backend-request channel closes that channel only", async () => {
    const { fe, be } = hostile(() => false);
    await fe.negotiate();
    const chClosed = new Promise<VhostUserError | undefined>((r) => fe.backendChannel!.once("close", r));
    be.backendRaw(Uint8Array.from([0x63, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]));
    const cause = await chClosed;
    expect(cause?.kind).toBe("InvalidMessage");
    expect(cause?.message).toMatch(/unknown backend request 99/);
    expect(fe.connected).toBe(true);
    expect(await fe.getQueueNum()).toBe(2);
  });

  it("a SHMEM_MAP without its fd on the backend channel → IncorrectFds", async () => {
    const { fe, be } = hostile(() => false);
    await fe.negotiate();
    const chClosed = new Promise<VhostUserError | undefined>((r) => fe.backendChannel!.once("close", r));
    be.backendRaw(FakeBackend.encode(BackendReq.SHMEM_MAP, 1, { kind: "shmem-map", shmid: 0, fdOffset: 0n, shmOffset: 0n, len: 1n, flags: 0n }));
    expect((await chClosed)?.kind).toBe("IncorrectFds");
  });
});
