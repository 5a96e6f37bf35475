import { defineConfig } from "vitest/config";

// `pnpm vitest` at the root runs every package's suite; `pnpm test` goes through turbo (build first).
export default defineConfig({ test: { projects: ["packages/*", "apps/*"] } });
