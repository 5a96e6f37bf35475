// Golden tests: every message of both directions encoded and decoded against bytes written out by hand
// from vhost-user.rst (little-endian; header = request, flags, size). Flags: 0x01 request, 0x09 request
// with NEED_REPLY, 0x05 reply.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EventFd, dup, close } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import {
  decodeBuffer, encodeMessage, ackExpectation, type Expectation, type Payload, type CodecOptions,
} from "./codec.js";
import { VhostUserError } from "./error.js";
import { backendRequests, frontendRequests, messageInfo, type Channel, type FdRule, type PayloadKind } from "./message.js";

function x(hex: string): Uint8Array {
  const clean = hex.replace(/[\s|]/g, "");
  if (clean.length % 2 !== 0) throw new Error(`odd hex ${hex}`);
  return Uint8Array.from(clean.match(/../g) ?? [], (b) => parseInt(b, 16));
}

interface Golden {
  name: string;
  channel: Channel;
  /** Reply to this request id (else a request). */
  replyTo?: { payloads: PayloadKind[]; fds: FdRule };
  request: number;
  flags: number;
  payload: Payload;
  fds: number;
  bytes: string;
  codec?: Partial<CodecOptions>;
  /** Encoding writes these bytes instead (quirk normalisation). */
  encodesAs?: string;
}

const uuid = x("000102030405060708090a0b0c0d0e0f");
const U64 = (value: bigint): Payload => ({ kind: "u64", value });
const ONE: FdRule = { kind: "exact", n: 1 };
const NONE: FdRule = { kind: "none" };
const UPTO1: FdRule = { kind: "up-to", max: 1 };
const shmemTail = "00".repeat(8 * 255);

