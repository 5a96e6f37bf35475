// docs/REAL-BACKENDS.md states which front-end requests and protocol features each real back-end exercised.
// Each real-back-end test file records what its Frontends did (RequestRecorder) and checks the note's section
// for that back-end against it, so the note stays true. UPDATE_REAL_BACKENDS_NOTE=1 rewrites the section.
import { readFileSync, writeFileSync } from "node:fs";
import { expect, type RunnerTestSuite } from "vitest";
import type { RequestRecorder } from "../src/testing/request-recorder.js";

const NOTE = new URL("../docs/REAL-BACKENDS.md", import.meta.url);

function render(rec: RequestRecorder): string {
  const requests = [...rec.requests.keys()].sort();
  return [
    `- front-end requests (${requests.length}): ${requests.join(", ")}`,
    `- protocol features acked: ${[...rec.protocolFeatures].sort().join(", ") || "none"}`,
  ].join("\n") + "\n";
}

function tests(suite: Readonly<RunnerTestSuite>): { result?: { state?: string } }[] {
  return suite.tasks.flatMap((t) => (t.type === "suite" ? tests(t) : [t]));
}

/**
 * Checks the note's section for `backend` against `rec`. Exact when every test of `suite` ran and passed;
 * otherwise (a filtered or failing run) only that what was done is listed.
 */
export function expectNoteMatches(backend: string, rec: RequestRecorder, suite: Readonly<RunnerTestSuite>): void {
  const md = readFileSync(NOTE, "utf8");
  const re = new RegExp(`(<!-- exercised:${backend} -->\\n)([^<]*)(<!-- /exercised -->)`);
  const m = re.exec(md);
  expect(m, `docs/REAL-BACKENDS.md has a section <!-- exercised:${backend} -->`).not.toBeNull();
  const actual = render(rec);
  if (process.env["UPDATE_REAL_BACKENDS_NOTE"] && tests(suite).every((t) => t.result?.state === "pass")) {
    writeFileSync(NOTE, md.replace(re, (_all, a: string, _b, c: string) => a + actual + c));
    return;
  }
  const complete = tests(suite).every((t) => t.result?.state === "pass");
  if (complete) {
    expect(m![2], `docs/REAL-BACKENDS.md (${backend}) vs what the tests did; UPDATE_REAL_BACKENDS_NOTE=1 rewrites it`).toBe(actual);
    return;
  }
  const listed = new Set(m![2]!.split(/[:,\n]/).map((w) => w.trim()));
  const missing = [...rec.requests.keys(), ...rec.protocolFeatures].filter((n) => !listed.has(n));
  expect(missing, `done by the tests but not listed in docs/REAL-BACKENDS.md (${backend})`).toEqual([]);
}

/**
 * An afterAll hook that checks the note for `backend` (register it before the hooks that stop daemons: after-hooks
 * run in reverse order). Vitest passes the suite as the hook's second argument; its first must be a pattern.
 */
export function noteCheck(backend: string, rec: RequestRecorder): (ctx: object, suite: Readonly<RunnerTestSuite>) => void {
  // eslint-disable-next-line no-empty-pattern
  return ({}: object, suite: Readonly<RunnerTestSuite>) => expectNoteMatches(backend, rec, suite);
}
