import { describe, expect, it } from "vitest";
import { EventFd } from "./eventfd.js";
import { close, read, write } from "./fd.js";
import { ftruncate, memfdCreate } from "./memfd.js";

describe("read/write views", () => {
  it("every kind of view passes its own bytes (offset and byte length, not element count)", () => {
    using e = new EventFd();
    const ab = new ArrayBuffer(64);
    e.write(7n);
    const big = new BigUint64Array(ab, 16, 1);
    expect(read(e.fd, big)).toBe(8);
    expect(big[0]).toBe(7n);
    e.write(9n);
    expect(read(e.fd, new Uint16Array(ab, 8, 4))).toBe(8);
    expect(new BigUint64Array(ab, 8, 1)[0]).toBe(9n);
    const fd = memfdCreate("views");
    try {
      ftruncate(fd, 4096);
      expect(write(fd, new DataView(ab, 4, 10))).toBe(10);
      expect(write(fd, new Float64Array(3))).toBe(24);
      expect(write(fd, new ArrayBuffer(5))).toBe(5);
      expect(write(fd, Buffer.from("abc"))).toBe(3);
      expect(() => write(fd, {} as Uint8Array)).toThrow(TypeError);
    } finally {
      close(fd);
    }
  });
});
