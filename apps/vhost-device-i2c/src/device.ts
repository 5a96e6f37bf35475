// virtio-i2c (virtio 1.2 section 5.18, "I2C Adapter Device"): one request queue; each chain is
//   struct virtio_i2c_out_hdr (device-readable, 8 bytes) | buf (readable for writes, writable for reads;
//   absent for zero-length requests) | struct virtio_i2c_in_hdr (device-writable, 1 byte: status).
// Requests chained with VIRTIO_I2C_FLAGS_FAIL_NEXT form one group (the Linux driver sends a whole
// i2c_transfer() that way): the group runs as one adapter transfer, so a register write and the read after
// it keep their repeated START, and if it fails every request of the group reports VIRTIO_I2C_MSG_ERR.
// Malformed requests (bad lengths, unknown flags, 10-bit or unserved addresses) get VIRTIO_I2C_MSG_ERR when
// the chain has a status byte to put it in, and are returned with length 0 otherwise.
import type { DescriptorChain } from "@xen-vhost/virtio-queue";
import { BufferCursor, readBuffers, writeBuffers, type DeviceVring, type GuestBuffer, type VhostUserDevice } from "@xen-vhost/vhost-user-backend";
import type { Logger } from "@xen-vhost/vmm-sys-util";
import { noopLogger } from "@xen-vhost/vmm-sys-util";
import {
  VIRTIO_I2C_FLAGS_FAIL_NEXT, VIRTIO_I2C_FLAGS_M_RD, VIRTIO_I2C_F_ZERO_LENGTH_REQUEST, VIRTIO_I2C_MSG_ERR, VIRTIO_I2C_MSG_OK, VirtioI2cOutHdr,
} from "./abi.js";
import type { I2cAdapter, I2cMessage } from "./adapter.js";
import { I2cError } from "./error.js";

// linux/virtio_config.h, virtio_ring.h
const VIRTIO_F_VERSION_1 = 1n << 32n;
const VIRTIO_F_NOTIFY_ON_EMPTY = 1n << 24n;
const VIRTIO_RING_F_INDIRECT_DESC = 1n << 28n;
const VIRTIO_RING_F_EVENT_IDX = 1n << 29n;

/** Largest buffer of one request: i2c_msg.len is a u16. */
export const MAX_REQUEST_LEN = 0xffff;

interface Parsed {
  chain: DescriptorChain;
  /** The status byte's buffer, if the chain has one. */
  status: GuestBuffer | undefined;
  /** The read buffers (for reads). */
  readInto: GuestBuffer[];
  msg: I2cMessage | undefined;
  failNext: boolean;
  error?: string;
}

/** The last byte of some buffers (where in_hdr goes), if they have any. */
function lastByte(bufs: readonly GuestBuffer[]): GuestBuffer | undefined {
  for (let i = bufs.length - 1; i >= 0; i--) {
    const b = bufs[i]!;
    if (b.len > 0) return { addr: b.addr + BigInt(b.len - 1), len: 1 };
  }
  return undefined;
}

/** A virtio-i2c device over one or more adapters (client addresses are unique across them). */
export class I2cDevice implements VhostUserDevice {
  readonly name = "virtio-i2c";
  readonly numQueues = 1;
  readonly maxQueueSize = 1024;
  readonly features = VIRTIO_F_VERSION_1 | VIRTIO_F_NOTIFY_ON_EMPTY | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX |
    (1n << BigInt(VIRTIO_I2C_F_ZERO_LENGTH_REQUEST));
  /**
   * INFLIGHT_SHMFD. Every request is answered within the handler run that popped it (transfers are
   * synchronous), so a dropped connection never leaves one in flight and completed transfers are never
   * repeated (the ring continues from the used idx). Only a daemon killed inside a transfer leaves one,
   * which the next daemon runs again: at-least-once for that transfer, where the alternative is a guest
   * driver waiting forever for its completion. Real hardware whose registers must not see a transfer twice
   * (FIFOs, command registers) can turn it off with --no-inflight.
   */
  readonly inflightTracking: boolean;
  readonly #byAddr = new Map<number, I2cAdapter>();
  readonly #log: Logger;
  #zeroLength = true;
  /** Requests answered OK / ERR, for tests and logs. */
  readonly stats = { ok: 0, err: 0 };

