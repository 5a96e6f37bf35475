import { defineConfig } from "vitest/config";

export default defineConfig({
  // --expose-gc: the leak-detection tests drive the mmap finalizer.
  test: { include: ["src/**/*.test.ts", "test/**/*.test.ts"], pool: "forks", execArgv: ["--expose-gc"] },
});
