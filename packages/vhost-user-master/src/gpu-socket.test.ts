// GpuSocket against a scripted back-end end of a real socketpair: replies, events and typed errors on bad input.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventFd, UnixStream } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import type { VhostUserError } from "@xen-vhost/vhost-user-protocol";
import { GpuSocket, VhostUserGpuRequest as R, VHOST_USER_GPU_MSG_FLAG_REPLY, DISPLAY_INFO_SIZE, EDID_RESP_SIZE } from "./gpu-socket.js";

function msg(request: number, payload: Uint8Array = new Uint8Array(0), size = payload.length): Uint8Array {
  const b = new Uint8Array(12 + payload.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(8, size, true);
  b.set(payload, 12);
  return b;
}

async function readReply(peer: UnixStream, size: number): Promise<{ request: number; flags: number; payload: Uint8Array }> {
  const buf = new Uint8Array(12 + size);
  let got = 0;
  for (let i = 0; i < 500 && got < buf.length; i++) {
    const r = peer.recv(buf.subarray(got));
    if (r && r.bytes > 0) got += r.bytes;
    else await new Promise((res) => setTimeout(res, 2));
  }
  const v = new DataView(buf.buffer);
  expect(v.getUint32(8, true)).toBe(size);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), payload: buf.subarray(12) };
}

const closed = (g: GpuSocket) => new Promise<VhostUserError | undefined>((r) => g.once("close", r));

describe("GpuSocket", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  let gpu: GpuSocket;
  let peer: UnixStream;
  beforeEach(() => {
    leaks = fdLeakCheck();
  });
  afterEach(() => {
    gpu.close();
    peer.close();
    expect(leaks.check()).toEqual([]);
  });
  function open(handlers = {}): void {
    const [a, b] = UnixStream.pair();
    gpu = new GpuSocket(a, { handlers });
    peer = b.setNonblocking();
  }

  it("answers GET_PROTOCOL_FEATURES (EDID only with an edid handler), GET_DISPLAY_INFO and GET_EDID; SET_PROTOCOL_FEATURES is an event", async () => {
    open({ edid: () => Uint8Array.of(0, 0xff, 0xff, 0), displayInfo: () => [{ width: 800, height: 600, enabled: 1 }] });
    peer.send(msg(R.VHOST_USER_GPU_GET_PROTOCOL_FEATURES));
    const f = await readReply(peer, 8);
    expect(f.request).toBe(R.VHOST_USER_GPU_GET_PROTOCOL_FEATURES);
    expect(f.flags).toBe(VHOST_USER_GPU_MSG_FLAG_REPLY);
    expect(new DataView(f.payload.buffer, f.payload.byteOffset).getBigUint64(0, true)).toBe(1n);
    const set = new Promise<bigint>((r) => gpu.once("protocolFeatures", r));
    peer.send(msg(R.VHOST_USER_GPU_SET_PROTOCOL_FEATURES, new Uint8Array(new BigUint64Array([1n]).buffer)));
    expect(await set).toBe(1n);
    peer.send(msg(R.VHOST_USER_GPU_GET_DISPLAY_INFO));
    const di = new DataView((await readReply(peer, DISPLAY_INFO_SIZE)).payload.slice().buffer);
    expect([di.getUint32(0, true), di.getUint32(24 + 8, true), di.getUint32(24 + 12, true), di.getUint32(24 + 16, true)]).toEqual([0x1101, 800, 600, 1]);
    peer.send(msg(R.VHOST_USER_GPU_GET_EDID, Uint8Array.of(0, 0, 0, 0)));
    const edid = (await readReply(peer, EDID_RESP_SIZE)).payload;
    expect(new DataView(edid.slice().buffer).getUint32(24, true)).toBe(4);
    expect([...edid.subarray(32, 36)]).toEqual([0, 0xff, 0xff, 0]);
  });

  it("a frame split across writes is reassembled into one UPDATE event", async () => {
    open();
    const body = new Uint8Array(20 + 2 * 2 * 4);
    new DataView(body.buffer).setUint32(12, 2, true);
    new DataView(body.buffer).setUint32(16, 2, true);
    body.fill(0x5a, 20);
    const whole = msg(R.VHOST_USER_GPU_UPDATE, body);
    const update = new Promise<{ width: number; data: Uint8Array }>((r) => gpu.once("update", r));
    peer.send(whole.subarray(0, 7));
    await new Promise((r) => setTimeout(r, 20));
    peer.send(whole.subarray(7));
    const u = await update;
    expect(u.width).toBe(2);
    expect([...u.data]).toEqual(new Array(16).fill(0x5a));
  });

  it.each([
    ["an unknown request", () => peer.send(msg(99)), "InvalidMessage"],
    ["a SCANOUT of the wrong size", () => peer.send(msg(R.VHOST_USER_GPU_SCANOUT, new Uint8Array(8))), "InvalidMessage"],
    ["an oversized message", () => peer.send(msg(R.VHOST_USER_GPU_UPDATE, new Uint8Array(0), 0x7fff_ffff)), "OversizedMsg"],
    ["SET_PROTOCOL_FEATURES beyond the offer", () => peer.send(msg(R.VHOST_USER_GPU_SET_PROTOCOL_FEATURES, new Uint8Array(new BigUint64Array([2n]).buffer))), "FeatureMismatch"],
    ["a fd on a CURSOR_POS", () => {
      using e = new EventFd();
      peer.send(msg(R.VHOST_USER_GPU_CURSOR_POS, new Uint8Array(12)), [e.fd]);
    }, "IncorrectFds"],
    ["EOF mid-message", () => {
      peer.send(msg(R.VHOST_USER_GPU_SCANOUT, new Uint8Array(12)).subarray(0, 15));
      peer.close();
    }, "PartialMessage"],
  ] as const)("%s closes the socket with %s", async (_what, act, kind) => {
    open();
    const c = closed(gpu);
    act();
    expect((await c)?.kind).toBe(kind);
    expect(gpu.closed).toBe(true);
  });
});
