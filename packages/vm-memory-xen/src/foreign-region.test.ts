// Foreign regions over xen-sys's RecordingTransport (an encoding double: it records the frames asked for and
// returns plain memory, or the page errors a test gives it). What is checked here is this package's own
// logic: the frames requested, error typing, bounds, descriptions, close. Mapping real guest pages is
// covered by the xen-sim tests (test/sim.test.ts).
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { GuestMemoryError} from "@xen-vhost/vm-memory";
import { GuestMemory, MmapRegion } from "@xen-vhost/vm-memory";
import { addressOf, errnoOf, memfdCreate, open, close, constants } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { XenError } from "@xen-vhost/xen-sys";
import { RecordingTransport, fail } from "@xen-vhost/xen-sys/testing";
import { DriverQueue, Queue } from "@xen-vhost/virtio-queue";
import { XenMemoryError } from "./error.js";
import { XenForeignRegion } from "./foreign-region.js";
import { deviceFdProvider, type MappingFdProvider } from "./region-fd.js";

function errOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

/** Hands out memfds standing in for privcmd fds (the description only carries the number). */
function memfdProvider(): MappingFdProvider & { opened: { kind: string; domid: number }[] } {
  const opened: { kind: string; domid: number }[] = [];
  return {
    opened,
    openMappingFd(kind, domid) {
      opened.push({ kind, domid });
      return memfdCreate(`fake-${kind}`);
    },
  };
}

let leaks: ReturnType<typeof fdLeakCheck>;
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

describe("XenForeignRegion.map", () => {
  it("asks for every frame of the range, for the domain, once", () => {
    const t = new RecordingTransport();
    using r = XenForeignRegion.map(t, 5, 0x4000_0000, 4 * 4096, { readOnly: true, pagedRetries: 3 });
    const calls = t.of("mmapForeign");
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ domid: 5, gfns: [0x40000n, 0x40001n, 0x40002n, 0x40003n], options: { readOnly: true, pagedRetries: 3 } });
    expect(r.size).toBe(4 * 4096);
    expect(r.guestBase.value).toBe(0x4000_0000n);
    expect(r.mapping.bytes.length).toBe(4 * 4096);
  });

  it("names the first frame Xen refused and its errno, and unmaps everything", () => {
    let handed: ArrayBuffer | undefined;
    const t = new RecordingTransport({
      respond: {
        mmapForeign(_d, gfns) {
          handed = new ArrayBuffer(gfns.length * 4096);
          return { buffer: handed, errors: Int32Array.from([0, 0, errnoOf("EFAULT"), errnoOf("ENOENT")]) };
        },
      },
    });
    const e = errOf(() => XenForeignRegion.map(t, 3, 0x4000_0000, 4 * 4096));
    expect(e).toBeInstanceOf(XenMemoryError);
    const x = e as XenMemoryError;
    expect(x.kind).toBe("ForeignMapFailed");
    expect(x.gfn).toBe(0x40002n);
    expect(x.code).toBe("EFAULT");
    expect(x.domid).toBe(3);
    expect(x.message).toContain("frame 0x40002");
    expect(x.message).toContain("2 of 4 frames failed");
    expect(Array.from(x.pageErrors!)).toEqual([0, 0, 14, 2]);
    // The partial mapping never escapes: its buffer is detached.
    expect(handed!.byteLength).toBe(0);
  });

  it("wraps a refused mapping call (no such domain) with the transport's error as cause", () => {
    const t = new RecordingTransport({ respond: { mmapForeign: () => { throw fail("ESRCH", "IOCTL_PRIVCMD_MMAPBATCH_V2"); } } });
    const e = errOf(() => XenForeignRegion.map(t, 42, 0, 4096)) as XenMemoryError;
    expect(e.kind).toBe("ForeignMapFailed");
    expect(e.code).toBe("ESRCH");
    expect(e.cause).toBeInstanceOf(XenError);
    expect((e.cause as XenError).kind).toBe("NoSuchDomain");
  });

  it("refuses bad arguments before calling Xen", () => {
    const t = new RecordingTransport();
    expect(() => XenForeignRegion.map(t, 1, 0x1001, 4096)).toThrow(RangeError);
    expect(() => XenForeignRegion.map(t, 1, 0x1000, 0)).toThrow(RangeError);
    expect(() => XenForeignRegion.map(t, 1, 0x1000, 100)).toThrow(RangeError);
    expect(() => XenForeignRegion.map(t, 0x7ff0, 0x1000, 4096)).toThrow(RangeError);
    expect(() => XenForeignRegion.map(t, 1, 2 ** 53 - 4096, 8192)).toThrow(RangeError);
    expect(() => XenForeignRegion.map(t, 1, -4096, 4096)).toThrow(RangeError);
    expect(t.calls).toEqual([]);
  });
});

