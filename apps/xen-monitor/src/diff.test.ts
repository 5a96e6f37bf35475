import { describe, expect, it } from "vitest";
import { test, fc } from "@fast-check/vitest";
import { carryNames, diffViews, initialEvents, type MonitorEvent } from "./diff.js";
import { activityOf, memMiB, type DomainView } from "./view.js";

const uuids = ["00000000-0000-0000-0000-000000000000", "2da12a4b-5d3f-4e4f-a5a2-c6948717e792", "9b1f3c55-0000-4000-8000-000000000001"];

const arbView = (domid: number): fc.Arbitrary<DomainView> =>
  fc.record({
    domid: fc.constant(domid),
    uuid: fc.constantFrom(...uuids),
    name: fc.option(fc.constantFrom("Domain-0", "web", "db", "monu"), { nil: undefined }),
    paused: fc.boolean(),
    running: fc.boolean(),
    blocked: fc.boolean(),
    shutdownCode: fc.option(fc.integer({ min: 0, max: 5 }), { nil: undefined }),
    dying: fc.boolean(),
    vcpus: fc.integer({ min: 0, max: 4 }),
    maxVcpus: fc.constant(4),
    memKiB: fc.integer({ min: 0, max: 4 << 20 }),
    maxMemKiB: fc.constant(4 << 20),
    cpuSeconds: fc.double({ min: 0, max: 1e6, noNaN: true }),
  });

/** A domain list: a few domids out of 0..7, each with an arbitrary view. */
const arbViews = fc
  .uniqueArray(fc.integer({ min: 0, max: 7 }), { maxLength: 6 })
  .chain((ids) => fc.tuple(...ids.map(arbView)))
  .map((vs) => new Map(vs.map((v) => [v.domid, v] as const)));

/** Two polls where some domains stay (possibly changed), some go and some come. */
const arbPair = fc.tuple(arbViews, arbViews);

function byDomid(events: MonitorEvent[]): Map<number, MonitorEvent[]> {
  const m = new Map<number, MonitorEvent[]>();
  for (const e of events) m.set(e.domid, [...(m.get(e.domid) ?? []), e]);
  return m;
}

