// Guest program "xenbus": the guest side of XenStore, as a PV driver uses it through xenbus.
// args: {
//   publish?: Record<string, string>   nodes to write (relative paths are under /local/domain/<domid>)
//   read?: string[]                    nodes to read (value, or the error code)
//   tryWrite?: string[]                nodes to try writing (OK, or the error code: EACCES where not allowed)
//   perms?: string[]                   nodes whose permissions to report
//   foreignWatch?: string              a path to watch that the guest may not read (events must not arrive)
//   waitFor?: { path: string; value: string; timeoutMs?: number }  watch `path` until it reads `value`
//   raw?: { type: number; args: string[] }[]   requests of any type (a hostile guest): "OK" or the error code
//   setPerms?: { path: string; perms: string[] }[]   XS_SET_PERMS ("n1", "r0"...): "OK" or the error code
// }
import { parsePermission, strings } from "@xen-vhost/xen-sys";
import { XenBusError } from "../xenbus.js";
import type { GuestContext } from "../program.js";

interface Args {
  publish?: Record<string, string>;
  read?: string[];
  tryWrite?: string[];
  perms?: string[];
  foreignWatch?: string;
  waitFor?: { path: string; value: string; timeoutMs?: number };
  raw?: { type: number; args: string[] }[];
  setPerms?: { path: string; perms: string[] }[];
}

function outcome(f: () => string | void): string {
  try {
    return f() ?? "OK";
  } catch (err) {
    if (err instanceof XenBusError) return err.code;
    throw err;
  }
}

export default function xenbus(ctx: GuestContext): unknown {
  const a = ctx.args as Args;
  using bus = ctx.guest.xenbus();
  const home = bus.domainPath();
  ctx.log(`xenbus: connected as domain ${bus.domid}, home ${home}`);
  const result: Record<string, unknown> = { home };
  if (a.foreignWatch) {
    bus.watch(a.foreignWatch, "foreign");
    bus.waitEvent(a.foreignWatch, "foreign", 2000); // the event every new watch fires once
  }
  for (const [path, value] of Object.entries(a.publish ?? {})) {
    bus.write(path, value);
    ctx.log(`xenbus: wrote ${path} = ${value}`);
  }
  if (a.read) result["read"] = Object.fromEntries(a.read.map((p) => [p, outcome(() => bus.read(p))]));
  if (a.tryWrite) result["tryWrite"] = Object.fromEntries(a.tryWrite.map((p) => [p, outcome(() => bus.write(p, "x"))]));
  if (a.raw) result["raw"] = a.raw.map((r) => outcome(() => void bus.request(r.type, strings(...r.args))));
  if (a.setPerms) result["setPerms"] = a.setPerms.map((r) => outcome(() => bus.setPerms(r.path, r.perms.map(parsePermission))));
  if (a.perms) result["perms"] = Object.fromEntries(a.perms.map((p) => [p, bus.getPerms(p).map((x) => `${x.perm}:${x.domid}`)]));
  if (a.waitFor) {
    const { path, value } = a.waitFor;
    const deadline = Date.now() + (a.waitFor.timeoutMs ?? 10_000);
    bus.watch(path, "wait");
    ctx.log(`xenbus: watching ${path} for "${value}"`);
    let seen: string | undefined;
    while (Date.now() < deadline) {
      const ev = bus.nextEvent(Math.max(1, deadline - Date.now()));
      if (!ev) break;
      if (ev.token === "foreign") {
        result["foreignEvents"] = ((result["foreignEvents"] as number | undefined) ?? 0) + 1;
        continue;
      }
      seen = bus.tryRead(path);
      if (seen === value) break;
    }
    result["waited"] = seen ?? null;
    ctx.log(`xenbus: ${path} is "${seen ?? "(missing)"}"`);
  }
  result["foreignEvents"] ??= 0;
  return result;
}
