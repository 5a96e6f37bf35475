// vhost-device-i2c driven by vhost-user-master through a real ring in memfd memory: the simulated DS1338's
// time registers, the 24C02's pages, FAIL_NEXT groups, zero-length probes, and malformed requests.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { UnixStream, close as closeFd, memfdCreate } from "@xen-vhost/vmm-sys-util";
import { FrontendReq, encodeHeader, encodeMessage } from "@xen-vhost/vhost-user-protocol";
import { TestFrontend } from "@xen-vhost/vhost-user-backend/testing";
import { VhostUserDaemon, offeredProtocolFeatures } from "@xen-vhost/vhost-user-backend";
import type { ChainSpec } from "@xen-vhost/virtio-queue";
import {
  I2cDevice, I2cError, SimAdapter, Ds1338Rtc, At24c02Eeprom, VIRTIO_I2C_FLAGS_FAIL_NEXT, VIRTIO_I2C_FLAGS_M_RD, VirtioI2cOutHdr, openAdapters, parse, parseDeviceList,
  type SimI2cDevice,
} from "../src/index.js";
import { DATA, session, type Session } from "@xen-vhost/vhost-user-master/testing";

let dir: string;
let leaks: ReturnType<typeof fdLeakCheck>;
const cleanup: (() => void)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "i2c-"));
  leaks = fdLeakCheck();
});
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) c();
  await new Promise((r) => setTimeout(r, 20));
  rmSync(dir, { recursive: true, force: true });
  expect(leaks.check()).toEqual([]);
});

const bcd = (b: number): number => (b >> 4) * 10 + (b & 0xf);

interface Req {
  addr: number;
  read?: number;
  write?: number[];
  failNext?: boolean;
  /** raw flags / addr field overrides for malformed requests */
  flags?: number;
  addrField?: number;
}

let slot = 0;
/** Lays out one request in guest memory (its own 256-byte slot) and returns the chain and where its parts are. */
function request(s: Session, r: Req): { chain: ChainSpec; status: number; buf: number } {
  const base = DATA + (slot++ % 64) * 0x100;
  const hdr = base;
  const buf = base + 0x10;
  const status = base + 0xf0;
  const flags = r.flags ?? ((r.failNext ? VIRTIO_I2C_FLAGS_FAIL_NEXT : 0) | (r.read !== undefined ? VIRTIO_I2C_FLAGS_M_RD : 0));
  s.mem.write(hdr, VirtioI2cOutHdr.encode({ addr: r.addrField ?? r.addr << 1, padding: 0, flags }));
  s.mem.write(status, Uint8Array.of(0xee));
  if (r.write?.length) s.mem.write(buf, Uint8Array.from(r.write));
  const readable = [{ addr: hdr, len: 8 }, ...(r.write?.length ? [{ addr: buf, len: r.write.length }] : [])];
  const writable = [...(r.read ? [{ addr: buf, len: r.read }] : []), { addr: status, len: 1 }];
  return { chain: { readable, writable }, status, buf };
}

/** Posts requests in one go (one kick), waits for all, returns [status, bytes read, used len] for each. */
async function transfer(s: Session, reqs: Req[]): Promise<{ status: number; data: number[]; len: number }[]> {
  const laid = reqs.map((r) => request(s, r));
  laid.forEach((l, i) => s.rings[0]!.driver.add(l.chain, { token: i, publish: false }));
  s.rings[0]!.driver.publish();
  s.rings[0]!.kick.write(1);
  const used = await s.used(0, reqs.length);
  const byToken = new Map(used.map((u) => [u.token!, u.len]));
  return laid.map((l, i) => ({
    status: s.mem.read(l.status, 1)[0]!,
    data: [...s.mem.read(l.buf, reqs[i]!.read ?? 0)],
    len: byToken.get(i)!,
  }));
}

function serve(devices: [number, SimI2cDevice][]): string {
  const path = join(dir, "i2c.sock0");
  const adapter = new SimAdapter(new Map(devices));
  const d = new VhostUserDaemon(new I2cDevice([adapter]), { socket: path }).start();
  cleanup.push(() => d.close());
  return path;
}

async function open(path: string): Promise<Session> {
  const s = await session(path, [16]);
  cleanup.push(() => s.close());
  return s;
}

