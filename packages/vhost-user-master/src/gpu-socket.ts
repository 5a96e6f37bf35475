// The front-end side of the vhost-user-gpu protocol (QEMU docs/interop/vhost-user-gpu.rst): the socket the
// front-end hands a GPU back-end with GPU_SET_SOCKET. The back-end asks it for the display configuration
// and EDID and pushes scanouts, frame updates and cursor changes over it. Messages: a packed 12-byte header
// {u32 request; u32 flags; u32 size} and `size` payload bytes; replies carry VHOST_USER_GPU_MSG_FLAG_REPLY.
import { EventEmitter } from "eventemitter3";
import type { UnixStream} from "@xen-vhost/vmm-sys-util";
import { FdWatcher, PollEvents, close as closeFd, defineStruct, u32, u64, u8, type StructValue } from "@xen-vhost/vmm-sys-util";
import { VhostUserError, noopLogger, type Logger } from "@xen-vhost/vhost-user-protocol";

/** vhost-user-gpu.rst "Protocol messages" (enum VhostUserGpuRequest in contrib/vhost-user-gpu/vugpu.h). */
export const VhostUserGpuRequest = {
  VHOST_USER_GPU_NONE: 0,
  VHOST_USER_GPU_GET_PROTOCOL_FEATURES: 1,
  VHOST_USER_GPU_SET_PROTOCOL_FEATURES: 2,
  VHOST_USER_GPU_GET_DISPLAY_INFO: 3,
  VHOST_USER_GPU_CURSOR_POS: 4,
  VHOST_USER_GPU_CURSOR_POS_HIDE: 5,
  VHOST_USER_GPU_CURSOR_UPDATE: 6,
  VHOST_USER_GPU_SCANOUT: 7,
  VHOST_USER_GPU_UPDATE: 8,
  VHOST_USER_GPU_DMABUF_SCANOUT: 9,
  VHOST_USER_GPU_DMABUF_UPDATE: 10,
  VHOST_USER_GPU_GET_EDID: 11,
  VHOST_USER_GPU_DMABUF_SCANOUT2: 12,
} as const;

/** vhost-user-gpu.rst: VHOST_USER_GPU_MSG_FLAG_REPLY. */
export const VHOST_USER_GPU_MSG_FLAG_REPLY = 0x4;
/** vhost-user-gpu.rst "Protocol features": VHOST_USER_GPU_PROTOCOL_F_EDID / _F_DMABUF2. */
export const VhostUserGpuProtocolFeature = { EDID: 0, DMABUF2: 1 } as const;

/** vhost-user-gpu.rst "Header" (packed). */
export const VhostUserGpuHeader = defineStruct("VhostUserGpuMsg header", { size: 12, packed: true }, {
  request: u32(0), flags: u32(4), size: u32(8),
});
/** VhostUserGpuCursorPos. */
const CursorPos = defineStruct("VhostUserGpuCursorPos", { size: 12, packed: true }, { scanoutId: u32(0), x: u32(4), y: u32(8) });
/** VhostUserGpuCursorUpdate: pos, hot_x, hot_y, then 64x64 u32 ARGB pixels. */
const CURSOR_UPDATE_SIZE = 12 + 8 + 64 * 64 * 4;
/** VhostUserGpuScanout. */
const Scanout = defineStruct("VhostUserGpuScanout", { size: 12, packed: true }, { scanoutId: u32(0), width: u32(4), height: u32(8) });
/** VhostUserGpuUpdate: a rectangle, then its pixels (width * height * bpp bytes, no padding). */
const Update = defineStruct("VhostUserGpuUpdate", { size: 20, packed: true }, { scanoutId: u32(0), x: u32(4), y: u32(8), width: u32(12), height: u32(16) });
/** VhostUserGpuDMABUFScanout (fd_drm_fourcc is an int in C, a fourcc in practice). */
const DmabufScanout = defineStruct("VhostUserGpuDMABUFScanout", { size: 40, packed: true }, {
  scanoutId: u32(0), x: u32(4), y: u32(8), width: u32(12), height: u32(16),
  fdWidth: u32(20), fdHeight: u32(24), fdStride: u32(28), fdFlags: u32(32), fdDrmFourcc: u32(36),
});
/** linux/virtio_gpu.h struct virtio_gpu_ctrl_hdr. */
export const VirtioGpuCtrlHdr = defineStruct("virtio_gpu_ctrl_hdr", { size: 24, align: 8 }, {
  type: u32(0), flags: u32(4), fence_id: u64(8), ctx_id: u32(16), ring_idx: u8(20),
});
/** linux/virtio_gpu.h struct virtio_gpu_display_one: {struct virtio_gpu_rect r; le32 enabled; le32 flags}. */
export const VirtioGpuDisplayOne = defineStruct("virtio_gpu_display_one", { size: 24, align: 4 }, {
  x: u32(0), y: u32(4), width: u32(8), height: u32(12), enabled: u32(16), flags: u32(20),
});
export type DisplayMode = Partial<StructValue<typeof VirtioGpuDisplayOne>>;
/** linux/virtio_gpu.h: VIRTIO_GPU_MAX_SCANOUTS, VIRTIO_GPU_RESP_OK_DISPLAY_INFO, VIRTIO_GPU_RESP_OK_EDID. */
export const VIRTIO_GPU_MAX_SCANOUTS = 16;
export const VIRTIO_GPU_RESP_OK_DISPLAY_INFO = 0x1101;
export const VIRTIO_GPU_RESP_OK_EDID = 0x1104;
/** sizeof(struct virtio_gpu_resp_display_info) = hdr + 16 modes; sizeof(struct virtio_gpu_resp_edid) = hdr + size + padding + 1024. */
export const DISPLAY_INFO_SIZE = 24 + VIRTIO_GPU_MAX_SCANOUTS * 24;
export const EDID_RESP_SIZE = 24 + 8 + 1024;

