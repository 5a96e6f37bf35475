import { defineConfig } from "vitest/config";

export default defineConfig({
  // The simulator and the guests are separate processes running the built dist/: build first (turbo.json).
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    pool: "forks",
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