describe("virtio-i2c over vhost-user with simulated devices", () => {
  it("advertises 0x171000001 (ZERO_LENGTH_REQUEST) and one queue, like rust-vmm", async () => {
    const s = await open(serve([[0x20, new Ds1338Rtc()]]));
    expect(s.negotiated.offeredFeatures).toBe(0x171000001n);
    expect(s.negotiated.queueNum).toBe(1);
  });

  it("reads the DS1338's time registers (write reg 0 + read 7, one FAIL_NEXT group) as BCD host time", async () => {
    const s = await open(serve([[0x20, new Ds1338Rtc()]]));
    const before = Date.now();
    const [w, r] = await transfer(s, [{ addr: 0x20, write: [0], failNext: true }, { addr: 0x20, read: 7 }]);
    expect(w).toMatchObject({ status: 0, len: 1 });
    expect(r!.status).toBe(0);
    expect(r!.len).toBe(8);
    const [sec, min, hour, day, date, month, year] = r!.data as [number, number, number, number, number, number, number];
    const t = Date.UTC(2000 + bcd(year), bcd(month) - 1, bcd(date), bcd(hour), bcd(min), bcd(sec));
    expect(Math.abs(t - before)).toBeLessThan(3000);
    expect(day).toBe(new Date(t).getUTCDay() + 1);
  });

  it("sets the RTC by writing the time registers, and the clock runs on from there", async () => {
    const rtc = new Ds1338Rtc();
    const s = await open(serve([[0x20, rtc]]));
    // 2031-12-24 23:59:58 UTC, a Wednesday (day 4)
    const [w] = await transfer(s, [{ addr: 0x20, write: [0, 0x58, 0x59, 0x23, 4, 0x24, 0x12, 0x31] }]);
    expect(w!.status).toBe(0);
    const [, r] = await transfer(s, [{ addr: 0x20, write: [0], failNext: true }, { addr: 0x20, read: 7 }]);
    const [sec, min, hour, , date, month, year] = r!.data;
    expect([min, hour, date, month, year]).toEqual([0x59, 0x23, 0x24, 0x12, 0x31]);
    expect([0x58, 0x59]).toContain(sec);
    expect(Math.abs(rtc.time().getTime() - Date.UTC(2031, 11, 24, 23, 59, 58))).toBeLessThan(3000);
  });

  it("the DS1338's RAM at 0x08..0x3f is writable and the pointer wraps from 0x3f to 0x00", async () => {
    const s = await open(serve([[0x20, new Ds1338Rtc()]]));
    await transfer(s, [{ addr: 0x20, write: [0x3e, 0xaa, 0xbb] }]);
    const [, r] = await transfer(s, [{ addr: 0x20, write: [0x3e], failNext: true }, { addr: 0x20, read: 3 }]);
    expect(r!.data.slice(0, 2)).toEqual([0xaa, 0xbb]);
    expect(r!.data[2]! & 0x7f).toBeLessThan(0x60); // register 0: seconds in BCD
  });

  it("writes and reads the 24C02 EEPROM (erased = 0xff, page write rolls over inside the 8-byte page)", async () => {
    const eeprom = new At24c02Eeprom();
    const s = await open(serve([[0x50, eeprom]]));
    const [w] = await transfer(s, [{ addr: 0x50, write: [0x10, 0xde, 0xad] }]);
    expect(w).toEqual({ status: 0, data: [], len: 1 });
    const [, r] = await transfer(s, [{ addr: 0x50, write: [0x10], failNext: true }, { addr: 0x50, read: 4 }]);
    expect(r).toEqual({ status: 0, data: [0xde, 0xad, 0xff, 0xff], len: 5 });
    // 4 bytes from 0x06: 0x06, 0x07, then back to 0x00 and 0x01 of the same page
    await transfer(s, [{ addr: 0x50, write: [0x06, 1, 2, 3, 4] }]);
    expect([...eeprom.cells.subarray(0, 8)]).toEqual([3, 4, 0xff, 0xff, 0xff, 0xff, 1, 2]);
    // sequential read continues from the current address
    const [r2] = await transfer(s, [{ addr: 0x50, read: 2 }]);
    expect(r2!.data).toEqual([0xff, 0xff]);
  });

  it("rtc and eeprom on one adapter, both reachable", async () => {
    const s = await open(serve([[0x20, new Ds1338Rtc()], [0x50, new At24c02Eeprom()]]));
    const res = await transfer(s, [{ addr: 0x50, write: [0], failNext: true }, { addr: 0x50, read: 1 }, { addr: 0x20, write: [7], failNext: true }, { addr: 0x20, read: 1 }]);
    expect(res.map((r) => r.status)).toEqual([0, 0, 0, 0]);
    expect(res[1]!.data).toEqual([0xff]);
    expect(res[3]!.data).toEqual([0x03]);
  });
});

