// A test device that holds every request until told to complete it (a device waiting on hardware, an event
// queue waiting for an interrupt), with inflight tracking on. Completing writes "done:<request>".
import type { DescriptorChain } from "@xen-vhost/virtio-queue";
import type { DeviceContext, DeviceVring, VhostUserDevice } from "../src/index.js";

const dec = new TextDecoder();
const enc = new TextEncoder();

export class HoldingDevice implements VhostUserDevice {
  readonly name = "holding";
  readonly numQueues = 1;
  readonly maxQueueSize = 256;
  readonly features = (1n << 32n) | (1n << 29n) | (1n << 28n);
  readonly inflightTracking: boolean;
  /** Requests held now, in the order they were popped. */
  held: { chain: DescriptorChain; text: string }[] = [];
  /** Every request popped, in order (resubmissions included). */
  readonly popped: string[] = [];
  /** Completions, in order. */
  readonly completed: string[] = [];
  #ctx: DeviceContext | undefined;

  constructor(options: { inflight?: boolean } = {}) {
    this.inflightTracking = options.inflight ?? true;
  }

  attach(ctx: DeviceContext): void {
    this.#ctx = ctx;
  }

  handleQueue(vring: DeviceVring): void {
    for (let c = vring.pop(); c; c = vring.pop()) {
      const text = dec.decode(c.readAll());
      this.popped.push(text);
      this.held.push({ chain: c, text });
    }
  }

  /** Completes the held requests whose text is in `texts` (all if omitted). */
  complete(texts?: readonly string[]): void {
    const v = this.#ctx?.vring(0);
    if (!v) throw new Error("queue 0 is not running");
    const keep: typeof this.held = [];
    for (const h of this.held) {
      if (texts && !texts.includes(h.text)) {
        keep.push(h);
        continue;
      }
      v.addUsed(h.chain.head, h.chain.writeAll(enc.encode(`done:${h.text}`)));
      this.completed.push(h.text);
    }
    this.held = keep;
    v.signalUsedQueue();
  }

  queueStopped(): void {
    // The chains belong to a ring that is gone; with inflight tracking they come back after a reconnect.
    this.held = [];
  }

  reset(): void {
    this.held = [];
  }
}
