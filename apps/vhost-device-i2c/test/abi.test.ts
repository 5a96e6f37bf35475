// The i2c-dev and virtio-i2c layouts against the system's C headers (STYLE.md section 4), and the bytes the
// passthrough adapter hands to the kernel, checked through a recording stand-in for the syscalls (there is
// no I2C hardware or i2c-stub module on the CI machines).
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { addressOf } from "@xen-vhost/vmm-sys-util";
import {
  I2C_FUNCS, I2C_FUNC_I2C, I2C_FUNC_SMBUS_READ_BYTE_DATA, I2C_FUNC_SMBUS_WRITE_BYTE_DATA, I2C_M_RD, I2C_RDWR, I2C_SLAVE, I2C_SMBUS,
  I2C_SMBUS_BYTE_DATA, I2C_SMBUS_I2C_BLOCK_DATA, I2C_SMBUS_READ, I2C_SMBUS_WORD_DATA, I2C_SMBUS_WRITE, I2C_SMBUS_DATA_SIZE, I2cMsg,
  I2cRdwrIoctlData, I2cSmbusIoctlData, PhysicalAdapter, VirtioI2cOutHdr, encodeRdwr, smbusPlan, type I2cDevOps, type I2cMessage,
} from "../src/index.js";

function hasCc(): boolean {
  try {
    execFileSync("cc", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
const canProbe = hasCc() && existsSync("/usr/include/linux/i2c-dev.h") && existsSync("/usr/include/linux/virtio_i2c.h");

describe("ABI against the C headers", () => {
  it.skipIf(!canProbe)("sizes, offsets and constants match linux/i2c-dev.h, i2c.h, virtio_i2c.h (needs cc + linux-libc-dev)", () => {
    const layouts = [
      [I2cMsg, "struct i2c_msg"],
      [I2cRdwrIoctlData, "struct i2c_rdwr_ioctl_data"],
      [I2cSmbusIoctlData, "struct i2c_smbus_ioctl_data"],
      [VirtioI2cOutHdr, "struct virtio_i2c_out_hdr"],
    ] as const;
    const lines: string[] = [];
    for (const [l, c] of layouts) {
      lines.push(`printf("${l.name} size %zu\\n", sizeof(${c}));`);
      for (const [f] of Object.entries(l.fields)) lines.push(`printf("${l.name}.${f} %zu\\n", offsetof(${c}, ${f}));`);
    }
    const consts = { I2C_FUNCS, I2C_RDWR, I2C_SLAVE, I2C_SMBUS, I2C_M_RD, I2C_FUNC_I2C, I2C_SMBUS_BYTE_DATA, I2C_SMBUS_WORD_DATA, I2C_SMBUS_I2C_BLOCK_DATA };
    for (const n of Object.keys(consts)) lines.push(`printf("${n} %lu\\n", (unsigned long)(${n}));`);
    lines.push(`printf("i2c_smbus_data size %zu\\n", sizeof(union i2c_smbus_data));`);
    const src = `#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n#include <linux/i2c.h>\n#include <linux/i2c-dev.h>\n#include <linux/virtio_i2c.h>\nint main(void){${lines.join("\n")}return 0;}\n`;
    const d = mkdtempSync(join(tmpdir(), "i2cabi-"));
    try {
      writeFileSync(join(d, "p.c"), src);
      execFileSync("cc", ["-o", join(d, "p"), join(d, "p.c")]);
      const out = execFileSync(join(d, "p")).toString();
      const want: string[] = [];
      for (const [l] of layouts) {
        want.push(`${l.name} size ${l.size}`);
        for (const [f, spec] of Object.entries(l.fields as Record<string, { offset: number }>)) want.push(`${l.name}.${f} ${spec.offset}`);
      }
      for (const [n, v] of Object.entries(consts)) want.push(`${n} ${v}`);
      want.push(`i2c_smbus_data size ${I2C_SMBUS_DATA_SIZE}`);
      expect(out.trim().split("\n")).toEqual(want);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

/** Records ioctls; answers I2C_FUNCS with `funcs`. */
function recorder(funcs: number): I2cDevOps & { calls: { request: number; arg: number | Uint8Array; snapshot?: Uint8Array }[] } {
  const calls: { request: number; arg: number | Uint8Array; snapshot?: Uint8Array }[] = [];
  return {
    calls,
    open: () => 77,
    close: () => {},
    ioctl(_fd, request, arg) {
      if (request === I2C_FUNCS && arg instanceof Uint8Array) new DataView(arg.buffer, arg.byteOffset).setBigUint64(0, BigInt(funcs), true);
      calls.push(typeof arg === "number" ? { request, arg } : { request, arg, snapshot: arg.slice() });
      return 0;
    },
  };
}

describe("passthrough encodings", () => {
  it("I2C_RDWR: one ioctl for the whole transfer, msgs array with addr/flags/len/buf pointers", () => {
    const msgs: I2cMessage[] = [{ addr: 0x50, read: false, data: Uint8Array.of(0x10) }, { addr: 0x50, read: true, data: new Uint8Array(4) }];
    const bufs = [new Uint8Array(new ArrayBuffer(1)), new Uint8Array(new ArrayBuffer(4))];
    const { data, array } = encodeRdwr(msgs, bufs);
    const d = I2cRdwrIoctlData.decode(data);
    expect(d).toEqual({ msgs: addressOf(array), nmsgs: 2 });
    expect(I2cMsg.read(new DataView(array.buffer), 0)).toEqual({ addr: 0x50, flags: 0, len: 1, buf: addressOf(bufs[0]!) });
    expect(I2cMsg.read(new DataView(array.buffer), 16)).toEqual({ addr: 0x50, flags: I2C_M_RD, len: 4, buf: addressOf(bufs[1]!) });

    const ops = recorder(I2C_FUNC_I2C);
    using a = new PhysicalAdapter(3, [0x50], ops);
    a.transfer(msgs);
    expect(ops.calls.map((c) => c.request)).toEqual([I2C_FUNCS, I2C_RDWR]);
    expect(I2cRdwrIoctlData.decode(ops.calls[1]!.snapshot!).nmsgs).toBe(2);
  });

  it("SMBus fallback: register reads and writes map to byte/word/block transactions", () => {
    const w2: I2cMessage = { addr: 0x20, read: false, data: Uint8Array.of(7, 0x55) };
    expect(smbusPlan([w2])).toMatchObject({ readWrite: I2C_SMBUS_WRITE, command: 7, size: I2C_SMBUS_BYTE_DATA });
    const reg: I2cMessage = { addr: 0x20, read: false, data: Uint8Array.of(3) };
    expect(smbusPlan([reg, { addr: 0x20, read: true, data: new Uint8Array(1) }])).toMatchObject({ readWrite: I2C_SMBUS_READ, command: 3, size: I2C_SMBUS_BYTE_DATA });
    expect(smbusPlan([reg, { addr: 0x20, read: true, data: new Uint8Array(2) }])).toMatchObject({ size: I2C_SMBUS_WORD_DATA });
    expect(smbusPlan([reg, { addr: 0x20, read: true, data: new Uint8Array(7) }])).toMatchObject({ size: I2C_SMBUS_I2C_BLOCK_DATA });
    expect(smbusPlan([reg, { addr: 0x21, read: true, data: new Uint8Array(1) }])).toBeUndefined();
    expect(smbusPlan([{ addr: 0x20, read: true, data: new Uint8Array(40) }])).toBeUndefined();

    const ops = recorder(I2C_FUNC_SMBUS_READ_BYTE_DATA | I2C_FUNC_SMBUS_WRITE_BYTE_DATA);
    using a = new PhysicalAdapter(4, [0x20], ops);
    a.transfer([w2]);
    expect(ops.calls.slice(1).map((c) => c.request)).toEqual([I2C_SLAVE, I2C_SMBUS]);
    expect(ops.calls[1]!.arg).toBe(0x20);
    expect(I2cSmbusIoctlData.decode(ops.calls[2]!.snapshot!)).toMatchObject({ read_write: I2C_SMBUS_WRITE, command: 7, size: I2C_SMBUS_BYTE_DATA });
    // a transfer the adapter's SMBus functions cannot express
    expect(() => a.transfer([{ addr: 0x20, read: false, data: Uint8Array.of(1, 2, 3) }])).toThrow(expect.objectContaining({ kind: "Unsupported" }) as Error);
  });
});
