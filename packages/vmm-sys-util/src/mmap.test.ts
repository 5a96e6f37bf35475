import { describe, expect, it } from "vitest";
import { mmap, munmap, mmapFixed, MemoryMapping, pageSize, leakedMappings } from "./mmap.js";
import { memfdCreate, ftruncate } from "./memfd.js";
import { close } from "./fd.js";
import { SysError } from "./errno.js";

describe("mmap", () => {
  it("a memfd mapped twice shows the same bytes", () => {
    const fd = memfdCreate("twice");
    try {
      ftruncate(fd, 2 * pageSize());
      using a = new MemoryMapping(2 * pageSize(), { fd });
      using b = new MemoryMapping(2 * pageSize(), { fd });
      new Uint8Array(a.buffer).set([1, 2, 3], pageSize());
      expect([...new Uint8Array(b.buffer, pageSize(), 3)]).toEqual([1, 2, 3]);
    } finally {
      close(fd);
    }
  });

  it("munmap detaches: a stale view reads as empty instead of crashing", () => {
    const ab = mmap(pageSize());
    const view = new Uint8Array(ab);
    view[0] = 9;
    expect(munmap(ab)).toBe(true);
    expect(view.length).toBe(0);
    expect(view[0]).toBeUndefined();
    expect(ab.byteLength).toBe(0);
    expect(munmap(ab)).toBe(false); // twice is safe
  });

  it("maps at an offset and rejects unaligned offsets before the syscall", () => {
    const fd = memfdCreate("offset");
    try {
      ftruncate(fd, 4 * pageSize());
      using whole = new MemoryMapping(4 * pageSize(), { fd });
      new Uint8Array(whole.buffer)[3 * pageSize()] = 77;
      using part = new MemoryMapping(pageSize(), { fd, offset: 3 * pageSize() });
      expect(new Uint8Array(part.buffer)[0]).toBe(77);
      expect(() => mmap(pageSize(), { fd, offset: 100 })).toThrow(RangeError);
      expect(() => mmap(0)).toThrow(RangeError);
    } finally {
      close(fd);
    }
  });

  it("mmapFixed assembles non-contiguous file pages into one view", () => {
    const fd = memfdCreate("frames");
    try {
      const p = pageSize();
      ftruncate(fd, 8 * p);
      using src = new MemoryMapping(8 * p, { fd });
      const s = new Uint8Array(src.buffer);
      for (let i = 0; i < 8; i++) s[i * p] = 100 + i;
      using view = new MemoryMapping(3 * p, { fd }); // frames 0,1,2 to start with
      mmapFixed(view.buffer, 0, p, { fd, fileOffset: 5 * p });
      mmapFixed(view.buffer, 2 * p, p, { fd, fileOffset: 7 * p });
      const v = new Uint8Array(view.buffer);
      expect([v[0], v[p], v[2 * p]]).toEqual([105, 101, 107]);
      v[0] = 1; // shared: the write reaches frame 5
      expect(s[5 * p]).toBe(1);
      expect(() => mmapFixed(view.buffer, 2 * p, 2 * p, { fd })).toThrow(RangeError);
      expect(() => mmapFixed(view.buffer, 1, p, { fd })).toThrow(RangeError);
    } finally {
      close(fd);
    }
  });

  it("mapping a missing fd fails with EBADF", () => {
    expect(() => mmap(pageSize(), { fd: 99999 })).toThrow(SysError);
    try {
      mmap(pageSize(), { fd: 99999 });
    } catch (e) {
      expect((e as SysError).code).toBe("EBADF");
      expect((e as SysError).syscall).toBe("mmap");
    }
  });

  it("a mapping dropped without munmap is released by the finalizer and counted", async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (!gc) throw new Error("run with --expose-gc (vitest.config.ts sets it)");
    const before = leakedMappings();
    (() => {
      mmap(pageSize());
    })();
    for (let i = 0; i < 10 && leakedMappings() === before; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(leakedMappings()).toBe(before + 1);
  });
});
