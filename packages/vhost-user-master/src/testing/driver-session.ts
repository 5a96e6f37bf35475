// A driver session on a vhost-user backend, the way a KVM VMM drives one: the Frontend on the socket, memfd
// guest memory shared with SET_MEM_TABLE, rings laid out by virtio-queue's DriverQueue, real kick/call eventfds.
// Shared by the vhost-device daemons' tests.
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, type ChainSpec, type UsedElement } from "@xen-vhost/virtio-queue";
import { Frontend, type FrontendOptions, type NegotiateOptions, type Negotiated } from "../frontend.js";

export interface Ring {
  readonly index: number;
  readonly driver: DriverQueue<number>;
  readonly kick: EventFd;
  readonly call: EventFd;
}

export interface Session extends Disposable {
  readonly fe: Frontend;
  readonly mem: GuestMemory;
  readonly negotiated: Negotiated;
  readonly rings: Ring[];
  /** Adds a chain and kicks; returns the head. */
  post(ring: number, chain: ChainSpec, token?: number): number;
  /** Harvests `n` used elements (polling), or throws after `ms`. */
  used(ring: number, n?: number, ms?: number): Promise<UsedElement<number>[]>;
  close(): void;
}

/** Guest memory: 2 MiB at 0 (or `memSize`); rings from 0x1000 (16 KiB each), data buffers from 0x10_0000. */
export const DATA = 0x10_0000;

export interface SessionOptions extends NegotiateOptions {
  /** Use EVENT_IDX when the back-end offers it (default true). */
  eventIdx?: boolean;
  /** Guest memory size (default 2 MiB). */
  memSize?: number;
  /** GET_INFLIGHT_FD + SET_INFLIGHT_FD before the rings start, when INFLIGHT_SHMFD was negotiated (default false). */
  inflight?: boolean;
  /** SET_STATUS(DRIVER_OK) after the rings start, when STATUS was negotiated (default false; DPDK needs it). */
  driverOk?: boolean;
  /** Front-end options (reply timeout...). */
  frontend?: FrontendOptions;
}

export async function session(path: string, queues: readonly number[], options: SessionOptions = {}): Promise<Session> {
  const fe = await Frontend.connect(path, { ...options.frontend, retry: { attempts: 400, initialDelayMs: 10, maxDelayMs: 100 } });
  const mem = GuestMemory.fromRanges([[0, options.memSize ?? 0x20_0000]]);
  const rings: Ring[] = [];
  const close = (): void => {
    fe.close();
    for (const r of rings) {
      r.kick.close();
      r.call.close();
    }
    mem.close();
  };
  try {
    const negotiated = await fe.negotiate(options);
    const eventIdx = (options.eventIdx ?? true) && (negotiated.features & (1n << 29n)) !== 0n;
    const regions = mem.vhostUserRegions().map((d) => ({
      guestPhysAddr: d.guest_phys_addr, size: d.memory_size, userAddr: d.userspace_addr, mmapOffset: d.mmap_offset, fd: d.fd,
    }));
    await fe.setMemTable(regions);
    const va = (gpa: bigint): bigint => regions[0]!.userAddr + gpa;
    if (options.inflight && fe.hasProtocolFeature("INFLIGHT_SHMFD") && queues.length > 0)
      await fe.setInflightFd(await fe.getInflightFd(queues.length, Math.max(...queues)));
    for (const [i, size] of queues.entries()) {
      const driver = DriverQueue.create<number>(mem, 0x1000 + i * 0x4000, size, { eventIdx, indirectMaxEntries: 4 });
      const ring: Ring = { index: i, driver, kick: new EventFd(), call: new EventFd() };
      rings.push(ring);
      await fe.setupVring(i, {
        num: size, desc: va(driver.descTable.value), avail: va(driver.availRing.value), used: va(driver.usedRing.value),
        kick: ring.kick.fd, call: ring.call.fd,
      });
    }
    if (options.driverOk) await fe.driverOk();
    return {
      fe, mem, negotiated, rings,
      post(ring, chain, token) {
        const r = rings[ring]!;
        const head = r.driver.add(chain, token === undefined ? {} : { token });
        r.kick.write(1);
        return head;
      },
      async used(ring, n = 1, ms = 3000) {
        const r = rings[ring]!;
        const until = Date.now() + ms;
        const out: UsedElement<number>[] = [];
        for (;;) {
          out.push(...r.driver.harvest(n - out.length));
          if (out.length >= n) return out;
          if (Date.now() > until) throw new Error(`timed out: ${out.length} of ${n} used element(s) on ring ${ring}`);
          await new Promise((res) => setTimeout(res, 2));
        }
      },
      close,
      [Symbol.dispose]: close,
    };
  } catch (err) {
    close();
    throw err;
  }
}
