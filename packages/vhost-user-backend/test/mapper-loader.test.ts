import { afterEach, expect, it } from "vitest";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { BackendError, UsageError, commonArgs, commonOptions, loadXenRegionMapper } from "../src/index.js";

const cwd = process.cwd();
let dir: string | undefined;
afterEach(() => {
  process.chdir(cwd);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function pkg(name: string, body: string): string {
  dir = mkdtempSync(join(tmpdir(), "mapper-"));
  const p = join(dir, "node_modules", name);
  mkdirSync(p, { recursive: true });
  writeFileSync(join(p, "package.json"), JSON.stringify({ name, type: "module", exports: { ".": { default: "./index.js" } } }));
  writeFileSync(join(p, "index.js"), body);
  return dir;
}

it("loads a mapper package by name from the working directory and passes options", async () => {
  process.chdir(pkg("some-xen-mapper", `export function createXenRegionMapper(o) { return { name: "m:" + o.tag, supports: () => true, map() { throw new Error("no"); } }; }`));
  const m = await loadXenRegionMapper("some-xen-mapper", { tag: "x" });
  expect(m.name).toBe("m:x");
});

it("names what is wrong: missing module, no factory, not a mapper", async () => {
  await expect(loadXenRegionMapper("no-such-mapper-package")).rejects.toThrow(BackendError);
  await expect(loadXenRegionMapper("no-such-mapper-package")).rejects.toThrow(/cannot load the Xen region mapper module "no-such-mapper-package"/);
  process.chdir(pkg("empty-mapper", "export const x = 1;"));
  await expect(loadXenRegionMapper("empty-mapper")).rejects.toThrow(/does not export createXenRegionMapper/);
  process.chdir(cwd);
  rmSync(dir!, { recursive: true, force: true });
  process.chdir(pkg("bad-mapper", "export function createXenRegionMapper() { return { name: 1 }; }"));
  await expect(loadXenRegionMapper("bad-mapper")).rejects.toThrow(/did not return a XenRegionMapper/);
});

it("--xen-mapper-option KEY=VALUE pairs reach createXenRegionMapper; malformed ones are usage errors", () => {
  const parse = (args: string[]) => commonArgs(parseArgs({ args, options: commonOptions, strict: true }).values);
  const a = parse(["-s", "/tmp/x", "--xen-mapper", "@xen-vhost/vm-memory-xen", "--xen-mapper-option", "grantAccess=copy", "--xen-mapper-option", "tag=a=b"]);
  expect(a.xenMapperOptions).toEqual({ grantAccess: "copy", tag: "a=b" });
  expect(parse(["-s", "/tmp/x"]).xenMapperOptions).toEqual({});
  expect(() => parse(["-s", "/tmp/x", "--xen-mapper", "m", "--xen-mapper-option", "novalue"])).toThrow(UsageError);
  expect(() => parse(["-s", "/tmp/x", "--xen-mapper-option", "grantAccess=copy"])).toThrow(/needs --xen-mapper/);
});
