import { describe, expect, it } from "vitest";
import type { Frontend } from "@xen-vhost/vhost-user-master";
import { sharedMemoryRegions } from "./shared-memory.js";

const warnings: string[] = [];
const log = { debug: () => {}, info: () => {}, warn: (m: string) => warnings.push(m), error: () => {} };
// The two Frontend methods this decision reads; the real protocol exchange is vhost-user-master's to test.
const frontend = (shmem: boolean, reply: () => Promise<bigint[]>): Frontend =>
  ({ hasProtocolFeature: (f: string) => shmem && f === "SHMEM", getShmemConfig: reply }) as unknown as Frontend;

describe("shared memory regions on Xen", () => {
  it("asks only backends that negotiated SHMEM, and reports their regions absent (with a warning)", async () => {
    let asked = 0;
    const reply = (): Promise<bigint[]> => {
      asked++;
      return Promise.resolve([0n, 0x10000n]);
    };
    expect(await sharedMemoryRegions(frontend(false, reply), log)).toEqual([]);
    expect(asked).toBe(0);
    expect(await sharedMemoryRegions(frontend(true, reply), log)).toEqual([]);
    expect(asked).toBe(1);
    expect(warnings.at(-1)).toMatch(/cannot be given/);
    expect(await sharedMemoryRegions(frontend(true, () => Promise.reject(new Error("refused"))), log)).toEqual([]);
    expect(warnings.at(-1)).toMatch(/GET_SHMEM_CONFIG failed/);
  });
});