const goldens: Golden[] = [
  // ---- front-end requests (vhost-user.rst "Front-end message types")
  { name: "GET_FEATURES", channel: "frontend", request: 1, flags: 1, payload: { kind: "none" }, fds: 0, bytes: "01000000 01000000 00000000" },
  { name: "GET_FEATURES reply", channel: "frontend", replyTo: { payloads: ["u64"], fds: NONE }, request: 1, flags: 5, payload: U64(0x175007e46n), fds: 0,
    bytes: "01000000 05000000 08000000 467e007501000000" },
  { name: "SET_FEATURES", channel: "frontend", request: 2, flags: 1, payload: U64(0x140000000n), fds: 0, bytes: "02000000 01000000 08000000 0000004001000000" },
  { name: "SET_OWNER", channel: "frontend", request: 3, flags: 1, payload: { kind: "none" }, fds: 0, bytes: "03000000 01000000 00000000" },
  { name: "RESET_OWNER", channel: "frontend", request: 4, flags: 1, payload: { kind: "none" }, fds: 0, bytes: "04000000 01000000 00000000" },
  { name: "SET_MEM_TABLE (32-byte region)", channel: "frontend", request: 5, flags: 9, fds: 1,
    payload: { kind: "memory", regions: [{ guestPhysAddr: 0n, memorySize: 0x4000000n, userAddr: 0x7f0000000000n, mmapOffset: 0n }] },
    bytes: "05000000 09000000 28000000 | 01000000 00000000 | 0000000000000000 0000000400000000 00000000007f0000 0000000000000000" },
  { name: "SET_MEM_TABLE (40-byte XEN_MMAP regions, grant + no-advance-map as rust-vmm 0x8)", channel: "frontend", request: 5, flags: 1, fds: 2,
    codec: { xenMmap: true },
    payload: { kind: "memory", regions: [
      { guestPhysAddr: 0x40000000n, memorySize: 0x1000n, userAddr: 0x100000000n, mmapOffset: 0n, xen: { flags: 0x1, domid: 5 } },
      { guestPhysAddr: 0x8000000000000000n, memorySize: 0x100000n, userAddr: 0x200000000n, mmapOffset: 0n, xen: { flags: 0x102, domid: 5 } },
    ] },
    bytes: "05000000 01000000 58000000 | 02000000 00000000 |" +
      " 0000004000000000 0010000000000000 0000000001000000 0000000000000000 01000000 05000000 |" +
      " 0000000000000080 0000100000000000 0000000002000000 0000000000000000 0a000000 05000000" },
  { name: "SET_MEM_TABLE (XEN_MMAP, spec no-advance-map 0x100)", channel: "frontend", request: 5, flags: 1, fds: 1,
    codec: { xenMmap: true, quirks: { shmemBit: 22, xenNoAdvanceMap: "spec", configFlags: "spec" } },
    payload: { kind: "memory", regions: [
      { guestPhysAddr: 0x8000000000000000n, memorySize: 0x1000n, userAddr: 0x300000000n, mmapOffset: 0n, xen: { flags: 0x102, domid: 7 } },
    ] },
    bytes: "05000000 01000000 30000000 | 01000000 00000000 | 0000000000000080 0010000000000000 0000000003000000 0000000000000000 02010000 07000000" },
  { name: "SET_LOG_BASE", channel: "frontend", request: 6, flags: 1, fds: 1, payload: { kind: "log", mmapSize: 0x1000n, mmapOffset: 0n },
    bytes: "06000000 01000000 10000000 0010000000000000 0000000000000000" },
  { name: "SET_LOG_BASE reply", channel: "frontend", replyTo: { payloads: ["u64"], fds: NONE }, request: 6, flags: 5, fds: 0, payload: U64(0n),
    bytes: "06000000 05000000 08000000 0000000000000000" },
  { name: "SET_LOG_FD", channel: "frontend", request: 7, flags: 1, fds: 1, payload: { kind: "none" }, bytes: "07000000 01000000 00000000" },
  { name: "SET_VRING_NUM", channel: "frontend", request: 8, flags: 1, fds: 0, payload: { kind: "vring-state", index: 0, num: 256 },
    bytes: "08000000 01000000 08000000 00000000 00010000" },
  { name: "SET_VRING_ADDR", channel: "frontend", request: 9, flags: 1, fds: 0,
    payload: { kind: "vring-addr", index: 1, flags: 0, desc: 0x7f0000001000n, used: 0x7f0000002000n, avail: 0x7f0000001800n, log: 0n },
    bytes: "09000000 01000000 28000000 01000000 00000000 00100000007f0000 00200000007f0000 00180000007f0000 0000000000000000" },
  { name: "SET_VRING_BASE", channel: "frontend", request: 10, flags: 1, fds: 0, payload: { kind: "vring-state", index: 0, num: 0 },
    bytes: "0a000000 01000000 08000000 00000000 00000000" },
  { name: "GET_VRING_BASE", channel: "frontend", request: 11, flags: 1, fds: 0, payload: { kind: "vring-state", index: 1, num: 0 },
    bytes: "0b000000 01000000 08000000 01000000 00000000" },
  { name: "GET_VRING_BASE reply", channel: "frontend", replyTo: { payloads: ["vring-state"], fds: NONE }, request: 11, flags: 5, fds: 0,
    payload: { kind: "vring-state", index: 1, num: 3 }, bytes: "0b000000 05000000 08000000 01000000 03000000" },
  { name: "SET_VRING_KICK", channel: "frontend", request: 12, flags: 1, fds: 1, payload: U64(0n), bytes: "0c000000 01000000 08000000 0000000000000000" },
  { name: "SET_VRING_KICK (no fd)", channel: "frontend", request: 12, flags: 1, fds: 0, payload: U64(0x101n), bytes: "0c000000 01000000 08000000 0101000000000000" },
  { name: "SET_VRING_CALL", channel: "frontend", request: 13, flags: 1, fds: 1, payload: U64(1n), bytes: "0d000000 01000000 08000000 0100000000000000" },
  { name: "SET_VRING_ERR (no fd)", channel: "frontend", request: 14, flags: 1, fds: 0, payload: U64(0x100n), bytes: "0e000000 01000000 08000000 0001000000000000" },
  { name: "GET_PROTOCOL_FEATURES", channel: "frontend", request: 15, flags: 1, fds: 0, payload: { kind: "none" }, bytes: "0f000000 01000000 00000000" },
  { name: "GET_PROTOCOL_FEATURES reply", channel: "frontend", replyTo: { payloads: ["u64"], fds: NONE }, request: 15, flags: 5, fds: 0,
    payload: U64(0x8f2bn), bytes: "0f000000 05000000 08000000 2b8f000000000000" },
  { name: "SET_PROTOCOL_FEATURES", channel: "frontend", request: 16, flags: 1, fds: 0, payload: U64(0x20209n), bytes: "10000000 01000000 08000000 0902020000000000" },
  { name: "GET_QUEUE_NUM", channel: "frontend", request: 17, flags: 1, fds: 0, payload: { kind: "none" }, bytes: "11000000 01000000 00000000" },
  { name: "GET_QUEUE_NUM reply", channel: "frontend", replyTo: { payloads: ["u64"], fds: NONE }, request: 17, flags: 5, fds: 0, payload: U64(128n),
    bytes: "11000000 05000000 08000000 8000000000000000" },
  { name: "SET_VRING_ENABLE with NEED_REPLY", channel: "frontend", request: 18, flags: 9, fds: 0, payload: { kind: "vring-state", index: 0, num: 1 },
    bytes: "12000000 09000000 08000000 00000000 01000000" },
  { name: "REPLY_ACK to SET_VRING_ENABLE", channel: "frontend", replyTo: { payloads: ["u64"], fds: NONE }, request: 18, flags: 5, fds: 0, payload: U64(0n),
    bytes: "12000000 05000000 08000000 0000000000000000" },
  { name: "SEND_RARP", channel: "frontend", request: 19, flags: 1, fds: 0, payload: U64(0x563412005452n), bytes: "13000000 01000000 08000000 5254001234560000" },
  { name: "NET_SET_MTU", channel: "frontend", request: 20, flags: 1, fds: 0, payload: U64(1500n), bytes: "14000000 01000000 08000000 dc05000000000000" },
  { name: "SET_BACKEND_REQ_FD", channel: "frontend", request: 21, flags: 9, fds: 1, payload: { kind: "none" }, bytes: "15000000 09000000 00000000" },
  { name: "IOTLB_MSG", channel: "frontend", request: 22, flags: 1, fds: 0,
    payload: { kind: "iotlb", iova: 0x1000n, size: 0x2000n, uaddr: 0x7f0000000000n, perm: 3, type: 2 },
    bytes: "16000000 01000000 20000000 0010000000000000 0020000000000000 00000000007f0000 03 02 000000000000" },
  { name: "SET_VRING_ENDIAN", channel: "frontend", request: 23, flags: 1, fds: 0, payload: { kind: "vring-state", index: 0, num: 1 },
    bytes: "17000000 01000000 08000000 00000000 01000000" },
  { name: "GET_CONFIG", channel: "frontend", request: 24, flags: 1, fds: 0, payload: { kind: "config", offset: 0, flags: 0, data: new Uint8Array(8) },
    bytes: "18000000 01000000 14000000 00000000 08000000 00000000 0000000000000000" },
  { name: "GET_CONFIG reply (capacity 0x20000 sectors)", channel: "frontend", replyTo: { payloads: ["config", "none"], fds: NONE }, request: 24, flags: 5, fds: 0,
    payload: { kind: "config", offset: 0, flags: 0, data: x("0000020000000000") },
    bytes: "18000000 05000000 14000000 00000000 08000000 00000000 0000020000000000" },
  { name: "GET_CONFIG failure reply (size 0)", channel: "frontend", replyTo: { payloads: ["config", "none"], fds: NONE }, request: 24, flags: 5, fds: 0,
    payload: { kind: "none" }, bytes: "18000000 05000000 00000000" },
  { name: "SET_CONFIG", channel: "frontend", request: 25, flags: 1, fds: 0, payload: { kind: "config", offset: 0x14, flags: 0, data: x("01") },
    bytes: "19000000 01000000 0d000000 14000000 01000000 00000000 01" },
  { name: "CREATE_CRYPTO_SESSION", channel: "frontend", request: 26, flags: 1, fds: 0, payload: { kind: "crypto-session", data: x("ffffffffffffffff0102030405060708") },
    bytes: "1a000000 01000000 10000000 ffffffffffffffff 0102030405060708" },
  { name: "CREATE_CRYPTO_SESSION reply", channel: "frontend", replyTo: { payloads: ["crypto-session"], fds: NONE }, request: 26, flags: 5, fds: 0,
    payload: { kind: "crypto-session", data: x("0700000000000000") }, bytes: "1a000000 05000000 08000000 0700000000000000" },
  { name: "CLOSE_CRYPTO_SESSION", channel: "frontend", request: 27, flags: 1, fds: 0, payload: U64(7n), bytes: "1b000000 01000000 08000000 0700000000000000" },
  { name: "POSTCOPY_ADVISE", channel: "frontend", request: 28, flags: 1, fds: 0, payload: { kind: "none" }, bytes: "1c000000 01000000 00000000" },
  { name: "POSTCOPY_ADVISE reply (userfaultfd)", channel: "frontend", replyTo: { payloads: ["none", "u64"], fds: ONE }, request: 28, flags: 5, fds: 1,
    payload: { kind: "none" }, bytes: "1c000000 05000000 00000000" },
  { name: "POSTCOPY_LISTEN", channel: "frontend", request: 29, flags: 1, fds: 0, payload: { kind: "none" }, bytes: "1d000000 01000000 00000000" },
  { name: "POSTCOPY_END", channel: "frontend", request: 30, flags: 1, fds: 0, payload: { kind: "none" }, bytes: "1e000000 01000000 00000000" },
  { name: "POSTCOPY_END reply", channel: "frontend", replyTo: { payloads: ["u64"], fds: NONE }, request: 30, flags: 5, fds: 0, payload: U64(0n),
    bytes: "1e000000 05000000 08000000 0000000000000000" },
  { name: "GET_INFLIGHT_FD", channel: "frontend", request: 31, flags: 1, fds: 0,
    payload: { kind: "inflight", mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 128 },
    bytes: "1f000000 01000000 18000000 0000000000000000 0000000000000000 0100 8000 00000000" },
  { name: "GET_INFLIGHT_FD reply", channel: "frontend", replyTo: { payloads: ["inflight"], fds: ONE }, request: 31, flags: 5, fds: 1,
    payload: { kind: "inflight", mmapSize: 0x2000n, mmapOffset: 0n, numQueues: 1, queueSize: 128 },
    bytes: "1f000000 05000000 18000000 0020000000000000 0000000000000000 0100 8000 00000000" },
  { name: "SET_INFLIGHT_FD", channel: "frontend", request: 32, flags: 1, fds: 1,
    payload: { kind: "inflight", mmapSize: 0x2000n, mmapOffset: 0n, numQueues: 1, queueSize: 128 },
    bytes: "20000000 01000000 18000000 0020000000000000 0000000000000000 0100 8000 00000000" },
  { name: "GPU_SET_SOCKET", channel: "frontend", request: 33, flags: 1, fds: 1, payload: { kind: "none" }, bytes: "21000000 01000000 00000000" },
  { name: "RESET_DEVICE", channel: "frontend", request: 34, flags: 1, fds: 0, payload: { kind: "none" }, bytes: "22000000 01000000 00000000" },
  { name: "VRING_KICK", channel: "frontend", request: 35, flags: 1, fds: 0, payload: { kind: "vring-state", index: 2, num: 0 },
    bytes: "23000000 01000000 08000000 02000000 00000000" },
  { name: "GET_MAX_MEM_SLOTS", channel: "frontend", request: 36, flags: 1, fds: 0, payload: { kind: "none" }, bytes: "24000000 01000000 00000000" },
  { name: "GET_MAX_MEM_SLOTS reply", channel: "frontend", replyTo: { payloads: ["u64"], fds: NONE }, request: 36, flags: 5, fds: 0, payload: U64(32n),
    bytes: "24000000 05000000 08000000 2000000000000000" },
  { name: "ADD_MEM_REG", channel: "frontend", request: 37, flags: 1, fds: 1,
    payload: { kind: "single-region", region: { guestPhysAddr: 0x100000n, memorySize: 0x100000n, userAddr: 0x7e0000000000n, mmapOffset: 0n } },
    bytes: "25000000 01000000 28000000 0000000000000000 | 0000100000000000 0000100000000000 00000000007e0000 0000000000000000" },
  { name: "ADD_MEM_REG (XEN_MMAP foreign)", channel: "frontend", request: 37, flags: 1, fds: 1, codec: { xenMmap: true },
    payload: { kind: "single-region", region: { guestPhysAddr: 0x40000000n, memorySize: 0x10000000n, userAddr: 0x40000000n, mmapOffset: 0n, xen: { flags: 1, domid: 1 } } },
    bytes: "25000000 01000000 30000000 0000000000000000 | 0000004000000000 0000001000000000 0000004000000000 0000000000000000 01000000 01000000" },
  { name: "REM_MEM_REG", channel: "frontend", request: 38, flags: 1, fds: 0,
    payload: { kind: "single-region", region: { guestPhysAddr: 0x100000n, memorySize: 0x100000n, userAddr: 0x7e0000000000n, mmapOffset: 0n } },
    bytes: "26000000 01000000 28000000 0000000000000000 | 0000100000000000 0000100000000000 00000000007e0000 0000000000000000" },
  { name: "SET_STATUS", channel: "frontend", request: 39, flags: 1, fds: 0, payload: U64(0x0fn), bytes: "27000000 01000000 08000000 0f00000000000000" },
  { name: "GET_STATUS", channel: "frontend", request: 40, flags: 1, fds: 0, payload: { kind: "none" }, bytes: "28000000 01000000 00000000" },
  { name: "GET_STATUS reply", channel: "frontend", replyTo: { payloads: ["u64"], fds: NONE }, request: 40, flags: 5, fds: 0, payload: U64(0x0fn),
    bytes: "28000000 05000000 08000000 0f00000000000000" },
  { name: "GET_SHARED_OBJECT", channel: "frontend", request: 41, flags: 1, fds: 0, payload: { kind: "shared-object", uuid },
    bytes: "29000000 01000000 10000000 000102030405060708090a0b0c0d0e0f" },
  { name: "GET_SHARED_OBJECT reply (dma-buf fd)", channel: "frontend", replyTo: { payloads: ["none", "u64", "shared-object"], fds: UPTO1 }, request: 41, flags: 5, fds: 1,
    payload: U64(0n), bytes: "29000000 05000000 08000000 0000000000000000" },
  { name: "SET_DEVICE_STATE_FD", channel: "frontend", request: 42, flags: 1, fds: 1, payload: { kind: "device-state", direction: 0, phase: 0 },
    bytes: "2a000000 01000000 08000000 00000000 00000000" },
  { name: "SET_DEVICE_STATE_FD reply (no fd)", channel: "frontend", replyTo: { payloads: ["u64"], fds: UPTO1 }, request: 42, flags: 5, fds: 0, payload: U64(0x100n),
    bytes: "2a000000 05000000 08000000 0001000000000000" },
  { name: "CHECK_DEVICE_STATE", channel: "frontend", request: 43, flags: 1, fds: 0, payload: { kind: "none" }, bytes: "2b000000 01000000 00000000" },
  { name: "CHECK_DEVICE_STATE reply", channel: "frontend", replyTo: { payloads: ["u64"], fds: NONE }, request: 43, flags: 5, fds: 0, payload: U64(0n),
    bytes: "2b000000 05000000 08000000 0000000000000000" },
  { name: "GET_SHMEM_CONFIG", channel: "frontend", request: 44, flags: 1, fds: 0, payload: { kind: "none" }, bytes: "2c000000 01000000 00000000" },
  { name: "GET_SHMEM_CONFIG reply", channel: "frontend", replyTo: { payloads: ["shmem-config"], fds: NONE }, request: 44, flags: 5, fds: 0,
    payload: { kind: "shmem-config", memorySizes: [0x100000000n] },
    bytes: "2c000000 05000000 08080000 01000000 00000000 0000000001000000" + shmemTail },
  { name: "GET_VRING_BASE_SKIP_DRAIN", channel: "frontend", request: 45, flags: 1, fds: 0, payload: { kind: "vring-state", index: 0, num: 0 },
    bytes: "2d000000 01000000 08000000 00000000 00000000" },
  { name: "GET_VRING_BASE_SKIP_DRAIN reply", channel: "frontend", replyTo: { payloads: ["vring-state"], fds: NONE }, request: 45, flags: 5, fds: 0,
    payload: { kind: "vring-state", index: 0, num: 5 }, bytes: "2d000000 05000000 08000000 00000000 05000000" },

  // ---- back-end requests (vhost-user.rst "Back-end message types")
  { name: "BACKEND IOTLB_MSG (miss)", channel: "backend", request: 1, flags: 9, fds: 0,
    payload: { kind: "iotlb", iova: 0x1000n, size: 0n, uaddr: 0n, perm: 1, type: 1 },
    bytes: "01000000 09000000 20000000 0010000000000000 0000000000000000 0000000000000000 01 01 000000000000" },
  { name: "BACKEND CONFIG_CHANGE_MSG", channel: "backend", request: 2, flags: 9, fds: 0, payload: { kind: "none" }, bytes: "02000000 09000000 00000000" },
  { name: "BACKEND CONFIG_CHANGE_MSG ack", channel: "backend", replyTo: { payloads: ["u64"], fds: NONE }, request: 2, flags: 5, fds: 0, payload: U64(0n),
    bytes: "02000000 05000000 08000000 0000000000000000" },
  { name: "BACKEND VRING_HOST_NOTIFIER_MSG", channel: "backend", request: 3, flags: 1, fds: 1, payload: { kind: "vring-area", u64: 0n, size: 0x1000n, offset: 0n },
    bytes: "03000000 01000000 18000000 0000000000000000 0010000000000000 0000000000000000" },
  { name: "BACKEND VRING_HOST_NOTIFIER_MSG (remove, no fd)", channel: "backend", request: 3, flags: 1, fds: 0,
    payload: { kind: "vring-area", u64: 0x101n, size: 0n, offset: 0n },
    bytes: "03000000 01000000 18000000 0101000000000000 0000000000000000 0000000000000000" },
  { name: "BACKEND VRING_CALL", channel: "backend", request: 4, flags: 1, fds: 0, payload: { kind: "vring-state", index: 0, num: 0 },
    bytes: "04000000 01000000 08000000 00000000 00000000" },
  { name: "BACKEND VRING_ERR", channel: "backend", request: 5, flags: 1, fds: 0, payload: { kind: "vring-state", index: 1, num: 0 },
    bytes: "05000000 01000000 08000000 01000000 00000000" },
  { name: "BACKEND SHARED_OBJECT_ADD", channel: "backend", request: 6, flags: 1, fds: 0, payload: { kind: "shared-object", uuid },
    bytes: "06000000 01000000 10000000 000102030405060708090a0b0c0d0e0f" },
  { name: "BACKEND SHARED_OBJECT_REMOVE", channel: "backend", request: 7, flags: 1, fds: 0, payload: { kind: "shared-object", uuid },
    bytes: "07000000 01000000 10000000 000102030405060708090a0b0c0d0e0f" },
  { name: "BACKEND SHARED_OBJECT_LOOKUP", channel: "backend", request: 8, flags: 1, fds: 0, payload: { kind: "shared-object", uuid },
    bytes: "08000000 01000000 10000000 000102030405060708090a0b0c0d0e0f" },
  { name: "BACKEND SHARED_OBJECT_LOOKUP reply (fd)", channel: "backend", replyTo: { payloads: ["u64"], fds: UPTO1 }, request: 8, flags: 5, fds: 1, payload: U64(0n),
    bytes: "08000000 05000000 08000000 0000000000000000" },
  { name: "BACKEND SHMEM_MAP", channel: "backend", request: 9, flags: 9, fds: 1,
    payload: { kind: "shmem-map", shmid: 1, fdOffset: 0x1000n, shmOffset: 0x2000n, len: 0x3000n, flags: 1n },
    bytes: "09000000 09000000 28000000 01 00000000000000 0010000000000000 0020000000000000 0030000000000000 0100000000000000" },
  { name: "BACKEND SHMEM_UNMAP", channel: "backend", request: 10, flags: 1, fds: 0,
    payload: { kind: "shmem-map", shmid: 1, fdOffset: 0n, shmOffset: 0x2000n, len: 0x3000n, flags: 0n },
    bytes: "0a000000 01000000 28000000 01 00000000000000 0000000000000000 0020000000000000 0030000000000000 0000000000000000" },
];

