// A test device: one queue; each chain's readable bytes come back reversed in its writable buffers.
// An 8-byte config space: bytes 0..3 read-only "ECHO", bytes 4..7 writable.
import type { DeviceContext, DeviceVring, VhostUserDevice } from "../src/index.js";

export class EchoDevice implements VhostUserDevice {
  readonly name = "echo";
  readonly numQueues = 1;
  readonly maxQueueSize = 256;
  readonly features = (1n << 32n) | (1n << 29n) | (1n << 28n); // VERSION_1, EVENT_IDX, INDIRECT_DESC
  readonly configSize = 8;
  readonly config = new Uint8Array([0x45, 0x43, 0x48, 0x4f, 0, 0, 0, 0]);
  ctx: DeviceContext | undefined;
  handled = 0;
  resets = 0;
  stopped: number[] = [];

  getConfig(offset: number, size: number): Uint8Array {
    return this.config.slice(offset, offset + size);
  }

  setConfig(offset: number, data: Uint8Array): void {
    if (offset < 4) throw new Error("bytes 0..3 are read-only");
    this.config.set(data, offset);
  }

  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
  }

  handleQueue(vring: DeviceVring): void {
    for (let c = vring.pop(); c; c = vring.pop()) {
      const data = c.readAll().reverse();
      vring.addUsed(c.head, c.writeAll(data));
      this.handled++;
    }
  }

  queueStopped(index: number): void {
    this.stopped.push(index);
  }

  reset(): void {
    this.resets++;
  }
}