describe("a foreign region inside GuestMemory", () => {
  it("reads and writes with bounds checks; atomics must be aligned; crossing the end writes nothing", () => {
    const t = new RecordingTransport();
    using mem = new GuestMemory([XenForeignRegion.map(t, 1, 0x4000_0000, 2 * 4096)]);
    mem.write(0x4000_0ff0, new Uint8Array(32).fill(7));
    expect(Array.from(mem.read(0x4000_1000, 4))).toEqual([7, 7, 7, 7]);
    mem.store16(0x4000_0002, 0xbeef);
    expect(mem.load16(0x4000_0002)).toBe(0xbeef);
    const kind = (fn: () => unknown) => (errOf(fn) as GuestMemoryError).kind;
    expect(kind(() => mem.load16(0x4000_0001))).toBe("Unaligned");
    expect(kind(() => mem.load64(0x4000_0004))).toBe("Unaligned");
    expect(kind(() => mem.write(0x4000_1ffc, new Uint8Array(8).fill(9)))).toBe("InvalidGuestAddress");
    expect(Array.from(mem.read(0x4000_1ffc, 4))).toEqual([0, 0, 0, 0]);
    expect(kind(() => mem.read(0x3fff_fffc, 8))).toBe("InvalidGuestAddress");
    expect(kind(() => mem.read(0xffff_ffff_ffff_fff0n, 32))).toBe("Overflow");
    expect(kind(() => mem.slice(0x4000_1f00, 0x200))).toBe("OutOfBounds");
  });

  it("carries a virtio queue unchanged (driver and device sides over the same foreign mapping)", () => {
    const t = new RecordingTransport();
    using mem = new GuestMemory([XenForeignRegion.map(t, 1, 0x4000_0000, 16 * 4096)]);
    const driver = DriverQueue.create<string>(mem, 0x4000_0000, 16);
    const queue = new Queue(mem);
    queue.size = 16;
    queue.descTable = driver.descTable;
    queue.availRing = driver.availRing;
    queue.usedRing = driver.usedRing;
    queue.ready = true;
    mem.write(0x4000_8000, new TextEncoder().encode("ping"));
    driver.add({ readable: [{ addr: 0x4000_8000, len: 4 }], writable: [{ addr: 0x4000_9000, len: 4 }] }, { token: "t1" });
    const chain = queue.pop()!;
    expect(new TextDecoder().decode(mem.read(chain.readable[0]!.addr, 4))).toBe("ping");
    mem.write(chain.writable[0]!.addr, new TextEncoder().encode("pong"));
    queue.addUsed(chain.head, 4);
    const used = [...driver.harvest()];
    expect(used.map((u) => u.token)).toEqual(["t1"]);
    expect(new TextDecoder().decode(mem.read(0x4000_9000, 4))).toBe("pong");
  });

  it("detaches every view on close (no use after unmap) and closing twice is safe", () => {
    const t = new RecordingTransport();
    const r = XenForeignRegion.map(t, 1, 0x4000_0000, 4096);
    const mem = new GuestMemory([r]);
    const view = mem.slice(0x4000_0000, 16);
    const borrowed = mem.borrow(0x4000_0010, 16);
    r.close();
    r.close();
    expect(view.length).toBe(0);
    expect(borrowed.bytes.length).toBe(0);
    expect((errOf(() => mem.read(0x4000_0000, 4)) as GuestMemoryError).kind).toBe("Closed");
    expect((errOf(() => r.mapping) as GuestMemoryError).kind).toBe("Closed");
    mem.close();
    mem.close();
  });
});

describe("vhost-user description of a foreign region", () => {
  it("carries a fresh fd from the provider, FOREIGN, the domid, the real user address, offset 0; close releases the fd", () => {
    const t = new RecordingTransport();
    const fds = memfdProvider();
    const r = XenForeignRegion.map(t, 9, 0x4000_0000, 2 * 4096, { fdProvider: fds });
    const d = r.vhostUserDescription();
    expect(d).toMatchObject({ guest_phys_addr: 0x4000_0000n, memory_size: 8192n, mmap_offset: 0n, xen: { flags: 0x1, domid: 9 } });
    expect(d.userspace_addr).toBe(addressOf(r.mapping.bytes));
    expect(r.vhostUserDescription().fd).toBe(d.fd); // one fd per region, opened once
    expect(fds.opened).toEqual([{ kind: "privcmd", domid: 9 }]);
    r.close();
    expect((errOf(() => r.vhostUserDescription()) as GuestMemoryError).kind).toBe("Closed");
  });

  it("mixes with memfd regions in one SET_MEM_TABLE list", () => {
    const t = new RecordingTransport();
    using mem = new GuestMemory([MmapRegion.memfd(0, 0x10000), XenForeignRegion.map(t, 2, 0x4000_0000, 4096, { fdProvider: memfdProvider() })]);
    const ds = mem.vhostUserRegions();
    expect(ds.map((d) => d.xen?.flags)).toEqual([undefined, 0x1]);
  });

  it("without /dev/xen: FdUnavailable naming the device node", () => {
    const t = new RecordingTransport();
    using r = XenForeignRegion.map(t, 9, 0x4000_0000, 4096, { fdProvider: deviceFdProvider({ privcmdPath: "/nonexistent/privcmd" }) });
    const e = errOf(() => r.vhostUserDescription()) as XenMemoryError;
    expect(e.kind).toBe("FdUnavailable");
    expect(e.code).toBe("ENOENT");
    expect(e.message).toContain("/nonexistent/privcmd");
  });

  it("a node that is not privcmd fails the RESTRICT ioctl, and the fd is closed again", () => {
    const t = new RecordingTransport();
    using r = XenForeignRegion.map(t, 9, 0x4000_0000, 4096, { fdProvider: deviceFdProvider({ privcmdPath: "/dev/null" }) });
    const e = errOf(() => r.vhostUserDescription()) as XenMemoryError;
    expect(e.kind).toBe("FdUnavailable");
    expect(e.code).toBe("ENOTTY");
    expect(e.message).toContain("restrict");
  });

  it("the default provider on this host opens the real /dev/xen/privcmd or says it is missing", () => {
    const t = new RecordingTransport();
    using r = XenForeignRegion.map(t, 9, 0x4000_0000, 4096);
    let hasPrivcmd = true;
    try {
      close(open("/dev/xen/privcmd", constants.O_RDWR));
    } catch {
      hasPrivcmd = false;
    }
    if (hasPrivcmd) expect(r.vhostUserDescription().xen).toEqual({ flags: 1, domid: 9 });
    else expect((errOf(() => r.vhostUserDescription()) as XenMemoryError).kind).toBe("FdUnavailable");
  });
});
