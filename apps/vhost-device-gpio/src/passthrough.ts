// A host GPIO chip through the GPIO character device, uAPI v2 (linux/gpio.h; Documentation/userspace-api/
// gpio/chardev.rst). Lines are requested one at a time, only while the guest uses them: SET_DIRECTION in/out
// requests the line (GPIO_V2_GET_LINE_IOCTL) with the matching flags, edge interrupts add EDGE_* flags and a
// watcher on the line fd that reads struct gpio_v2_line_event; direction none releases it. The character
// device has no level-triggered events, so LEVEL_* interrupt types are refused.
import { FdWatcher, PollEvents, SysError, close, constants, ioctl, open, read, setNonblocking } from "@xen-vhost/vmm-sys-util";
import {
  GPIO_GET_CHIPINFO_IOCTL, GPIO_V2_GET_LINEINFO_IOCTL, GPIO_V2_GET_LINE_IOCTL, GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES, GPIO_V2_LINE_FLAG_EDGE_FALLING,
  GPIO_V2_LINE_FLAG_EDGE_RISING, GPIO_V2_LINE_FLAG_INPUT, GPIO_V2_LINE_FLAG_OUTPUT, GPIO_V2_LINE_GET_VALUES_IOCTL, GPIO_V2_LINE_SET_VALUES_IOCTL,
  GpioV2LineAttribute, GpioV2LineConfig, GpioV2LineConfigAttribute, GpioV2LineEvent, GpioV2LineInfo, GpioV2LineRequest, GpioV2LineValues,
  GpiochipInfo, VIRTIO_GPIO_DIRECTION_IN, VIRTIO_GPIO_DIRECTION_NONE, VIRTIO_GPIO_DIRECTION_OUT, VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH,
  VIRTIO_GPIO_IRQ_TYPE_EDGE_FALLING, VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING, VIRTIO_GPIO_IRQ_TYPE_NONE, cString,
} from "./abi.js";
import type { GpioChip, GpioEventListener } from "./chip.js";
import { GpioError } from "./error.js";

/** The syscalls the chip makes; tests substitute them to check encodings without hardware. */
export interface GpioDevOps {
  open(path: string): number;
  ioctl(fd: number, request: number, arg: Uint8Array): number;
  close(fd: number): void;
  /** Watches a line fd for events; returns a stop function. */
  watch(fd: number, onReadable: () => void): () => void;
  read(fd: number, buf: Uint8Array): number | null;
}

export const realOps: GpioDevOps = {
  open: (path) => open(path, constants.O_RDWR),
  ioctl: (fd, request, arg) => ioctl(fd, request, arg),
  close: (fd) => close(fd),
  watch(fd, onReadable) {
    setNonblocking(fd, true);
    const w = new FdWatcher(fd, onReadable, { onError: () => {} }).start(PollEvents.READABLE);
    return () => w.close();
  },
  read: (fd, buf) => read(fd, buf),
};

/** GPIO_V2_GET_LINE_IOCTL argument for one line with `flags` (and its output value for outputs). */
export function encodeLineRequest(line: number, flags: bigint, outValue: number, consumer = "vhost-device-gpio"): Uint8Array {
  const buf = GpioV2LineRequest.encode({ num_lines: 1, event_buffer_size: 0 });
  const view = new DataView(buf.buffer);
  view.setUint32(GpioV2LineRequest.offsetOf("offsets"), line, true);
  buf.set(new TextEncoder().encode(consumer).subarray(0, 31), GpioV2LineRequest.offsetOf("consumer"));
  const cfg = GpioV2LineRequest.offsetOf("config");
  GpioV2LineConfig.write(view, cfg, { flags, num_attrs: (flags & GPIO_V2_LINE_FLAG_OUTPUT) !== 0n ? 1 : 0 });
  if ((flags & GPIO_V2_LINE_FLAG_OUTPUT) !== 0n) {
    const a = cfg + GpioV2LineConfig.offsetOf("attrs");
    GpioV2LineAttribute.write(view, a, { id: GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES, value: BigInt(outValue & 1) });
    GpioV2LineConfigAttribute.write(view, a, { mask: 1n });
  }
  return buf;
}

