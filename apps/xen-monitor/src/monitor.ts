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
   * How long to wait for the name of a domain seen for the first time, in steps of 50 ms (default 200):
   * `xl create` writes the name just after the domain exists, and a created line should say who it is.
   */
  nameWaitMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Monitor {
  readonly #xen: MonitorOptions["xen"];
  readonly #names: NameSource;
  readonly #scheduling: boolean;
  readonly #nameWaitMs: number;
  #prev: DomainViews | undefined;

  constructor(options: MonitorOptions) {
    this.#xen = options.xen;
    this.#names = options.names ?? noNames;
    this.#scheduling = options.scheduling ?? false;
    this.#nameWaitMs = options.nameWaitMs ?? 200;
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
    if (this.#prev !== undefined) await this.#waitForNewNames(next);
    return next;
  }

  async #waitForNewNames(next: Map<number, DomainView>): Promise<void> {
    const prev = this.#prev;
    const unnamed = (): number[] =>
      [...next.values()].filter((v) => v.name === undefined && prev?.get(v.domid)?.uuid !== v.uuid && !v.dying).map((v) => v.domid);
    for (let waited = 0; waited < this.#nameWaitMs && unnamed().length > 0 && this.#names !== noNames; waited += 50) {
      await sleep(50);
      const got = await this.#names.names(unnamed());
      for (const [domid, name] of got) next.set(domid, { ...next.get(domid)!, name });
    }
  }

  /** Polls once: the changes since the last poll, or every domain as "present" on the first. */
  async poll(): Promise<MonitorEvent[]> {
    const next = await this.snapshot();
    const prev = this.#prev;
    this.#prev = next;
    return prev === undefined ? initialEvents(next) : diffViews(prev, next, { scheduling: this.#scheduling });
  }
}
