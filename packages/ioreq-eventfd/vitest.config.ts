import { defineConfig } from "vitest/config";

export default defineConfig({
  // --expose-gc: the leak-detection tests drive the mmap finalizer. The KVM guests busy-wait for their
  // interrupts; on a loaded 2-core CI machine (other packages' suites run beside this one) a test can take
  // several seconds, so the timeout is generous. It bounds a hang; it is not a performance assertion.
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    pool: "forks",
    execArgv: ["--expose-gc"],
    testTimeout: 60_000,
  },
});