interface HostLine {
  direction: number;
  outValue: number;
  irqType: number;
  fd: number;
  unwatch: (() => void) | undefined;
}

export class HostChip implements GpioChip {
  readonly name: string;
  readonly path: string;
  readonly ngpio: number;
  readonly label: string;
  readonly #ops: GpioDevOps;
  readonly #names: string[];
  readonly #lines: HostLine[];
  #fd: number;
  onEvent: GpioEventListener | undefined;

  /** @throws GpioError ChipMissing (no node, or not a GPIO chip) */
  constructor(index: number, ops: GpioDevOps = realOps) {
    this.path = `/dev/gpiochip${index}`;
    this.#ops = ops;
    try {
      this.#fd = ops.open(this.path);
    } catch (err) {
      const code = err instanceof SysError ? err.code : String(err);
      throw new GpioError("ChipMissing", `${this.path}: cannot open: ${code}${code === "ENOENT" ? " (no such GPIO chip on this machine; use s<N> for a simulated one)" : ""}`, { cause: err });
    }
    try {
      const info = GpiochipInfo.encode();
      ops.ioctl(this.#fd, GPIO_GET_CHIPINFO_IOCTL, info);
      const ci = GpiochipInfo.decode(info);
      this.name = cString(ci.name) || this.path;
      this.label = cString(ci.label);
      this.ngpio = ci.lines;
      if (this.ngpio < 1 || this.ngpio > 0xffff) throw new GpioError("ChipMissing", `${this.path}: chip reports ${this.ngpio} lines`);
      this.#names = [];
      for (let i = 0; i < this.ngpio; i++) {
        const li = GpioV2LineInfo.encode({ offset: i });
        ops.ioctl(this.#fd, GPIO_V2_GET_LINEINFO_IOCTL, li);
        this.#names.push(cString(GpioV2LineInfo.decode(li).name));
      }
    } catch (err) {
      ops.close(this.#fd);
      if (err instanceof GpioError) throw err;
      throw new GpioError("ChipMissing", `${this.path}: not a GPIO character device: ${(err as Error).message}`, { cause: err });
    }
    this.#lines = Array.from({ length: this.ngpio }, () => ({
      direction: VIRTIO_GPIO_DIRECTION_NONE, outValue: 0, irqType: VIRTIO_GPIO_IRQ_TYPE_NONE, fd: -1, unwatch: undefined,
    }));
  }

  #line(i: number): HostLine {
    if (this.#fd < 0) throw new GpioError("IoFailed", `${this.path} is closed`);
    const l = this.#lines[i];
    if (!l) throw new GpioError("InvalidLine", `${this.path}: line ${i} out of range (${this.ngpio} lines)`);
    return l;
  }

  names(): string[] {
    return [...this.#names];
  }

  getDirection(line: number): number {
    return this.#line(line).direction;
  }

  #release(l: HostLine): void {
    l.unwatch?.();
    l.unwatch = undefined;
    if (l.fd >= 0) this.#ops.close(l.fd);
    l.fd = -1;
  }

