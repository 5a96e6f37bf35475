// Loading a Xen region mapper at run time: the daemon is started with `--xen-mapper <module>` (a package
// name such as @xen-vhost/vm-memory-xen, or a path) and imports it, so Xen support plugs in without
// rebuilding the daemon and without this package depending on Xen code.
import { createRequire } from "node:module";
import { isAbsolute, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { XenRegionMapper, XenRegionMapperModule } from "./memory.js";
import { BackendError } from "./error.js";

/**
 * A package name is looked up from the working directory first (where the operator installed the mapper,
 * e.g. a deployment that has @xen-vhost/vm-memory-xen), then from this package (a workspace).
 */
function resolvePackage(specifier: string): string {
  try {
    return pathToFileURL(createRequire(join(process.cwd(), "noop.js")).resolve(specifier)).href;
  } catch {
    return specifier;
  }
}

function isMapper(m: unknown): m is XenRegionMapper {
  const o = m as Partial<XenRegionMapper> | null;
  return !!o && typeof o.name === "string" && typeof o.supports === "function" && typeof o.map === "function";
}

/**
 * Imports `specifier` and calls its `createXenRegionMapper(options)`.
 * @throws BackendError NotSupported if the module cannot be loaded or exports no mapper factory.
 */
export async function loadXenRegionMapper(specifier: string, options: Record<string, unknown> = {}): Promise<XenRegionMapper> {
  const target = specifier.startsWith(".") || isAbsolute(specifier) ? pathToFileURL(resolve(specifier)).href : resolvePackage(specifier);
  let mod: Partial<XenRegionMapperModule>;
  try {
    mod = (await import(target)) as Partial<XenRegionMapperModule>;
  } catch (err) {
    throw new BackendError("NotSupported", `cannot load the Xen region mapper module "${specifier}": ${(err as Error).message}`, { cause: err });
  }
  if (typeof mod.createXenRegionMapper !== "function")
    throw new BackendError("NotSupported", `module "${specifier}" does not export createXenRegionMapper()`);
  const mapper = await mod.createXenRegionMapper(options);
  if (!isMapper(mapper)) throw new BackendError("NotSupported", `createXenRegionMapper() of "${specifier}" did not return a XenRegionMapper`);
  return mapper;
}
