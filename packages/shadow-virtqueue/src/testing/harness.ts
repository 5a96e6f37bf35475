// A relay on memfd memory on both sides, for tests and benchmarks of ShadowQueue itself: a guest driver
// (virtio-queue's DriverQueue on "guest RAM"), the relay, and a device loop on the shadow ring
// (virtio-queue's device-side Queue on the shadow memory, i.e. what a vhost-user backend would do).
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, Queue } from "@xen-vhost/virtio-queue";
import { ShadowMemory } from "../shadow-memory.js";
import { ShadowQueue, type ShadowQueueOptions } from "../shadow-queue.js";

export const GUEST_RAM = 0x4000_0000;

export interface HarnessOptions {
  size?: number;
  guestRamBytes?: number;
  poolBytes?: number;
  guestEventIdx?: boolean;
  backendEventIdx?: boolean;
  /** Reserve indirect tables of this many entries per head in the guest driver. */
  indirectMaxEntries?: number;
  relay?: Partial<Pick<ShadowQueueOptions, "writeBack" | "onBackendLoss" | "failRequest" | "maxChainLength">>;
}

export interface Harness extends Disposable {
  readonly guest: GuestMemory;
  /** The guest's driver; buffers go from `dataBase` on. */
  readonly driver: DriverQueue<number>;
  readonly dataBase: number;
  readonly shadow: ShadowMemory;
  readonly relay: ShadowQueue;
  /** The backend's view: a device-side Queue on the shadow ring. Replaced by `newDevice()`. */
  device: Queue;
  kicks: number;
  interrupts: number;
  /** A fresh device-side Queue on the shadow ring (a restarted backend; nextAvail 0). */
  newDevice(): Queue;
  close(): void;
}

export function relayHarness(o: HarnessOptions = {}): Harness {
  const size = o.size ?? 64;
  const guest = GuestMemory.fromRanges([[GUEST_RAM, o.guestRamBytes ?? 8 << 20]], { name: "test-guest" });
  const shadow = ShadowMemory.create([{ index: 0, size, poolBytes: o.poolBytes ?? 1 << 20 }]);
  const driver = DriverQueue.create<number>(guest, GUEST_RAM, size, {
    eventIdx: o.guestEventIdx ?? false,
    ...(o.indirectMaxEntries ? { indirectMaxEntries: o.indirectMaxEntries } : {}),
  });
  const layout = DriverQueue.layout(GUEST_RAM, size, o.indirectMaxEntries ? { indirectMaxEntries: o.indirectMaxEntries } : {});
  const dataBase = Number((layout.end + 0xfffn) & ~0xfffn);
  const h: Harness = {
    guest, driver, dataBase, shadow,
    relay: undefined as unknown as ShadowQueue,
    device: undefined as unknown as Queue,
    kicks: 0,
    interrupts: 0,
    newDevice() {
      const r = h.relay.shadowRing;
      const q = new Queue(shadow.memory);
      q.size = r.size;
      q.descTable = r.desc;
      q.availRing = r.avail;
      q.usedRing = r.used;
      q.eventIdx = o.backendEventIdx ?? false;
      q.ready = true;
      h.device = q;
      return q;
    },
    close() {
      h.relay?.close();
      shadow.close();
      guest.close();
    },
    [Symbol.dispose]() {
      h.close();
    },
  };
  try {
    (h as { relay: ShadowQueue }).relay = new ShadowQueue({
      index: 0,
      guest,
      ring: {
        size, desc: driver.descTable.value, avail: driver.availRing.value, used: driver.usedRing.value,
        eventIdx: o.guestEventIdx ?? false, indirect: true,
      },
      shadow: shadow.memory,
      area: shadow.areas.get(0)!,
      backendEventIdx: o.backendEventIdx ?? false,
      ...o.relay,
      kickBackend: () => h.kicks++,
      interruptGuest: () => h.interrupts++,
    });
    h.newDevice();
  } catch (e) {
    h.close();
    throw e;
  }
  return h;
}
