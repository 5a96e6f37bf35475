// One poll of the domain list (getdomaininfolist, paged by xen-sys's Xen.listDomains with its interface-version
// probing) turned into views, diffed against the previous poll.
import type { DomainInfo } from "@xen-vhost/xen-sys";
import { carryNames, diffViews, initialEvents, type DomainViews, type MonitorEvent } from "./diff.js";
import { noNames, type NameSource } from "./names.js";
import { viewOf, type DomainView } from "./view.js";

export interface MonitorOptions {
  /** Where domains come from: xen-sys's `Xen` (any object with its listDomains). */
  xen: { listDomains(): DomainInfo[] };
  names?: NameSource;
  /** Report running <-> blocked flips (see DiffOptions). */
  scheduling?: boolean;
  /**
   * How long a new domain may stay unreported while it is being built (no vCPU online yet) or XenStore has
   * no name for it (default 10 s; under emulation xl took over 3 s to bring the first vCPU up): `xl create`
   * brings the vCPUs up, fills the memory and writes the name just after the domain exists, and a created
   * line should say who it is and what it got. Polls in between treat the domain as not seen yet; after
   * this it is reported as it is.
   */
  nameWaitMs?: number;
}

export class Monitor {
  readonly #xen: MonitorOptions["xen"];
  readonly #names: NameSource;
  readonly #scheduling: boolean;
  readonly #nameWaitMs: number;
  #prev: DomainViews | undefined;
  /** When each new domain still held back (by UUID) was first seen, in ms since the epoch. */
  readonly #heldSince = new Map<string, number>();

  constructor(options: MonitorOptions) {
    this.#xen = options.xen;
    this.#names = options.names ?? noNames;
    this.#scheduling = options.scheduling ?? false;
    this.#nameWaitMs = options.nameWaitMs ?? 10_000;
  }

  /** The last view (undefined before the first poll). */
  get current(): DomainViews | undefined {
    return this.#prev;
  }

  /** Lists the domains and their names now. @throws XenError from the sysctl */
  async snapshot(): Promise<Map<number, DomainView>> {
    const infos = this.#xen.listDomains();
    const names = await this.#names.names(infos.map((i) => i.domid));
    const next = new Map(infos.map((i) => [i.domid, viewOf(i, names.get(i.domid))] as const));
    carryNames(this.#prev, next);
    return next;
  }

  /** Holds back new domains without a name or vCPUs (see `nameWaitMs`); they count as unseen until then. */
  #holdNew(next: Map<number, DomainView>, now: number): void {
    const prev = this.#prev;
    const seen = new Set<string>();
    for (const [domid, v] of next) {
      const ready = (v.name !== undefined || this.#names === noNames) && v.vcpus > 0;
      if (ready || v.dying || prev?.get(domid)?.uuid === v.uuid) continue;
      seen.add(v.uuid);
      const since = this.#heldSince.get(v.uuid) ?? now;
      this.#heldSince.set(v.uuid, since);
      if (now - since < this.#nameWaitMs) next.delete(domid);
    }
    for (const uuid of this.#heldSince.keys()) if (!seen.has(uuid)) this.#heldSince.delete(uuid);
  }

  /** Polls once: the changes since the last poll, or every domain as "present" on the first. */
  async poll(): Promise<MonitorEvent[]> {
    const next = await this.snapshot();
    const prev = this.#prev;
    if (prev !== undefined) this.#holdNew(next, Date.now());
    this.#prev = next;
    return prev === undefined ? initialEvents(next) : diffViews(prev, next, { scheduling: this.#scheduling });
  }
}
