// The heart of the monitor, kept pure: two views of the domain list in, the changes between them out.
import { activityOf, isScheduling, memMiB, type Activity, type DomainView } from "./view.js";

interface Subject {
  domid: number;
  /** The XenStore name, when known. */
  name: string | undefined;
}

/** One change between two polls. */
export type MonitorEvent = Subject &
  (
    | { type: "present"; activity: Activity | undefined; vcpus: number; memKiB: number }
    | { type: "created"; activity: Activity | undefined; vcpus: number; memKiB: number }
    | { type: "state"; from: Activity | undefined; to: Activity }
    | { type: "shutdown"; code: number }
    | { type: "dying" }
    | { type: "destroyed" }
    | { type: "vcpus"; from: number; to: number }
    | { type: "memory"; fromKiB: number; toKiB: number }
    | { type: "renamed"; from: string }
  );

export type MonitorEventType = MonitorEvent["type"];

export interface DiffOptions {
  /**
   * Report running / runnable / blocked flips too. Off by default: a guest flips whenever it wakes or
   * sleeps, so these would flood the console; changes to and from paused are always reported.
   */
  scheduling?: boolean;
}

/** Domains by domid. */
export type DomainViews = ReadonlyMap<number, DomainView>;

/** The first poll: every domain as it is, so a reader of the output has the starting point. */
export function initialEvents(views: DomainViews): MonitorEvent[] {
  return [...views.values()]
    .sort((a, b) => a.domid - b.domid)
    .map((v) => ({ type: "present", domid: v.domid, name: v.name, activity: activityOf(v), vcpus: v.vcpus, memKiB: v.memKiB }));
}

/**
 * The changes from `prev` to `next`, ordered by domid; per domain: destroyed/created, renamed, shutdown,
 * dying, state, vcpus, memory. A domid whose UUID changed was destroyed and re-created between the polls.
 * Memory changes count in whole MiB, as `xl list` shows them (Xen's own page use moves tot_pages by a few
 * pages now and then).
 */
export function diffViews(prev: DomainViews, next: DomainViews, options: DiffOptions = {}): MonitorEvent[] {
  const out: MonitorEvent[] = [];
  const ids = [...new Set([...prev.keys(), ...next.keys()])].sort((a, b) => a - b);
  for (const domid of ids) {
    const p = prev.get(domid);
    const n = next.get(domid);
    if (p && (!n || n.uuid !== p.uuid)) out.push({ type: "destroyed", domid, name: p.name });
    if (!n) continue;
    if (!p || p.uuid !== n.uuid) {
      out.push({ type: "created", domid, name: n.name, activity: activityOf(n), vcpus: n.vcpus, memKiB: n.memKiB });
      continue;
    }
    const name = n.name;
    if (p.name !== undefined && n.name !== undefined && p.name !== n.name) out.push({ type: "renamed", domid, name, from: p.name });
    if (n.shutdownCode !== undefined && n.shutdownCode !== p.shutdownCode) out.push({ type: "shutdown", domid, name, code: n.shutdownCode });
    if (n.dying && !p.dying) out.push({ type: "dying", domid, name });
    const from = activityOf(p);
    const to = activityOf(n);
    const flip = isScheduling(from) && isScheduling(to);
    if (to !== undefined && to !== from && (!flip || options.scheduling === true)) out.push({ type: "state", domid, name, from, to });
    if (n.vcpus !== p.vcpus) out.push({ type: "vcpus", domid, name, from: p.vcpus, to: n.vcpus });
    if (memMiB(n.memKiB) !== memMiB(p.memKiB)) out.push({ type: "memory", domid, name, fromKiB: p.memKiB, toKiB: n.memKiB });
  }
  return out;
}

/**
 * Keeps a domain's last known name when XenStore no longer has it: libxl removes /local/domain/<domid>
 * while destroying, before the domain is gone, and a monitor should still say who died.
 */
export function carryNames(prev: DomainViews | undefined, next: Map<number, DomainView>): void {
  if (!prev) return;
  for (const [domid, v] of next) {
    const p = prev.get(domid);
    if (v.name === undefined && p?.uuid === v.uuid && p.name !== undefined) next.set(domid, { ...v, name: p.name });
  }
}
