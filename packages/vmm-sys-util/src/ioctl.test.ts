import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { _IO, _IOR, _IOW, _IOWR, decodeIoctl, ioctl, addressOf } from "./ioctl.js";
import { UnixStream } from "./unix-socket.js";
import { open, close, constants } from "./fd.js";

describe("ioctl encoders", () => {
  // Values from the kernel headers (include/uapi/linux/kvm.h, asm-generic/ioctls.h, xen/privcmd.h).
  it("match well-known request numbers", () => {
    expect(_IO(0xae, 0x00)).toBe(0xae00); // KVM_GET_API_VERSION
    expect(_IO(0xae, 0x01)).toBe(0xae01); // KVM_CREATE_VM
    expect(_IOW(0xae, 0x46, 32)).toBe(0x4020ae46); // KVM_SET_USER_MEMORY_REGION
    expect(_IOR("E", 0, 4)).toBe(0x80044500); // arbitrary READ
    expect(_IOWR("P", 4, 32)).toBe(0xc0205004); // IOCTL_PRIVCMD_MMAPBATCH_V2 on LP64
    expect(decodeIoctl(0xc0205004)).toEqual({ dir: 3, type: 0x50, nr: 4, size: 32 });
  });

  it("rejects out-of-range fields", () => {
    expect(() => _IOW("P", 256, 4)).toThrow(RangeError);
    expect(() => _IOW("P", 1, 1 << 14)).toThrow(RangeError);
  });

  it("FIONREAD on a real socket reports queued bytes", () => {
    const [a, b] = UnixStream.pair();
    using _a = a;
    using _b = b;
    a.send(new Uint8Array(13));
    const n = new Int32Array(1);
    const FIONREAD = 0x541b; // asm-generic/ioctls.h: same on x86_64 and arm64
    ioctl(b.fd, FIONREAD, n);
    expect(n[0]).toBe(13);
  });

  it("refuses a buffer smaller than the encoded size", () => {
    expect(() => ioctl(0, _IOR("x", 1, 16), new Uint8Array(8))).toThrow(RangeError);
  });

  it.skipIf(!existsSync("/dev/kvm"))("KVM_GET_API_VERSION on /dev/kvm is 12 (needs /dev/kvm)", () => {
    const fd = open("/dev/kvm", constants.O_RDWR);
    try {
      expect(ioctl(fd, _IO(0xae, 0x00))).toBe(12);
    } finally {
      close(fd);
    }
  });

  it("an ioctl the device does not know fails with a SysError naming the request", () => {
    const [a, b] = UnixStream.pair();
    using _a = a;
    using _b = b;
    expect(() => ioctl(a.fd, _IO(0xae, 0x00))).toThrow(/ioctl 0xae00: (ENOTTY|EINVAL)/);
  });

  it("addressOf gives distinct, stable addresses inside one buffer", () => {
    const buf = new Uint8Array(64);
    const base = addressOf(buf);
    expect(addressOf(buf.subarray(16))).toBe(base + 16n);
    expect(base).toBeGreaterThan(0n);
  });
});
