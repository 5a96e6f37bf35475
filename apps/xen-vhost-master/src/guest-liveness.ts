// Notices guests that die without the toolstack cleaning up after them (xl destroy of a hung guest, a
// crashed toolstack, `xl destroy` racing the device removal): xenstored fires the special watch
// `@releaseDomain` whenever a domain is released, without saying which one (docs/misc/xenstore.txt), so on
// each event the bridge asks the hypervisor about every guest it serves. A guest that is gone (ESRCH) or
// dying is reported; the bridge then tears its devices down, destroys its ioreq server and releases its
// mappings, exactly as for backend-state Closing.
import { noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import { XenError, type Xen, type XenStore, type XenStoreWatch } from "@xen-vhost/xen-sys";

/** Why a guest is considered gone, or undefined while it lives. */
export function guestGone(xen: Xen, domid: number): string | undefined {
  try {
    const info = xen.getDomainInfo(domid);
    // getdomaininfo answers for the next domain up when `domid` does not exist (XEN_DOMCTL_getdomaininfo).
    if (info.domid !== domid) return "domain no longer exists";
    if (info.dying) return "domain is dying";
    return undefined;
  } catch (err) {
    if (err instanceof XenError && err.kind === "NoSuchDomain") return "domain no longer exists";
    throw err;
  }
}

export class GuestLiveness {
  readonly #watch: XenStoreWatch;
  readonly #state: { closed: boolean };

  private constructor(watch: XenStoreWatch, state: { closed: boolean }) {
    this.#watch = watch;
    this.#state = state;
  }

  /**
   * Watches `@releaseDomain`; `onGone(domid, reason)` is called for each of `guests()` found gone. A failed
   * check is logged and retried at the next event.
   */
  static async start(
    xs: XenStore,
    xen: Xen,
    guests: () => Iterable<number>,
    onGone: (domid: number, reason: string) => void,
    logger: Logger = noopLogger,
  ): Promise<GuestLiveness> {
    const state = { closed: false };
    const check = (): void => {
      if (state.closed) return;
      for (const domid of [...guests()]) {
        let reason: string | undefined;
        try {
          reason = guestGone(xen, domid);
        } catch (err) {
          logger.warn("cannot query the guest's state", { domid, error: err });
          continue;
        }
        if (reason !== undefined) {
          logger.info("guest released by xenstored", { domid, reason });
          onGone(domid, reason);
        }
      }
    };
    const watch = await xs.watch("@releaseDomain", { onChange: check });
    return new GuestLiveness(watch, state);
  }

  async close(): Promise<void> {
    if (this.#state.closed) return;
    this.#state.closed = true;
    await this.#watch.close();
  }
}