describe("errors the guest sees", () => {
  it("an absent address gets VIRTIO_I2C_MSG_ERR, and fails the rest of its FAIL_NEXT group", async () => {
    const eeprom = new At24c02Eeprom();
    const s = await open(serve([[0x50, eeprom]]));
    const res = await transfer(s, [{ addr: 0x33, read: 4 }]);
    expect(res[0]).toMatchObject({ status: 1, len: 1 });
    const grp = await transfer(s, [{ addr: 0x33, write: [0], failNext: true }, { addr: 0x50, write: [0, 0x42] }]);
    expect(grp.map((r) => r.status)).toEqual([1, 1]);
    expect(eeprom.cells[0]).toBe(0xff); // the second request never ran
    // without FAIL_NEXT the requests are independent
    const ind = await transfer(s, [{ addr: 0x33, write: [0] }, { addr: 0x50, write: [0, 0x42] }]);
    expect(ind.map((r) => r.status)).toEqual([1, 0]);
    expect(eeprom.cells[0]).toBe(0x42);
  });

  it("zero-length requests probe an address (ZERO_LENGTH_REQUEST)", async () => {
    const s = await open(serve([[0x50, new At24c02Eeprom()]]));
    const res = await transfer(s, [{ addr: 0x50 }, { addr: 0x51 }]);
    expect(res.map((r) => [r.status, r.len])).toEqual([[0, 1], [1, 1]]);
  });

  it("malformed requests: unknown flags, odd address field, read with readable data, short header -> ERR", async () => {
    const s = await open(serve([[0x50, new At24c02Eeprom()]]));
    const res = await transfer(s, [
      { addr: 0x50, read: 1, flags: VIRTIO_I2C_FLAGS_M_RD | 0x80 },
      { addr: 0x50, read: 1, addrField: 0xa1 },
      { addr: 0x50, read: 1, write: [1], flags: VIRTIO_I2C_FLAGS_M_RD },
    ]);
    expect(res.map((r) => [r.status, r.len])).toEqual([[1, 1], [1, 1], [1, 1]]);
    // a header of 4 bytes
    s.mem.write(DATA + 0x8000, Uint8Array.of(0xee));
    s.post(0, { readable: [{ addr: DATA + 0x7000, len: 4 }], writable: [{ addr: DATA + 0x8000, len: 1 }] });
    expect((await s.used(0))[0]!.len).toBe(1);
    expect(s.mem.read(DATA + 0x8000, 1)[0]).toBe(1);
    // no status byte at all: returned with length 0
    s.post(0, { readable: [{ addr: DATA + 0x7000, len: 8 }] });
    expect((await s.used(0))[0]!.len).toBe(0);
    // a read of 65536 bytes: i2c_msg.len is a u16, so ERR (and not a byte of the buffer written)
    s.mem.write(DATA + 0x9000, VirtioI2cOutHdr.encode({ addr: 0x50 << 1, padding: 0, flags: VIRTIO_I2C_FLAGS_M_RD }));
    s.mem.fill(DATA + 0x1_0000, 0x1_0000, 0xee);
    s.mem.write(DATA + 0x3_0000, Uint8Array.of(0xee));
    s.post(0, { readable: [{ addr: DATA + 0x9000, len: 8 }], writable: [{ addr: DATA + 0x1_0000, len: 0x1_0000 }, { addr: DATA + 0x3_0000, len: 1 }] });
    expect((await s.used(0))[0]!.len).toBe(1);
    expect(s.mem.read(DATA + 0x3_0000, 1)[0]).toBe(1);
    expect(s.mem.read(DATA + 0x1_0000, 16).every((b) => b === 0xee)).toBe(true);
    // the device still works
    const [ok] = await transfer(s, [{ addr: 0x50, read: 1 }]);
    expect(ok!.status).toBe(0);
  });
});