/** What the back-end may send at most in one message: a full 8K frame update (4 bytes a pixel). */
const MAX_GPU_MSG = 12 + 20 + 7680 * 4320 * 4;

export interface GpuSocketHandlers {
  /** GET_DISPLAY_INFO: up to 16 scanout modes (default: one enabled 1024x768 mode). */
  displayInfo?(): DisplayMode[];
  /** GET_EDID for `scanoutId`: the EDID blob (<= 1024 bytes). Offering it makes the socket ack the EDID protocol feature. */
  edid?(scanoutId: number): Uint8Array;
}

export interface GpuSocketEvents {
  /** SET_PROTOCOL_FEATURES: what the back-end will use (the handshake on this socket is complete). */
  protocolFeatures: [features: bigint];
  displayInfo: [];
  scanout: [s: { scanoutId: number; width: number; height: number }];
  /** A frame update: `data` holds width * height pixels, row after row. */
  update: [u: { scanoutId: number; x: number; y: number; width: number; height: number; data: Uint8Array }];
  /** DMABUF_SCANOUT(2): `fd` (the dma-buf) is lent for the event and closed after it: `dup` it to keep it. */
  dmabufScanout: [s: StructValue<typeof DmabufScanout> & { modifier?: bigint }, fd: number | null];
  /** DMABUF_UPDATE: the socket answers it (the back-end waits) right after the event. */
  dmabufUpdate: [u: StructValue<typeof Update>];
  cursorPos: [p: { scanoutId: number; x: number; y: number; visible: boolean }];
  cursorUpdate: [c: { scanoutId: number; x: number; y: number; hotX: number; hotY: number; pixels: Uint8Array }];
  close: [cause?: VhostUserError];
}

/** One end of the vhost-user-gpu socket, owned by this object. */
export class GpuSocket extends EventEmitter<GpuSocketEvents> implements Disposable {
  readonly #stream: UnixStream;
  readonly #watcher: FdWatcher;
  readonly #handlers: GpuSocketHandlers;
  readonly #log: Logger;
  #buf = new Uint8Array(64 * 1024);
  #len = 0;
  #fds: number[] = [];
  #closed = false;
  /** The protocol features the back-end set (undefined until SET_PROTOCOL_FEATURES). */
  protocolFeatures: bigint | undefined;

