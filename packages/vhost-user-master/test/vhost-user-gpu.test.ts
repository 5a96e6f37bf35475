// Against QEMU 7.2's vhost-user-gpu (Debian qemu-system-gui, /usr/lib/qemu/vhost-user-gpu), headless: no
// --virgl and no --render-node, so it renders 2D with pixman into memfd buffers and sends frames over the
// vhost-user-gpu socket. Handshake (features, protocol features, GET_QUEUE_NUM, SET_OWNER, GPU_SET_SOCKET and
// the GPU protocol's own feature exchange), GET_CONFIG, then real virtio-gpu commands through virtio-queue
// rings: GET_DISPLAY_INFO answered by this front-end, a 2D resource whose pixels come back in an UPDATE, and
// a cursor move. vhost-user-gpu serves one front-end and exits when it disconnects.
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { describeProtocolFeatures } from "@xen-vhost/vhost-user-protocol";
import { RequestRecorder } from "../src/testing/request-recorder.js";
import { noteCheck } from "./exercised.js";
import { spawnDaemon } from "../src/testing/reap.js";
import type { GpuSocket} from "../src/index.js";
import { VIRTIO_GPU_RESP_OK_DISPLAY_INFO, VirtioGpuDisplayOne, DISPLAY_INFO_SIZE, type GpuSocketEvents } from "../src/index.js";
import { session, DATA, type Session } from "../src/testing/driver-session.js";

const GPU = "/usr/lib/qemu/vhost-user-gpu";
const VIRTIO_F_VERSION_1 = 1n << 32n;
const F_PROTOCOL_FEATURES = 1n << 30n;
const VIRTIO_GPU_F_EDID = 1n << 1n;
// linux/virtio_gpu.h enum virtio_gpu_ctrl_type
const CMD_GET_DISPLAY_INFO = 0x0100;
const CMD_RESOURCE_CREATE_2D = 0x0101;
const CMD_SET_SCANOUT = 0x0103;
const CMD_RESOURCE_FLUSH = 0x0104;
const CMD_TRANSFER_TO_HOST_2D = 0x0105;
const CMD_RESOURCE_ATTACH_BACKING = 0x0106;
const CMD_MOVE_CURSOR = 0x0301;
const RESP_OK_NODATA = 0x1100;
const FORMAT_B8G8R8X8_UNORM = 2;

interface Daemon {
  socket: string;
  dir: string;
  child: ChildProcess;
  exited: Promise<number | null>;
}

