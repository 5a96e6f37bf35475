#!/usr/bin/env node
// Copies built workspace packages and their runtime dependency closure into a flat node_modules tree
// that an arm64 Node inside dom0 can use:
//   <out>/node_modules/@xen-vhost/<pkg>/{package.json,dist/...}
//   <out>/node_modules/<third-party>/...          (resolved from pnpm's store, copied without nested node_modules)
// Usage: node stage-project.mjs <out-dir> <package-name>...
// Workspace packages contribute package.json and dist/ only (dist must be built). Third-party packages are
// copied whole; one that carries native code (binding.gyp or *.node) is refused unless it is listed in
// NATIVE_HANDLED, because an x64 binary would fail in dom0 only at run time.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const NATIVE_HANDLED = new Set(["@xen-vhost/vmm-sys-util"]); // its arm64 addon is added by stage-project.sh

const repo = join(dirname(fileURLToPath(import.meta.url)), "..");
const [out, ...wanted] = process.argv.slice(2);
if (!out || wanted.length === 0) {
  console.error("usage: node stage-project.mjs <out-dir> <package-name>...");
  process.exit(2);
}

/** name -> directory of every workspace package (packages/* and apps/*). */
const workspace = new Map();
for (const group of ["packages", "apps"]) {
  const base = join(repo, group);
  if (!existsSync(base)) continue;
  for (const d of readdirSync(base)) {
    const pj = join(base, d, "package.json");
    if (existsSync(pj)) workspace.set(JSON.parse(readFileSync(pj, "utf8")).name, join(base, d));
  }
}

const readJson = (p) => JSON.parse(readFileSync(p, "utf8"));
const staged = new Map(); // name -> version
const nm = join(out, "node_modules");
rmSync(nm, { recursive: true, force: true });
mkdirSync(nm, { recursive: true });

/** Node's lookup: the nearest node_modules/<name> walking up from `fromDir`, with symlinks resolved. */
function resolvePackageDir(name, fromDir) {
  for (let d = fromDir; ; d = dirname(d)) {
    const candidate = join(d, "node_modules", name);
    if (existsSync(join(candidate, "package.json"))) return realpathSync(candidate);
    if (dirname(d) === d) return undefined;
  }
}

function hasNativeCode(dir) {
  if (existsSync(join(dir, "binding.gyp"))) return true;
  const walk = (d) =>
    readdirSync(d).some((f) => {
      if (f === "node_modules") return false;
      const p = join(d, f);
      return statSync(p).isDirectory() ? walk(p) : f.endsWith(".node");
    });
  return walk(dir);
}

function stage(name, fromDir) {
  if (staged.has(name)) return;
  const ws = workspace.get(name);
  const dir = ws ?? resolvePackageDir(name, fromDir);
  if (!dir) throw new Error(`cannot resolve ${name} from ${fromDir} (pnpm install?)`);
  const pj = readJson(join(dir, "package.json"));
  staged.set(name, pj.version);
  const dest = join(nm, name);
  mkdirSync(dest, { recursive: true });
  if (ws) {
    if (!existsSync(join(dir, "dist"))) throw new Error(`${name} has no dist/ (build it first)`);
    cpSync(join(dir, "package.json"), join(dest, "package.json"));
    cpSync(join(dir, "dist"), join(dest, "dist"), { recursive: true, dereference: true });
  } else {
    if (hasNativeCode(dir) && !NATIVE_HANDLED.has(name))
      throw new Error(`${name} (${relative(repo, dir)}) has native code; it needs an arm64 build step in stage-project.sh`);
    cpSync(dir, dest, { recursive: true, dereference: true, filter: (src) => !src.slice(dir.length).includes("/node_modules") });
  }
  for (const dep of Object.keys(pj.dependencies ?? {})) stage(dep, dir);
  for (const dep of Object.keys(pj.optionalDependencies ?? {})) {
    if (workspace.has(dep) || resolvePackageDir(dep, dir)) stage(dep, dir);
  }
}

for (const name of wanted) stage(name, repo);
for (const [name, version] of [...staged].sort()) console.log(`staged ${name}@${version}`);