  constructor(adapters: readonly I2cAdapter[], options: { logger?: Logger; inflight?: boolean } = {}) {
    this.#log = options.logger ?? noopLogger;
    this.inflightTracking = options.inflight ?? true;
    for (const a of adapters)
      for (const addr of a.addresses) {
        if (this.#byAddr.has(addr)) throw new I2cError("InvalidSpec", `address 0x${addr.toString(16)} is on two adapters`);
        this.#byAddr.set(addr, a);
      }
  }

  setFeatures(features: bigint): void {
    this.#zeroLength = (features & (1n << BigInt(VIRTIO_I2C_F_ZERO_LENGTH_REQUEST))) !== 0n;
  }

  handleQueue(vring: DeviceVring): void {
    let group: Parsed[] = [];
    for (let c = vring.pop(); c; c = vring.pop()) {
      const p = this.#parse(vring, c);
      group.push(p);
      if (!p.failNext || p.error) {
        this.#runGroup(vring, group);
        group = [];
      }
    }
    if (group.length > 0) this.#runGroup(vring, group);
  }

  #parse(vring: DeviceVring, chain: DescriptorChain): Parsed {
    const readable = new BufferCursor(chain.readable);
    const writable = new BufferCursor(chain.writable);
    const wlen = writable.remaining;
    const status = lastByte(chain.writable);
    const bad = (error: string): Parsed => ({ chain, status, readInto: [], msg: undefined, failNext: false, error });
    const hdrBufs = readable.take(VirtioI2cOutHdr.size);
    if (!hdrBufs) return bad(`out_hdr needs ${VirtioI2cOutHdr.size} readable bytes, chain has ${readable.remaining}`);
    if (!status) return bad("no device-writable in_hdr");
    const hdr = VirtioI2cOutHdr.decode(readBuffers(vring.memory, hdrBufs));
    const failNext = (hdr.flags & VIRTIO_I2C_FLAGS_FAIL_NEXT) !== 0;
    const isRead = (hdr.flags & VIRTIO_I2C_FLAGS_M_RD) !== 0;
    if (hdr.flags & ~(VIRTIO_I2C_FLAGS_FAIL_NEXT | VIRTIO_I2C_FLAGS_M_RD)) return { ...bad(`unknown flags 0x${hdr.flags.toString(16)}`), failNext };
    // Linux puts the 7-bit address in bits 1..7 (virtio_i2c.c: `addr << 1`).
    const addr = hdr.addr >> 1;
    if ((hdr.addr & 1) !== 0 || addr > 0x7f) return { ...bad(`address field 0x${hdr.addr.toString(16)} is not a 7-bit address << 1`), failNext };
    const bufLen = isRead ? wlen - 1 : readable.remaining;
    if (isRead && readable.remaining !== 0) return { ...bad("a read request with device-readable data after out_hdr"), failNext };
    if (!isRead && wlen !== 1) return { ...bad(`a write request with ${wlen - 1} device-writable bytes besides in_hdr`), failNext };
    if (bufLen > MAX_REQUEST_LEN) return { ...bad(`buffer of ${bufLen} bytes exceeds ${MAX_REQUEST_LEN}`), failNext };
    if (bufLen === 0 && !this.#zeroLength) return { ...bad("zero-length request without VIRTIO_I2C_F_ZERO_LENGTH_REQUEST"), failNext };
    const data = isRead ? new Uint8Array(bufLen) : readBuffers(vring.memory, readable.rest());
    const readInto = isRead ? (writable.take(bufLen) ?? []) : [];
    return { chain, status, readInto, msg: { addr, read: isRead, data }, failNext };
  }

  #runGroup(vring: DeviceVring, group: Parsed[]): void {
    let error = group.find((p) => p.error)?.error;
    if (!error) {
      try {
        // One transfer per run of requests on the same adapter; a failure fails the rest of the group.
        let i = 0;
        while (i < group.length) {
          const adapter = this.#byAddr.get(group[i]!.msg!.addr);
          if (!adapter) throw new I2cError("NoDevice", `no client at 0x${group[i]!.msg!.addr.toString(16)}`);
          let j = i + 1;
          while (j < group.length && this.#byAddr.get(group[j]!.msg!.addr) === adapter) j++;
          adapter.transfer(group.slice(i, j).map((p) => p.msg!));
          i = j;
        }
      } catch (err) {
        if (!(err instanceof I2cError)) throw err;
        error = err.message;
      }
    }
    if (error) this.#log.debug("i2c request failed", { error, requests: group.length });
    for (const p of group) {
      if (!p.status) {
        vring.addUsed(p.chain.head, 0);
        this.stats.err++;
        continue;
      }
      let written = 0;
      if (!error && p.msg?.read) written = writeBuffers(vring.memory, p.readInto, p.msg.data);
      writeBuffers(vring.memory, [p.status], Uint8Array.of(error ? VIRTIO_I2C_MSG_ERR : VIRTIO_I2C_MSG_OK));
      if (error) this.stats.err++;
      else this.stats.ok++;
      vring.addUsed(p.chain.head, written + 1);
    }
  }
}
