// Shared setup: real memfd-backed guest memory, a driver laying out the rings, a device queue configured
// from the driver's addresses (what a transport would do).
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, Queue, VirtqueueError, type CreateOptions, type QueueOptions } from "../src/index.js";

export const MIB = 1024 * 1024;
/** Guest RAM: [0, 1 MiB) and [1 MiB, 2 MiB) as two adjacent memfd regions, a hole, then [4 MiB, 5 MiB). */
export const RAM: [number, number][] = [
  [0, MIB],
  [MIB, MIB],
  [4 * MIB, MIB],
];
/** Where tests put data buffers. */
export const DATA = 0x10_0000;

export interface Setup<T = unknown> extends Disposable {
  mem: GuestMemory;
  driver: DriverQueue<T>;
  queue: Queue;
}

export function setup<T = unknown>(size: number, options: CreateOptions & QueueOptions & { ringBase?: number } = {}): Setup<T> {
  const mem = GuestMemory.fromRanges(RAM);
  const driver = DriverQueue.create<T>(mem, options.ringBase ?? 0x1000, size, options);
  const qo: QueueOptions = {};
  if (options.maxChainLength !== undefined) qo.maxChainLength = options.maxChainLength;
  if (options.indirect !== undefined) qo.indirect = options.indirect;
  const queue = new Queue(mem, qo);
  queue.size = size;
  queue.descTable = driver.descTable;
  queue.availRing = driver.availRing;
  queue.usedRing = driver.usedRing;
  queue.eventIdx = options.eventIdx ?? false;
  if (options.startIndex !== undefined) queue.nextAvail = queue.nextUsed = options.startIndex;
  queue.ready = true;
  return { mem, driver, queue, [Symbol.dispose]: () => mem.close() };
}

/** The kind of the VirtqueueError `fn` throws (or a description of whatever else happened). */
export function kindOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof VirtqueueError ? e.kind : `not a VirtqueueError: ${String(e)}`;
  }
  return undefined;
}

export function errOf(fn: () => unknown): VirtqueueError | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof VirtqueueError) return e;
    throw e;
  }
  return undefined;
}
