// Domain names come from XenStore (/local/domain/<domid>/name, written by the toolstack). XenStore is a
// nicety here: without it (no xenstored, a broken connection) the monitor goes on with domids only.
import { XenStore } from "@xen-vhost/xen-sys";

/** Looks names up; undefined for a domain without one (or when XenStore did not answer). */
export interface NameSource {
  names(domids: readonly number[]): Promise<Map<number, string>>;
  close(): void;
}

/** No names at all (--no-xenstore, or XenStore unavailable). */
export const noNames: NameSource = {
  names: () => Promise.resolve(new Map()),
  close: () => undefined,
};

export class XenStoreNames implements NameSource {
  readonly #xs: XenStore;

  private constructor(xs: XenStore) {
    this.#xs = xs;
  }

  /**
   * Connects to XenStore (`socketPath`, else the xenstored socket, else /dev/xen/xenbus); `onUnavailable` hears
   * why not, and the result is then the no-name source.
   */
  static async open(socketPath: string | undefined, onUnavailable: (why: string) => void): Promise<NameSource> {
    try {
      const xs = await XenStore.open({ ...(socketPath !== undefined ? { socketPath, transport: "socket" as const } : {}), reconnect: true });
      // A dropped connection that cannot be re-established only costs names: the reads fail and are ignored.
      xs.on("close", (cause) => {
        if (cause) onUnavailable(`XenStore connection lost (${cause.message}); names stop updating`);
      });
      return new XenStoreNames(xs);
    } catch (err) {
      onUnavailable(`XenStore unavailable (${(err as Error).message}); showing domain ids only`);
      return noNames;
    }
  }

  async names(domids: readonly number[]): Promise<Map<number, string>> {
    const out = new Map<number, string>();
    await Promise.all(
      domids.map(async (domid) => {
        try {
          const name = await this.#xs.tryRead(`/local/domain/${domid}/name`);
          if (name !== undefined && name !== "") out.set(domid, name);
        } catch {
          // EACCES on a node we may not read, or the connection went: the domain stays unnamed this round.
        }
      }),
    );
    return out;
  }

  close(): void {
    this.#xs.close();
  }
}