  /** (Re)requests the line with flags for its direction and interrupt type. */
  #apply(index: number, l: HostLine): void {
    this.#release(l);
    if (l.direction === VIRTIO_GPIO_DIRECTION_NONE) return;
    let flags = l.direction === VIRTIO_GPIO_DIRECTION_OUT ? GPIO_V2_LINE_FLAG_OUTPUT : GPIO_V2_LINE_FLAG_INPUT;
    if (l.direction === VIRTIO_GPIO_DIRECTION_IN) {
      if (l.irqType & VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING) flags |= GPIO_V2_LINE_FLAG_EDGE_RISING;
      if (l.irqType & VIRTIO_GPIO_IRQ_TYPE_EDGE_FALLING) flags |= GPIO_V2_LINE_FLAG_EDGE_FALLING;
    }
    const req = encodeLineRequest(index, flags, l.outValue);
    try {
      this.#ops.ioctl(this.#fd, GPIO_V2_GET_LINE_IOCTL, req);
    } catch (err) {
      throw this.#failed(`requesting line ${index}`, err);
    }
    l.fd = new DataView(req.buffer).getInt32(GpioV2LineRequest.offsetOf("fd"), true);
    if (flags & (GPIO_V2_LINE_FLAG_EDGE_RISING | GPIO_V2_LINE_FLAG_EDGE_FALLING)) {
      const fd = l.fd;
      l.unwatch = this.#ops.watch(fd, () => this.#drain(index, fd));
    }
  }

  #drain(index: number, fd: number): void {
    const ev = new Uint8Array(GpioV2LineEvent.size * 16);
    for (;;) {
      let n: number | null;
      try {
        n = this.#ops.read(fd, ev);
      } catch {
        return;
      }
      if (!n || n <= 0) return;
      for (let at = 0; at + GpioV2LineEvent.size <= n; at += GpioV2LineEvent.size) this.onEvent?.(index);
    }
  }

  setDirection(line: number, direction: number): void {
    const l = this.#line(line);
    if (direction !== VIRTIO_GPIO_DIRECTION_NONE && direction !== VIRTIO_GPIO_DIRECTION_OUT && direction !== VIRTIO_GPIO_DIRECTION_IN)
      throw new GpioError("InvalidArgument", `${this.path}: direction ${direction} is not none/out/in`);
    const prev = l.direction;
    l.direction = direction;
    try {
      this.#apply(line, l);
    } catch (err) {
      l.direction = prev;
      throw err;
    }
  }

  getValue(line: number): number {
    const l = this.#line(line);
    if (l.fd < 0) throw new GpioError("InvalidArgument", `${this.path}: line ${line} has direction none`);
    const v = GpioV2LineValues.encode({ mask: 1n });
    try {
      this.#ops.ioctl(l.fd, GPIO_V2_LINE_GET_VALUES_IOCTL, v);
    } catch (err) {
      throw this.#failed(`reading line ${line}`, err);
    }
    return Number(GpioV2LineValues.decode(v).bits & 1n);
  }

  setValue(line: number, value: number): void {
    const l = this.#line(line);
    if (value !== 0 && value !== 1) throw new GpioError("InvalidArgument", `${this.path}: value ${value} is not 0 or 1`);
    l.outValue = value;
    if (l.direction !== VIRTIO_GPIO_DIRECTION_OUT) return; // applied when the line becomes an output
    try {
      this.#ops.ioctl(l.fd, GPIO_V2_LINE_SET_VALUES_IOCTL, GpioV2LineValues.encode({ bits: BigInt(value), mask: 1n }));
    } catch (err) {
      throw this.#failed(`writing line ${line}`, err);
    }
  }

  setIrqType(line: number, type: number): void {
    const l = this.#line(line);
    if (type !== VIRTIO_GPIO_IRQ_TYPE_NONE && (type & ~VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH) !== 0)
      throw new GpioError("InvalidArgument", `${this.path}: interrupt type ${type} (level interrupts do not exist in the GPIO character device)`);
    if (type !== VIRTIO_GPIO_IRQ_TYPE_NONE && l.direction === VIRTIO_GPIO_DIRECTION_OUT)
      throw new GpioError("InvalidArgument", `${this.path}: line ${line} is an output and cannot raise interrupts`);
    if (l.irqType === type) return;
    const prev = { irqType: l.irqType, direction: l.direction };
    l.irqType = type;
    // Linux's virtio-gpio driver may enable the interrupt of a line it never configured: make it an input.
    if (type !== VIRTIO_GPIO_IRQ_TYPE_NONE) l.direction = VIRTIO_GPIO_DIRECTION_IN;
    try {
      this.#apply(line, l);
    } catch (err) {
      Object.assign(l, prev);
      throw err;
    }
  }

  levelActive(): boolean {
    return false;
  }

  #failed(what: string, err: unknown): GpioError {
    const code = err instanceof SysError ? err.code : String(err);
    return new GpioError(code === "EBUSY" ? "LineBusy" : "IoFailed", `${this.path}: ${what}: ${code}`, { cause: err });
  }

  close(): void {
    if (this.#fd < 0) return;
    for (const l of this.#lines) this.#release(l);
    this.#ops.close(this.#fd);
    this.#fd = -1;
    this.onEvent = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