describe("diffViews", () => {
  test.prop([arbViews, fc.boolean()])("a view compared with itself has no changes", (views, scheduling) => {
    expect(diffViews(views, views, { scheduling })).toEqual([]);
  });

  test.prop([arbPair, fc.boolean()])("created and destroyed are exactly the domids (or handles) that came and went", ([prev, next], scheduling) => {
    const events = diffViews(prev, next, { scheduling });
    const created = events.filter((e) => e.type === "created").map((e) => e.domid);
    const destroyed = events.filter((e) => e.type === "destroyed").map((e) => e.domid);
    const same = (id: number): boolean => prev.has(id) && next.has(id) && prev.get(id)!.uuid === next.get(id)!.uuid;
    expect(created).toEqual([...next.keys()].filter((id) => !same(id)).sort((a, b) => a - b));
    expect(destroyed).toEqual([...prev.keys()].filter((id) => !same(id)).sort((a, b) => a - b));
    // a re-created domid is reported gone before it is reported new
    for (const id of created.filter((x) => destroyed.includes(x))) {
      const types = byDomid(events).get(id)!.map((e) => e.type);
      expect(types).toEqual(["destroyed", "created"]);
    }
  });

  test.prop([arbPair, fc.boolean()])("events are in domid order, at most one of each type per domain", ([prev, next], scheduling) => {
    const events = diffViews(prev, next, { scheduling });
    const ids = events.map((e) => e.domid);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    for (const evs of byDomid(events).values()) expect(new Set(evs.map((e) => e.type)).size).toBe(evs.length);
  });

  test.prop([arbPair, fc.boolean()])("each change of a surviving domain is reported with its old and new value", ([prev, next0], scheduling) => {
    // keep the handles so every common domid is the same domain
    const next = new Map([...next0].map(([id, v]) => [id, prev.has(id) ? { ...v, uuid: prev.get(id)!.uuid } : v] as const));
    const events = byDomid(diffViews(prev, next, { scheduling }));
    for (const [id, p] of prev) {
      const n = next.get(id);
      if (!n) continue;
      const evs = events.get(id) ?? [];
      const find = <T extends MonitorEvent["type"]>(t: T) => evs.find((e) => e.type === t) as Extract<MonitorEvent, { type: T }> | undefined;
      expect(find("vcpus")).toEqual(n.vcpus !== p.vcpus ? { type: "vcpus", domid: id, name: n.name, from: p.vcpus, to: n.vcpus } : undefined);
      expect(find("memory") !== undefined).toBe(memMiB(n.memKiB) !== memMiB(p.memKiB));
      expect(find("dying") !== undefined).toBe(n.dying && !p.dying);
      expect(find("shutdown")?.code).toBe(n.shutdownCode !== undefined && n.shutdownCode !== p.shutdownCode ? n.shutdownCode : undefined);
      const [a, b] = [activityOf(p), activityOf(n)];
      const busy = ["running", "runnable", "blocked"];
      const flip = busy.includes(a ?? "") && busy.includes(b ?? "");
      const expectState = b !== undefined && a !== b && (scheduling || !flip);
      expect(find("state")).toEqual(expectState ? { type: "state", domid: id, name: n.name, from: a, to: b } : undefined);
      expect(find("created")).toBeUndefined();
      expect(find("destroyed")).toBeUndefined();
    }
  });

  it("names the events of a pause, an unpause and a destroy", () => {
    const base: DomainView = {
      domid: 1, uuid: uuids[1]!, name: "monu", paused: false, running: false, blocked: true, shutdownCode: undefined, dying: false,
      vcpus: 1, maxVcpus: 1, memKiB: 131088, maxMemKiB: 132096, cpuSeconds: 2.9,
    };
    const m = (v: Partial<DomainView> | null = {}) => new Map(v ? [[1, { ...base, ...v }]] : []);
    expect(diffViews(m(null), m({ paused: true, blocked: false }))).toEqual([
      { type: "created", domid: 1, name: "monu", activity: "paused", vcpus: 1, memKiB: 131088 },
    ]);
    expect(diffViews(m({ running: true, blocked: false }), m({ paused: true, blocked: false }))).toEqual([
      { type: "state", domid: 1, name: "monu", from: "running", to: "paused" },
    ]);
    expect(diffViews(m(), m({ running: true, blocked: false }))).toEqual([]);
    expect(diffViews(m(), m({ running: true, blocked: false }), { scheduling: true })).toEqual([
      { type: "state", domid: 1, name: "monu", from: "blocked", to: "running" },
    ]);
    // runnable (neither running nor blocked) is scheduling too, seen on the rig as "------"
    expect(diffViews(m({ running: true, blocked: false }), m({ blocked: false }))).toEqual([]);
    expect(diffViews(m({ running: true, blocked: false }), m({ blocked: false }), { scheduling: true })).toEqual([
      { type: "state", domid: 1, name: "monu", from: "running", to: "runnable" },
    ]);
    expect(diffViews(m(), m({ blocked: false, shutdownCode: 3 }))).toEqual([{ type: "shutdown", domid: 1, name: "monu", code: 3 }]);
    expect(diffViews(m({ blocked: false, shutdownCode: 0 }), m({ blocked: false, shutdownCode: 0, dying: true }))).toEqual([
      { type: "dying", domid: 1, name: "monu" },
    ]);
    expect(diffViews(m(), m(null))).toEqual([{ type: "destroyed", domid: 1, name: "monu" }]);
    // a few pages of Xen's own use are not a memory change; a MiB is
    expect(diffViews(m(), m({ memKiB: 131072 }))).toEqual([]);
    expect(diffViews(m(), m({ memKiB: 65536 }))).toEqual([{ type: "memory", domid: 1, name: "monu", fromKiB: 131088, toKiB: 65536 }]);
  });
});

describe("initialEvents and carryNames", () => {
  test.prop([arbViews])("the first poll reports every domain once, in domid order", (views) => {
    const events = initialEvents(views);
    expect(events.map((e) => e.domid)).toEqual([...views.keys()].sort((a, b) => a - b));
    expect(events.every((e) => e.type === "present")).toBe(true);
  });

  test.prop([arbPair])("a name XenStore no longer has is kept for the same domain only", ([prev, next0]) => {
    const next = new Map(next0);
    carryNames(prev, next);
    for (const [id, v] of next) {
      const before = next0.get(id)!;
      const p = prev.get(id);
      const expected = before.name ?? (p?.uuid === before.uuid ? p.name : undefined);
      expect(v.name).toBe(expected);
      expect({ ...v, name: before.name }).toEqual(before);
    }
  });
});