let base: EventFd;
let leaks: ReturnType<typeof fdLeakCheck>;
beforeAll(() => {
  leaks = fdLeakCheck();
  base = new EventFd();
});
afterAll(() => {
  base.close();
  expect(leaks.check()).toEqual([]);
});

function fds(n: number): number[] {
  return Array.from({ length: n }, () => dup(base.fd));
}

function expectationOf(g: Golden): Expectation {
  return g.replyTo
    ? { type: "reply", channel: g.channel, request: g.request, payloads: g.replyTo.payloads, fds: g.replyTo.fds }
    : { type: "request", channel: g.channel };
}

describe("golden messages", () => {
  it.each(goldens.map((g) => [g.name, g] as const))("%s", (_name, g) => {
    const bytes = x(g.bytes);
    expect(encodeMessage(g, g.codec)).toEqual(g.encodesAs ? x(g.encodesAs) : bytes);
    const given = fds(g.fds);
    const msg = decodeBuffer(bytes, given, expectationOf(g), g.codec);
    expect(msg.request).toBe(g.request);
    expect(msg.flags).toBe(g.flags);
    expect(msg.payload).toEqual(g.payload);
    expect(msg.fds).toEqual(given);
    for (const fd of msg.fds) close(fd);
  });

  it("covers every request id of both tables", () => {
    const seen = (ch: Channel) => new Set(goldens.filter((g) => g.channel === ch && !g.replyTo).map((g) => g.request));
    expect([...seen("frontend")].sort((a, b) => a - b)).toEqual(frontendRequests.map((e) => e.id));
    expect([...seen("backend")].sort((a, b) => a - b)).toEqual(backendRequests.map((e) => e.id));
  });

  it("covers every always-replying request's reply", () => {
    const replied = new Set(goldens.filter((g) => g.channel === "frontend" && g.replyTo).map((g) => g.request));
    for (const e of frontendRequests) if (e.reply.when === "always") expect(replied, e.name).toContain(e.id);
  });

  it("decodes the spec's 0x100 and rust-vmm's 0x8 no-advance-map flag to the same value", () => {
    for (const wire of ["0a000000", "02010000"]) {
      const bytes = x(`05000000 01000000 30000000 01000000 00000000 0000000000000080 0010000000000000 0000000003000000 0000000000000000 ${wire} 07000000`);
      const msg = decodeBuffer(bytes, fds(1), { type: "request", channel: "frontend" }, { xenMmap: true });
      expect(msg.payload.kind === "memory" && msg.payload.regions[0]!.xen).toEqual({ flags: 0x102, domid: 7 });
      for (const fd of msg.fds) close(fd);
    }
  });
});