describe("adapter list and host adapters", () => {
  it("parses rust-vmm's syntax and the sim extension", () => {
    expect(parseDeviceList("1:32:0x50,2:81")).toEqual([
      { kind: "host", bus: 1, addresses: [32, 0x50] },
      { kind: "host", bus: 2, addresses: [81] },
    ]);
    expect(parseDeviceList("sim:rtc@0x20,eeprom@0x50")).toEqual([{ kind: "sim", devices: [{ type: "rtc", addr: 0x20 }, { type: "eeprom", addr: 0x50 }] }]);
    expect(parseDeviceList("sim:ds1338@32:24c02@80,3:0x10")).toHaveLength(2);
    expect(() => parseDeviceList("1:32,2:32")).toThrow(/appears twice/);
    expect(() => parseDeviceList("1:0x80")).toThrow(/7-bit/);
    expect(() => parseDeviceList("sim:flux@0x10")).toThrow(/unknown simulated device/);
    expect(() => parseDeviceList("eeprom@0x50")).toThrow(/must follow a sim/);
    expect(() => parseDeviceList("1")).toThrow(/<bus>:<addr>/);
  });

  it("offers INFLIGHT_SHMFD unless --no-inflight", () => {
    const bit = 1n << 12n; // VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD
    expect(parse(["-s", "/tmp/x", "-l", "sim:rtc@0x20"]).inflight).toBe(true);
    const off = parse(["-s", "/tmp/x", "-l", "sim:rtc@0x20", "--no-inflight"]);
    expect(off.inflight).toBe(false);
    expect(offeredProtocolFeatures(new I2cDevice([]), undefined) & bit).toBe(bit);
    expect(offeredProtocolFeatures(new I2cDevice([], { inflight: off.inflight }), undefined) & bit).toBe(0n);
  });

  it("a missing /dev/i2c-N is an AdapterMissing error naming the node, and nothing stays open", () => {
    let bus = 250;
    while (existsSync(`/dev/i2c-${bus}`)) bus++;
    let err: unknown;
    try {
      openAdapters(parseDeviceList(`sim:rtc@0x20,${bus}:0x50`));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(I2cError);
    expect((err as I2cError).kind).toBe("AdapterMissing");
    expect((err as I2cError).message).toContain(`/dev/i2c-${bus}: cannot open: ENOENT`);
  });

  it("a node that is not an i2c-dev adapter (I2C_FUNCS fails) is refused", () => {
    const ops = { open: () => 99, ioctl: () => { throw Object.assign(new Error("ENOTTY"), { code: "ENOTTY" }); }, close: () => {} };
    expect(() => openAdapters([{ kind: "host", bus: 0, addresses: [1] }], ops)).toThrow(expect.objectContaining({ kind: "AdapterMissing" }));
  });
});

describe("the built daemon", () => {
  const main = join(import.meta.dirname, "../dist/main.js");
  it.skipIf(!existsSync(main))("--help, a bad -l, and serving -l sim:rtc@0x20,eeprom@0x50 (needs pnpm build)", async () => {
    expect(execFileSync(process.execPath, [main, "--help"]).toString()).toMatch(/sim:rtc@0x20,eeprom@0x50/);
    let failed = false;
    try {
      execFileSync(process.execPath, [main, "-s", join(dir, "x"), "-l", "sim:flux@1"], { stdio: "pipe" });
    } catch (e) {
      failed = true;
      expect((e as { status: number }).status).toBe(2);
      expect(String((e as { stderr: Buffer }).stderr)).toMatch(/unknown simulated device "flux"/);
    }
    expect(failed).toBe(true);
    const base = join(dir, "i2c.sock");
    const child = spawn(process.execPath, [main, "-s", base, "-l", "sim:rtc@0x20,eeprom@0x50"], { stdio: ["ignore", "ignore", "pipe"] });
    try {
      const s = await session(`${base}0`, [16]);
      try {
        const res = await transfer(s, [{ addr: 0x50, write: [0, 7] }, { addr: 0x50, write: [0], failNext: true }, { addr: 0x50, read: 1 }]);
        expect(res[2]).toMatchObject({ status: 0, data: [7] });
      } finally {
        s.close();
      }
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  }, 60_000);
});

describe("a malformed front-end message", () => {
  it("closes that connection cleanly (its fds closed) and the daemon serves the next front-end", async () => {
    const path = serve([[0x50, new At24c02Eeprom()]]);
    const hostile: [string, Uint8Array, boolean][] = [
      // SET_MEM_TABLE announcing one region in a 4-byte body, with an fd
      ["truncated SET_MEM_TABLE", Uint8Array.of(...encodeHeader({ request: FrontendReq.SET_MEM_TABLE, flags: 1, size: 4 }), 1, 0, 0, 0), true],
      // a request id no spec defines
      ["unknown request 999", encodeHeader({ request: 999, flags: 1, size: 0 }), false],
      // GET_INFLIGHT_FD before INFLIGHT_SHMFD was negotiated
      ["unnegotiated GET_INFLIGHT_FD", encodeMessage({ request: FrontendReq.GET_INFLIGHT_FD, flags: 1, payload: { kind: "inflight", mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 16 } }), false],
    ];
    for (const [what, bytes, withFd] of hostile) {
      const fe = new TestFrontend(UnixStream.connect(path));
      const fd = memfdCreate("junk");
      try {
        fe.conn.sendRaw(bytes, withFd ? [fd] : []);
      } finally {
        closeFd(fd);
      }
      expect((await fe.whenClosed())?.kind, what).toBe("Disconnected");
      fe.close();
    }
    const s = await open(path);
    expect((await transfer(s, [{ addr: 0x50, read: 1 }]))[0]!.status).toBe(0);
  });
});
