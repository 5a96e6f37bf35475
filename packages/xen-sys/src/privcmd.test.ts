// The paged-out retry of IOCTL_PRIVCMD_MMAPBATCH_V2, with a stand-in for the ioctl that behaves like
// drivers/xen/privcmd.c: ENOENT for the call when a frame is paged out, per-page errors only written back
// when some frame failed.
import { describe, expect, it } from "vitest";
import { SysError } from "@xen-vhost/vmm-sys-util";
import { mapBatchRetryingPaged } from "./privcmd.js";

const ENOENT = 2;
const EFAULT = 14;

/** A frame source: `pagedFor[i]` calls answer ENOENT for frame i before it is paged in; `bad` frames fail. */
function kernel(n: number, pagedFor: Record<number, number>, bad: Record<number, number> = {}) {
  const err = new Int32Array(n);
  const calls: [number, number][] = [];
  const batch = (count: number, first: number): void => {
    calls.push([count, first]);
    const results: number[] = [];
    for (let i = first; i < first + count; i++) {
      if ((pagedFor[i] ?? 0) > 0) {
        pagedFor[i]!--;
        results.push(-ENOENT);
      } else results.push(-(bad[i] ?? 0));
    }
    if (results.some((r) => r !== 0)) results.forEach((r, k) => (err[first + k] = r)); // written only on error
    if (results.includes(-ENOENT)) throw new SysError("ioctl", ENOENT, "IOCTL_PRIVCMD_MMAPBATCH_V2");
  };
  return { err, calls, batch };
}

describe("MMAPBATCH_V2 paged-out retry", () => {
  it("one call when nothing is paged out; other per-page errors are left for the caller", () => {
    const k = kernel(4, {}, { 2: EFAULT });
    mapBatchRetryingPaged(4, k.batch, k.err, { rounds: 8, sleep: () => {} });
    expect(k.calls).toEqual([[4, 0]]);
    expect([...k.err]).toEqual([0, 0, -EFAULT, 0]);
  });

  it("retries only the paged-out frames, one by one, until they map", () => {
    const k = kernel(4, { 1: 1, 3: 3 });
    const sleeps: number[] = [];
    mapBatchRetryingPaged(4, k.batch, k.err, { rounds: 8, sleep: (ms) => sleeps.push(ms) });
    expect([...k.err]).toEqual([0, 0, 0, 0]);
    expect(k.calls).toEqual([[4, 0], [1, 1], [1, 3], [1, 3], [1, 3]]);
    expect(sleeps).toEqual([1, 2, 3]);
  });

  it("gives up after `rounds`, leaving ENOENT on the frames still paged out", () => {
    const k = kernel(2, { 0: 100 });
    mapBatchRetryingPaged(2, k.batch, k.err, { rounds: 3, sleep: () => {} });
    expect([...k.err]).toEqual([-ENOENT, 0]);
    expect(k.calls).toHaveLength(4);
  });

  it("other failures of the call propagate", () => {
    const err = new Int32Array(1);
    expect(() =>
      mapBatchRetryingPaged(1, () => { throw new SysError("ioctl", 22); }, err, { rounds: 3, sleep: () => {} }),
    ).toThrow(expect.objectContaining({ code: "EINVAL" }));
  });
});