  constructor(stream: UnixStream, options: { handlers?: GpuSocketHandlers; logger?: Logger; unref?: boolean } = {}) {
    super();
    this.#stream = stream.setNonblocking();
    this.#handlers = options.handlers ?? {};
    this.#log = options.logger ?? noopLogger;
    this.#watcher = new FdWatcher(stream.fd, (_events, errno) => this.#onReadable(errno), {
      onError: (err) => this.#fail(err instanceof VhostUserError ? err : new VhostUserError("SocketBroken", String(err), { cause: err })),
    });
    this.#watcher.start(PollEvents.READABLE);
    if (options.unref) this.#watcher.unref();
  }

  /** The protocol features this front-end offers: EDID when an `edid` handler was given. */
  get offeredProtocolFeatures(): bigint {
    return this.#handlers.edid ? 1n << BigInt(VhostUserGpuProtocolFeature.EDID) : 0n;
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.#finish(undefined);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #finish(cause: VhostUserError | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    this.#stream.close();
    for (const fd of this.#fds) closeFd(fd);
    this.#fds = [];
    try {
      this.emit("close", cause);
    } catch (err) {
      this.#log.error("listener of close threw", { err: String(err) });
    }
  }

  #fail(err: VhostUserError): void {
    this.#log.warn("vhost-user-gpu socket failed", { kind: err.kind, error: err.message });
    this.#finish(err);
  }

  #onReadable(errno: number): void {
    if (this.#closed) return;
    if (errno !== 0) return this.#fail(new VhostUserError("SocketBroken", `polling the vhost-user-gpu socket failed: errno ${errno}`));
    for (;;) {
      if (this.#len === this.#buf.length) {
        const bigger = new Uint8Array(this.#buf.length * 2);
        bigger.set(this.#buf);
        this.#buf = bigger;
      }
      const r = this.#stream.recv(this.#buf.subarray(this.#len), 1);
      if (r === null) break;
      this.#fds.push(...r.fds);
      if (r.bytes === 0) {
        return this.#fail(new VhostUserError(this.#len > 0 ? "PartialMessage" : "Disconnected", this.#len > 0 ? "vhost-user-gpu socket closed mid-message" : "the GPU back-end closed its socket"));
      }
      this.#len += r.bytes;
      this.#drain();
      if (this.#closed) return;
    }
  }

  #drain(): void {
    while (!this.#closed && this.#len >= 12) {
      const h = VhostUserGpuHeader.decode(this.#buf);
      if (12 + h.size > MAX_GPU_MSG) return this.#fail(new VhostUserError("OversizedMsg", `vhost-user-gpu message ${h.request} of ${h.size} bytes`));
      if (this.#len < 12 + h.size) {
        if (this.#buf.length < 12 + h.size) {
          const bigger = new Uint8Array(12 + h.size);
          bigger.set(this.#buf.subarray(0, this.#len));
          this.#buf = bigger;
        }
        return;
      }
      const payload = this.#buf.slice(12, 12 + h.size);
      this.#buf.copyWithin(0, 12 + h.size, this.#len);
      this.#len -= 12 + h.size;
      const fds = this.#fds;
      this.#fds = [];
      try {
        this.#handle(h.request, payload, fds);
      } catch (err) {
        for (const fd of fds) closeFd(fd);
        throw err;
      }
    }
  }

  #reply(request: number, payload: Uint8Array): void {
    const msg = new Uint8Array(12 + payload.length);
    VhostUserGpuHeader.write(new DataView(msg.buffer), 0, { request, flags: VHOST_USER_GPU_MSG_FLAG_REPLY, size: payload.length });
    msg.set(payload, 12);
    let off = 0;
    while (off < msg.length) {
      const n = this.#stream.send(msg.subarray(off));
      if (n === null) throw new VhostUserError("SocketRetry", "vhost-user-gpu socket full while replying");
      off += n;
    }
  }

  #handle(request: number, p: Uint8Array, fds: number[]): void {
    const R = VhostUserGpuRequest;
    const need = (size: number, exact = true): void => {
      if (exact ? p.length !== size : p.length < size)
        throw new VhostUserError("InvalidMessage", `vhost-user-gpu request ${request}: payload of ${p.length} bytes, expected ${size}`);
    };
    const noFds = (): void => {
      if (fds.length > 0) throw new VhostUserError("IncorrectFds", `vhost-user-gpu request ${request} carries ${fds.length} fd(s)`);
    };
    if (request !== R.VHOST_USER_GPU_DMABUF_SCANOUT && request !== R.VHOST_USER_GPU_DMABUF_SCANOUT2) noFds();
    switch (request) {
      case R.VHOST_USER_GPU_GET_PROTOCOL_FEATURES: {
        need(0);
        const b = new Uint8Array(8);
        new DataView(b.buffer).setBigUint64(0, this.offeredProtocolFeatures, true);
        this.#reply(request, b);
        return;
      }
      case R.VHOST_USER_GPU_SET_PROTOCOL_FEATURES: {
        need(8);
        const f = new DataView(p.buffer, p.byteOffset).getBigUint64(0, true);
        if ((f & ~this.offeredProtocolFeatures) !== 0n)
          throw new VhostUserError("FeatureMismatch", `the GPU back-end set protocol features 0x${f.toString(16)}, offered 0x${this.offeredProtocolFeatures.toString(16)}`);
        this.protocolFeatures = f;
        this.emit("protocolFeatures", f);
        return;
      }
      case R.VHOST_USER_GPU_GET_DISPLAY_INFO: {
        need(0);
        const modes = this.#handlers.displayInfo?.() ?? [{ width: 1024, height: 768, enabled: 1 }];
        if (modes.length > VIRTIO_GPU_MAX_SCANOUTS) throw new VhostUserError("InvalidParam", `${modes.length} display modes, at most ${VIRTIO_GPU_MAX_SCANOUTS}`);
        const out = new Uint8Array(DISPLAY_INFO_SIZE);
        const view = new DataView(out.buffer);
        VirtioGpuCtrlHdr.write(view, 0, { type: VIRTIO_GPU_RESP_OK_DISPLAY_INFO });
        modes.forEach((m, i) => VirtioGpuDisplayOne.write(view, 24 + i * 24, m));
        this.emit("displayInfo");
        this.#reply(request, out);
        return;
      }
      case R.VHOST_USER_GPU_GET_EDID: {
        need(4);
        const scanoutId = new DataView(p.buffer, p.byteOffset).getUint32(0, true);
        if (!this.#handlers.edid) throw new VhostUserError("InactiveFeature", "GET_EDID without the EDID protocol feature");
        const edid = this.#handlers.edid(scanoutId);
        if (edid.length > 1024) throw new VhostUserError("InvalidParam", `EDID of ${edid.length} bytes, at most 1024`);
        const out = new Uint8Array(EDID_RESP_SIZE);
        const view = new DataView(out.buffer);
        VirtioGpuCtrlHdr.write(view, 0, { type: VIRTIO_GPU_RESP_OK_EDID });
        view.setUint32(24, edid.length, true);
        out.set(edid, 32);
        this.#reply(request, out);
        return;
      }
      case R.VHOST_USER_GPU_CURSOR_POS:
      case R.VHOST_USER_GPU_CURSOR_POS_HIDE: {
        need(CursorPos.size);
        const c = CursorPos.decode(p);
        this.emit("cursorPos", { ...c, visible: request === R.VHOST_USER_GPU_CURSOR_POS });
        return;
      }
      case R.VHOST_USER_GPU_CURSOR_UPDATE: {
        need(CURSOR_UPDATE_SIZE);
        const c = CursorPos.decode(p);
        const v = new DataView(p.buffer, p.byteOffset);
        this.emit("cursorUpdate", { ...c, hotX: v.getUint32(12, true), hotY: v.getUint32(16, true), pixels: p.subarray(20) });
        return;
      }
      case R.VHOST_USER_GPU_SCANOUT:
        need(Scanout.size);
        this.emit("scanout", Scanout.decode(p));
        return;
      case R.VHOST_USER_GPU_UPDATE: {
        need(Update.size, false);
        const u = Update.decode(p);
        const data = p.subarray(Update.size);
        if (u.width * u.height === 0 ? data.length !== 0 : data.length % (u.width * u.height) !== 0)
          throw new VhostUserError("InvalidMessage", `UPDATE of ${u.width}x${u.height} carries ${data.length} pixel bytes`);
        this.emit("update", { ...u, data });
        return;
      }
      case R.VHOST_USER_GPU_DMABUF_SCANOUT:
      case R.VHOST_USER_GPU_DMABUF_SCANOUT2: {
        const two = request === R.VHOST_USER_GPU_DMABUF_SCANOUT2;
        need(DmabufScanout.size + (two ? 8 : 0));
        if (fds.length > 1) throw new VhostUserError("IncorrectFds", `DMABUF_SCANOUT carries ${fds.length} fds`);
        const s: StructValue<typeof DmabufScanout> & { modifier?: bigint } = DmabufScanout.decode(p);
        if (two) s.modifier = new DataView(p.buffer, p.byteOffset).getBigUint64(40, true);
        const fd = fds[0] ?? null;
        try {
          this.emit("dmabufScanout", s, fd);
        } finally {
          if (fd !== null) closeFd(fd);
        }
        return;
      }
      case R.VHOST_USER_GPU_DMABUF_UPDATE:
        need(Update.size);
        this.emit("dmabufUpdate", Update.decode(p));
        // The back-end stops processing its control queue until this reply (vg_wait_ok).
        this.#reply(request, new Uint8Array(0));
        return;
      default:
        throw new VhostUserError("InvalidMessage", `unknown vhost-user-gpu request ${request}`);
    }
  }
}