async function startGpu(): Promise<Daemon> {
  const dir = mkdtempSync(join(tmpdir(), "vu-gpu-"));
  const socket = join(dir, "vhost-gpu.sock");
  const log = openSync(join(dir, "vhost-user-gpu.log"), "a");
  const child = spawnDaemon(GPU, [`--socket-path=${socket}`], { stdio: ["ignore", log, log] });
  closeSync(log);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  for (let i = 0; i < 100 && !existsSync(socket) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
  if (!existsSync(socket)) throw new Error(`vhost-user-gpu did not start: ${readFileSync(join(dir, "vhost-user-gpu.log"), "utf8")}`);
  return { socket, dir, child, exited };
}

/** A virtio-gpu command: header type + the command's fields as u32s (and u64s as two u32s). */
function command(type: number, fields: number[]): Uint8Array {
  const b = new Uint8Array(24 + fields.length * 4);
  const v = new DataView(b.buffer);
  v.setUint32(0, type, true);
  fields.forEach((f, i) => v.setUint32(24 + i * 4, f, true));
  return b;
}

function next<K extends keyof GpuSocketEvents>(gpu: GpuSocket, event: K, ms = 5000): Promise<GpuSocketEvents[K]> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${event} on the vhost-user-gpu socket within ${ms} ms`)), ms);
    (gpu.once as (e: K, f: (...a: GpuSocketEvents[K]) => void) => void)(event, (...args) => {
      clearTimeout(t);
      resolve(args);
    });
  });
}

describe.skipIf(!existsSync(GPU))("vhost-user-gpu (needs /usr/lib/qemu/vhost-user-gpu from qemu-system-gui)", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  let d: Daemon;
  const rec = new RequestRecorder();
  afterAll(noteCheck("vhost-user-gpu", rec));
  const cleanup: (() => void)[] = [];
  beforeEach(async () => {
    d = await startGpu();
    leaks = fdLeakCheck();
  });
  afterEach(async () => {
    while (cleanup.length) cleanup.pop()!();
    expect(leaks.check()).toEqual([]);
    const timer = setTimeout(() => d.child.kill("SIGKILL"), 3000);
    await d.exited; // it exits by itself once the front-end is gone
    clearTimeout(timer);
    rmSync(d.dir, { recursive: true, force: true });
  });

  /** Posts one command on `ring` with a response buffer; returns the response bytes. */
  async function exec(s: Session, ring: number, cmd: Uint8Array, respLen = 24, extra?: Uint8Array): Promise<Uint8Array> {
    const CMD = DATA, RESP = DATA + 0x1000;
    s.mem.write(CMD, cmd);
    const readable = [{ addr: CMD, len: cmd.length }];
    if (extra) {
      s.mem.write(CMD + 0x800, extra);
      readable.push({ addr: CMD + 0x800, len: extra.length });
    }
    s.mem.write(RESP, new Uint8Array(respLen).fill(0xee));
    s.post(ring, { readable, writable: [{ addr: RESP, len: respLen }] });
    await s.used(ring, 1, 5000);
    return s.mem.read(RESP, respLen);
  }

  it("handshake, GPU_SET_SOCKET and GET_CONFIG; GET_DISPLAY_INFO through the control queue answered on the GPU socket", async () => {
    const s = await session(d.socket, [64, 64], { features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES, frontend: { logger: rec } });
    cleanup.push(() => s.close());
    // GET_FEATURES: VERSION_1 and PROTOCOL_FEATURES (0x175000000 from 7.2; EDID is offered from QEMU 8), no VIRGL without --virgl
    expect(s.negotiated.offeredFeatures & (VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES)).toBe(VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES);
    expect(s.negotiated.features & VIRTIO_GPU_F_EDID).toBe(0n); // masked off: this test's GPU socket offers no EDID
    expect(s.negotiated.offeredFeatures & 1n).toBe(0n); // VIRTIO_GPU_F_VIRGL
    expect(describeProtocolFeatures(s.negotiated.offeredProtocolFeatures)).toEqual(expect.arrayContaining(["MQ", "REPLY_ACK", "CONFIG"]));
    expect(s.negotiated.queueNum).toBe(2); // control and cursor

    // GET_CONFIG: struct virtio_gpu_config {events_read, events_clear, num_scanouts, num_capsets}
    const cfg = new DataView((await s.fe.getConfig(0, 16)).buffer);
    // events_read/events_clear and num_scanouts belong to the front-end (QEMU's vhost_user_gpu_get_config
    // overwrites them with its own): the back-end's copy is zero; num_capsets is 0 without virgl.
    expect([0, 4, 8, 12].map((o) => cfg.getUint32(o, true))).toEqual([0, 0, 0, 0]);
    // a config read past struct virtio_gpu_config is refused: BackendFailure, the connection stays up
    await expect(s.fe.getConfig(0, 17)).rejects.toMatchObject({ kind: "BackendFailure" });

    const modes = [{ width: 1280, height: 800, enabled: 1 }, { x: 1280, width: 640, height: 480, enabled: 1 }];
    let asked = 0;
    const gpu = await s.fe.openGpuSocket({ handlers: { displayInfo: () => (asked++, modes) } });
    cleanup.unshift(() => gpu.close());
    // the back-end's own handshake on the GPU socket: it asked our protocol features and set them (none: no EDID handler)
    if (gpu.protocolFeatures === undefined) await next(gpu, "protocolFeatures");
    expect(gpu.protocolFeatures).toBe(0n);

    const resp = await exec(s, 0, command(CMD_GET_DISPLAY_INFO, []), DISPLAY_INFO_SIZE);
    expect(asked).toBe(1);
    const v = new DataView(resp.buffer);
    expect(v.getUint32(0, true)).toBe(VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
    expect(VirtioGpuDisplayOne.read(v, 24)).toEqual({ x: 0, y: 0, width: 1280, height: 800, enabled: 1, flags: 0 });
    expect(VirtioGpuDisplayOne.read(v, 48)).toEqual({ x: 1280, y: 0, width: 640, height: 480, enabled: 1, flags: 0 });
    expect(VirtioGpuDisplayOne.read(v, 72).enabled).toBe(0);
  }, 30_000);

  it("2D pipeline: a guest-memory resource's pixels arrive on the GPU socket as SCANOUT + UPDATE; a cursor move as CURSOR_POS", async () => {
    const s = await session(d.socket, [64, 64], { features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES, frontend: { logger: rec } });
    cleanup.push(() => s.close());
    const gpu = await s.fe.openGpuSocket();
    cleanup.unshift(() => gpu.close());
    const W = 16, H = 8, RES = 7;
    const ok = (r: Uint8Array) => new DataView(r.buffer).getUint32(0, true);

    expect(ok(await exec(s, 0, command(CMD_RESOURCE_CREATE_2D, [RES, FORMAT_B8G8R8X8_UNORM, W, H])))).toBe(RESP_OK_NODATA);
    // backing: one entry {u64 addr, u32 length, u32 padding} after struct virtio_gpu_resource_attach_backing
    const PIXELS = DATA + 0x8000;
    const pixels = Uint8Array.from({ length: W * H * 4 }, (_, i) => (i * 29 + 11) & 0xff);
    s.mem.write(PIXELS, pixels);
    const entry = new Uint8Array(16);
    new DataView(entry.buffer).setBigUint64(0, BigInt(PIXELS), true);
    new DataView(entry.buffer).setUint32(8, pixels.length, true);
    expect(ok(await exec(s, 0, command(CMD_RESOURCE_ATTACH_BACKING, [RES, 1]), 24, entry))).toBe(RESP_OK_NODATA);
    // transfer_to_host_2d: rect (x, y, w, h), u64 offset, resource_id, padding
    expect(ok(await exec(s, 0, command(CMD_TRANSFER_TO_HOST_2D, [0, 0, W, H, 0, 0, RES, 0])))).toBe(RESP_OK_NODATA);
    const scanout = next(gpu, "scanout");
    // set_scanout: rect, scanout_id, resource_id
    expect(ok(await exec(s, 0, command(CMD_SET_SCANOUT, [0, 0, W, H, 0, RES])))).toBe(RESP_OK_NODATA);
    expect((await scanout)[0]).toEqual({ scanoutId: 0, width: W, height: H });
    const update = next(gpu, "update");
    // resource_flush: rect, resource_id, padding
    expect(ok(await exec(s, 0, command(CMD_RESOURCE_FLUSH, [0, 0, W, H, RES, 0])))).toBe(RESP_OK_NODATA);
    const [u] = await update;
    expect({ ...u, data: undefined }).toEqual({ scanoutId: 0, x: 0, y: 0, width: W, height: H, data: undefined });
    expect(u.data).toEqual(pixels);

    // cursor queue: struct virtio_gpu_update_cursor {hdr, pos {scanout_id, x, y, padding}, resource_id, hot_x, hot_y, padding}
    const pos = next(gpu, "cursorPos");
    await exec(s, 1, command(CMD_MOVE_CURSOR, [0, 300, 200, 0, RES, 0, 0, 0]), 0 + 24);
    expect((await pos)[0]).toEqual({ scanoutId: 0, x: 300, y: 200, visible: true });
  }, 30_000);
});