function decodeError(bytes: string, n: number, expectation: Expectation, codec?: Partial<CodecOptions>): VhostUserError {
  try {
    const msg = decodeBuffer(x(bytes), fds(n), expectation, codec);
    for (const fd of msg.fds) close(fd);
  } catch (err) {
    expect(err).toBeInstanceOf(VhostUserError);
    return err as VhostUserError;
  }
  throw new Error("decoded without error");
}

const REQ: Expectation = { type: "request", channel: "frontend" };

describe("strict decoding", () => {
  it.each([
    ["version 2", "01000000 02000000 00000000", 0, REQ, "InvalidMessage", /version 2/],
    ["reserved flag bit", "01000000 11000000 00000000", 0, REQ, "InvalidMessage", /reserved flag/],
    ["unknown request", "63000000 01000000 00000000", 0, REQ, "InvalidMessage", /unknown frontend request 99/],
    ["request id 0", "00000000 01000000 00000000", 0, REQ, "InvalidMessage", /request 0/],
    ["payload on GET_FEATURES", "01000000 01000000 08000000 0000000000000000", 0, REQ, "InvalidMessage", /GET_FEATURES.*0 bytes, got 8/],
    ["short SET_FEATURES", "02000000 01000000 04000000 00000000", 0, REQ, "InvalidMessage", /SET_FEATURES.*8 bytes, got 4/],
    ["oversized", "02000000 01000000 01100000", 0, REQ, "OversizedMsg", /4097 bytes exceeds/],
    ["truncated body", "02000000 01000000 08000000 0000", 0, REQ, "PartialMessage", /8 payload bytes, buffer holds 2/],
    ["REPLY flag on a request", "03000000 05000000 00000000", 0, REQ, "InvalidMessage", /REPLY flag set/],
    ["SET_MEM_TABLE without fds", "05000000 01000000 28000000 01000000 00000000" + "00".repeat(32), 0, REQ, "IncorrectFds", /0 fd\(s\), expected 1/],
    ["SET_MEM_TABLE with an extra fd", "05000000 01000000 28000000 01000000 00000000" + "00".repeat(32), 2, REQ, "IncorrectFds", /2 fd\(s\), expected 1/],
    ["SET_MEM_TABLE region count/size mismatch", "05000000 01000000 28000000 02000000 00000000" + "00".repeat(32), 2, REQ, "InvalidMessage", /72 \(2 regions of 32\)/],
    ["SET_MEM_TABLE with 0 regions", "05000000 01000000 08000000 00000000 00000000", 0, REQ, "InvalidMessage", /no regions/],
    ["SET_MEM_TABLE with 33 regions", "05000000 01000000 28000000 21000000 00000000" + "00".repeat(32), 0, REQ, "InvalidMessage", /33 regions exceed/],
    ["SET_VRING_KICK without fd", "0c000000 01000000 08000000 0000000000000000", 0, REQ, "IncorrectFds", /expected 1/],
    ["SET_VRING_KICK nofd with an fd", "0c000000 01000000 08000000 0001000000000000", 1, REQ, "IncorrectFds", /expected 0/],
    ["SET_VRING_KICK reserved bits", "0c000000 01000000 08000000 0002000000000000", 1, REQ, "InvalidMessage", /reserved bits/],
    ["GET_FEATURES with an fd", "01000000 01000000 00000000", 1, REQ, "IncorrectFds", /expected 0/],
    ["config size larger than the payload", "18000000 01000000 14000000 00000000 09000000 00000000 0000000000000000", 0, REQ, "InvalidMessage", /21 \(12 \+ config size 9\)/],
    ["config size over 256", "19000000 01000000 0c000000 00000000 01010000 00000000", 0, REQ, "InvalidMessage", /config size 257/],
    ["reply without REPLY flag", "01000000 01000000 08000000 0000000000000000", 0,
      { type: "reply", channel: "frontend", request: 1, payloads: ["u64"], fds: NONE }, "InvalidMessage", /REPLY flag missing/],
    ["reply to the wrong request", "0f000000 05000000 08000000 0000000000000000", 0,
      { type: "reply", channel: "frontend", request: 1, payloads: ["u64"], fds: NONE }, "InvalidMessage", /names GET_PROTOCOL_FEATURES \(15\) instead/],
    ["ack with garbage size", "12000000 05000000 04000000 00000000", 0, ackExpectation("frontend", 18), "InvalidMessage", /u64 payload must be 8 bytes, got 4/],
    ["GET_INFLIGHT_FD reply without fd", "1f000000 05000000 18000000" + "00".repeat(24), 0,
      { type: "reply", channel: "frontend", request: 31, payloads: ["inflight"], fds: ONE }, "IncorrectFds", /expected 1/],
    ["xen flags FOREIGN|GRANT", "25000000 01000000 30000000 0000000000000000" + "00".repeat(32) + "03000000 01000000", 1, REQ, "InvalidMessage", /not one of/],
    ["xen NO_ADVANCE_MAP without GRANT", "25000000 01000000 30000000 0000000000000000" + "00".repeat(32) + "09000000 01000000", 1, REQ, "InvalidMessage", /only valid with GRANT/],
    ["40-byte region without XEN_MMAP", "25000000 01000000 30000000 0000000000000000" + "00".repeat(40), 1, REQ, "InvalidMessage", /must be 40 bytes, got 48/],
    ["device state phase 1", "2a000000 01000000 08000000 00000000 01000000", 1, REQ, "InvalidMessage", /phase 1/],
    ["unknown backend request", "0b000000 01000000 00000000", 0, { type: "request", channel: "backend" }, "InvalidMessage", /unknown backend request 11/],
  ] as const)("%s", (_n, bytes, n, expectation, kind, re) => {
    const isXen = _n.startsWith("xen");
    const err = decodeError(bytes, n, expectation, isXen ? { xenMmap: true } : undefined);
    expect(err.kind).toBe(kind);
    expect(err.message).toMatch(re);
  });

  it("has an entry with payload kind, fds and reply for every message", () => {
    for (const e of [...frontendRequests, ...backendRequests]) {
      expect(e.payload).toBeTypeOf("string");
      expect(e.fds.kind).toBeTypeOf("string");
      expect(e.reply.when).toBeTypeOf("string");
    }
    expect(messageInfo("frontend", 21)?.name).toBe("SET_BACKEND_REQ_FD");
    expect(frontendRequests).toHaveLength(45);
    expect(backendRequests).toHaveLength(10);
  });

  it("refuses to encode values the wire cannot carry", () => {
    expect(() => encodeMessage({ request: 2, flags: 1, payload: U64(-1n) })).toThrow(VhostUserError);
    expect(() => encodeMessage({ request: 24, flags: 1, payload: { kind: "config", offset: 0, flags: 0, data: new Uint8Array(257) } })).toThrow(/exceeds 256/);
    const xenRegion = { guestPhysAddr: 0n, memorySize: 1n, userAddr: 0n, mmapOffset: 0n, xen: { flags: 1, domid: 0 } };
    expect(() => encodeMessage({ request: 37, flags: 1, payload: { kind: "single-region", region: xenRegion } })).toThrow(/XEN_MMAP/);
  });
});
