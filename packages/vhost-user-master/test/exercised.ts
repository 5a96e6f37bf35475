// docs/REAL-BACKENDS.md states which front-end requests and protocol features each real back-end exercised.
// Each real-back-end test file records what its Frontends did (RequestRecorder) and checks the note's section
// for that back-end against it, so the note stays true. UPDATE_REAL_BACKENDS_NOTE=1 rewrites the section.
import { readFileSync, writeFileSync } from "node:fs";
import { expect } from "vitest";
import type { RequestRecorder } from "../src/testing/request-recorder.js";

const NOTE = new URL("../docs/REAL-BACKENDS.md", import.meta.url);

function render(rec: RequestRecorder): string {
  const requests = [...rec.requests.keys()].sort();
  return [
    `- front-end requests (${requests.length}): ${requests.join(", ")}`,
    `- protocol features acked: ${[...rec.protocolFeatures].sort().join(", ") || "none"}`,
  ].join("\n") + "\n";
}

export function expectNoteMatches(backend: string, rec: RequestRecorder): void {
  const md = readFileSync(NOTE, "utf8");
  const re = new RegExp(`(<!-- exercised:${backend} -->\\n)([^<]*)(<!-- /exercised -->)`);
  const m = re.exec(md);
  expect(m, `docs/REAL-BACKENDS.md has a section <!-- exercised:${backend} -->`).not.toBeNull();
  const actual = render(rec);
  if (process.env["UPDATE_REAL_BACKENDS_NOTE"]) {
    writeFileSync(NOTE, md.replace(re, (_all, a: string, _b, c: string) => a + actual + c));
    return;
  }
  expect(m![2], `docs/REAL-BACKENDS.md (${backend}) vs what the tests did; UPDATE_REAL_BACKENDS_NOTE=1 rewrites it`).toBe(actual);
}
