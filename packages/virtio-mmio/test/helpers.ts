import type { ConfigValue, QueueConfig, VirtioDevice } from "../src/index.js";
import { bit, VirtioFeature } from "../src/index.js";

/** A device that records what the transport asked of it; config space is a plain byte array. */
export class RecordingDevice implements VirtioDevice {
  deviceId = 34;
  features = bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.RING_EVENT_IDX) | bit(VirtioFeature.RING_RESET) | 1n;
  numQueues = 2;
  configSize = 8;
  config = new Uint8Array([8, 0, 0, 0, 56, 0, 0, 0]);
  activations: { features: bigint; queues: readonly QueueConfig[] }[] = [];
  resets = 0;
  notifies: [number, number][] = [];
  queueResets: number[] = [];
  activateImpl: (() => void | Promise<void>) | undefined;
  asyncConfig = false;

  queueMaxSize(index: number): number {
    return index < this.numQueues ? 256 : 0;
  }
  readConfig(offset: number, size: 1 | 2 | 4 | 8): ConfigValue | Promise<ConfigValue> {
    const dv = new DataView(this.config.buffer);
    const v =
      size === 1 ? dv.getUint8(offset) : size === 2 ? dv.getUint16(offset, true) : size === 4 ? dv.getUint32(offset, true) : dv.getBigUint64(offset, true);
    return this.asyncConfig ? new Promise((r) => setTimeout(() => r(v), 1)) : v;
  }
  writeConfig(offset: number, size: 1 | 2 | 4 | 8, value: ConfigValue): void {
    const dv = new DataView(this.config.buffer);
    if (size === 8) dv.setBigUint64(offset, BigInt(value), true);
    else if (size === 4) dv.setUint32(offset, Number(value), true);
    else if (size === 2) dv.setUint16(offset, Number(value), true);
    else dv.setUint8(offset, Number(value));
  }
  activate(features: bigint, queues: readonly QueueConfig[]): void | Promise<void> {
    this.activations.push({ features, queues });
    return this.activateImpl?.();
  }
  reset(): void {
    this.resets++;
  }
  notify(queue: number, value: number): void {
    this.notifies.push([queue, value]);
  }
  resetQueue(index: number): void {
    this.queueResets.push(index);
  }
}
