// Test helpers shared by every package's suite.
import { readdirSync, readlinkSync } from "node:fs";

/** The fds this process has open, with what they point to (from /proc/self/fd). */
export function openFds(): Map<number, string> {
  const out = new Map<number, string>();
  for (const name of readdirSync("/proc/self/fd")) {
    const fd = Number(name);
    try {
      out.set(fd, readlinkSync(`/proc/self/fd/${name}`));
    } catch {
      // the fd of the readdir itself is gone by now
    }
  }
  return out;
}

/**
 * Records the open fds now; `check()` returns the ones opened since and still open (a leak), described
 * as "fd 23 -> anon_inode:[eventfd]".
 */
export function fdLeakCheck(): { check(): string[] } {
  const before = openFds();
  return {
    check(): string[] {
      const leaked: string[] = [];
      for (const [fd, target] of openFds()) {
        if (before.get(fd) !== target) leaked.push(`fd ${fd} -> ${target}`);
      }
      return leaked;
    },
  };
}
