// `pnpm demo` is the first thing a newcomer runs (the README's first command): it must keep working. Runs
// demo/demo.mjs as the README does (after the build) and checks what the simulated guest reported.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { hasQsd } from "@xen-vhost/vhost-user-master/testing";

const demo = join(import.meta.dirname, "..", "demo", "demo.mjs");

describe("pnpm demo", () => {
  it("serves rng and the seed's i2c RTC to a simulated guest (and a qemu-storage-daemon disk when installed), then stops cleanly", () => {
    const dayBefore = new Date().toISOString().slice(0, 10);
    const r = spawnSync(process.execPath, [demo], { encoding: "utf8", timeout: 90_000 });
    const dayAfter = new Date().toISOString().slice(0, 10);
    const out = `${r.stdout}${r.stderr}`;
    expect(r.status, out).toBe(0);
    expect(out).toMatch(/\[guest\] +read 4 x 32 random bytes, [1-9]\d* interrupt\(s\) on SPI 33/);
    // The RTC reads the host clock: the guest's date is the host's (UTC), to the day (midnight may pass).
    expect(out).toMatch(new RegExp(`\\[guest\\] +hwclock: ds1338 at 0x20 reads (${dayBefore}|${dayAfter})`));
    if (hasQsd) {
      expect(out).toMatch(/backend negotiated \(virtio\/1\/2\): mode=shadow/);
      expect(out).toMatch(/sector 8191: .*\("VUSECTOR" #8191\)/);
      expect(out).toMatch(/4 KiB write round trip intact/);
    }
    expect(out).toMatch(/xen-vhost-master stopped \(exit 0\)/);
    expect(out).not.toMatch(/demo failed/);
  }, 120_000);
});
