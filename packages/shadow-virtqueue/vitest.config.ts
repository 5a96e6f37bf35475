import { defineConfig } from "vitest/config";

// Property tests run tens of relays each; on a loaded CI machine that can pass the 5 s default.
export default defineConfig({
  test: { include: ["src/**/*.test.ts", "test/**/*.test.ts"], pool: "forks", testTimeout: 60_000 },
});
