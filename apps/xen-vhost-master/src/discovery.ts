// Finds the virtio-mmio devices the toolstack creates for guests, by watching XenStore. Two layouts exist:
//
//  - xl/libxl >= 4.18, `virtio = ["type=virtio,device22, transport=mmio, grant_usage=1"]`:
//      /local/domain/<backend>/backend/virtio/<domid>/<devid>/{type,base,irq,grant_usage,transport,state,...}
//    (libxl_virtio.c; `type` is the device-tree compatible "virtio,device<hex id>").
//  - xl/libxl 4.17, `disk = ["backendtype=standalone, specification=virtio, ..."]`:
//      /local/domain/<backend>/backend/virtio_disk/<domid>/<vdev>/{frontend,state,params,...}
//    libxl writes no base/irq there: the first device gets GUEST_VIRTIO_MMIO_BASE (0x02000000) and
//    GUEST_VIRTIO_MMIO_SPI_FIRST (33) (xen/include/public/arch-arm.h), and the device type is block.
//
// Readiness is driven by watches, never by sleeps: a device is announced once every node it needs is
// present (libxl writes them in one transaction, but a watch may fire between other writers' steps).
import { EventEmitter } from "eventemitter3";
import { noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import { parseDtCompatible } from "@xen-vhost/virtio-mmio";
import type { XenStore, XenStoreWatch } from "@xen-vhost/xen-sys";

/** include/xen/interface/io/xenbus.h enum xenbus_state. */
export const XenbusState = {
  Unknown: 0,
  Initialising: 1,
  InitWait: 2,
  Initialised: 3,
  Connected: 4,
  Closing: 5,
  Closed: 6,
  Reconfiguring: 7,
  Reconfigured: 8,
} as const;
export type XenbusStateValue = (typeof XenbusState)[keyof typeof XenbusState];

/** xen/include/public/arch-arm.h: where libxl places virtio-mmio devices of an Arm guest. */
export const GUEST_VIRTIO_MMIO_BASE = 0x0200_0000n;
export const GUEST_VIRTIO_MMIO_SIZE = 0x200n;
export const GUEST_VIRTIO_MMIO_SPI_FIRST = 33;

export type XenstoreLayout = "virtio" | "virtio_disk";

export interface DiscoveredDevice {
  /** "<layout>/<domid>/<devid>", unique per device. */
  readonly key: string;
  readonly layout: XenstoreLayout;
  readonly domid: number;
  readonly devid: string;
  /** Absolute backend path. */
  readonly backendPath: string;
  /** Virtio device ID; undefined for a 4.17 `virtio_disk` (block unless configured otherwise). */
  readonly deviceId: number | undefined;
  /** MMIO base and SPI, from xenstore, or libxl's allocation rule for the 4.17 layout. */
  readonly base: bigint;
  readonly irq: number;
  /** The toolstack asked for grant mappings (`grant_usage` = 1). */
  readonly grantUsage: boolean;
  /** Every other node of the backend directory, for configuration (e.g. `params`). */
  readonly nodes: Readonly<Record<string, string>>;
}

export interface DiscoveryEvents {
  /** A device is fully described in XenStore and waits for a backend. */
  added: [device: DiscoveredDevice];
  /** The device's backend directory disappeared, or the toolstack set its state to Closing/Closed. */
  removed: [key: string, reason: string];
}

export interface DiscoveryOptions {
  /** The domain the backends live in (default 0, dom0). */
  backendDomid?: number;
  logger?: Logger;
}

/** Parses a decimal or 0x-prefixed number as xl writes it. */
export function parseXsNumber(text: string | undefined): bigint | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  if (!/^(0[xX][0-9a-fA-F]+|[0-9]+)$/.test(t)) return undefined;
  return BigInt(t);
}

/** Watches `backend/virtio` and `backend/virtio_disk` of the backend domain and reports devices. */
export class XenbusDiscovery extends EventEmitter<DiscoveryEvents> {
  readonly #store: XenStore;
  readonly #log: Logger;
  readonly #root: string;
  readonly #watches: XenStoreWatch[] = [];
  readonly #known = new Map<string, DiscoveredDevice>();
  #scan: Promise<void> = Promise.resolve();
  #rescanQueued = false;
  #closed = false;

  constructor(store: XenStore, options: DiscoveryOptions = {}) {
    super();
    this.#store = store;
    this.#log = options.logger ?? noopLogger;
    this.#root = `/local/domain/${options.backendDomid ?? 0}/backend`;
  }

  /** The devices announced and not removed. */
  get devices(): DiscoveredDevice[] {
    return [...this.#known.values()];
  }

  /** Registers the watches; the first scan runs from their initial events. */
  async start(): Promise<void> {
    for (const layout of ["virtio", "virtio_disk"] as const) {
      const w = await this.#store.watch(`${this.#root}/${layout}`, { onChange: () => this.#queueRescan() });
      this.#watches.push(w);
    }
  }

  /** Writes the backend's xenbus `state`. */
  async setState(device: DiscoveredDevice, state: XenbusStateValue): Promise<void> {
    await this.#store.write(`${device.backendPath}/state`, String(state));
  }

  /** Stops watching (state can still be written with setState). */
  async stop(): Promise<void> {
    this.#closed = true;
    const ws = this.#watches.splice(0);
    await Promise.allSettled(ws.map((w) => w.close()));
    await this.#scan;
  }

  async close(): Promise<void> {
    await this.stop();
  }

  /** Coalesces watch bursts (libxl writes a dozen nodes per device) into one scan at a time. */
  #queueRescan(): void {
    if (this.#rescanQueued || this.#closed) return;
    this.#rescanQueued = true;
    this.#scan = this.#scan.then(async () => {
      this.#rescanQueued = false;
      if (this.#closed) return;
      try {
        await this.#rescan();
      } catch (err) {
        this.#log.warn("xenstore scan failed", { error: String(err) });
      }
    });
  }

  async #rescan(): Promise<void> {
    const seen = new Set<string>();
    for (const layout of ["virtio", "virtio_disk"] as const) {
      const dir = `${this.#root}/${layout}`;
      for (const d of await this.#list(dir)) {
        const domid = Number(d);
        if (!Number.isInteger(domid) || domid < 0 || domid > 0x7fef) continue;
        const devids = await this.#list(`${dir}/${d}`);
        // The 4.17 layout allocates MMIO slots in device order; sort like libxl does (numeric vdev).
        devids.sort((a, b) => Number(a) - Number(b));
        for (const [slot, devid] of devids.entries()) {
          const key = `${layout}/${domid}/${devid}`;
          const dev = await this.#describe(layout, domid, devid, slot);
          if (!dev) continue; // not complete yet, or closing
          seen.add(key);
          if (!this.#known.has(key)) {
            this.#known.set(key, dev);
            this.#log.info("device appeared", { key, deviceId: dev.deviceId, base: `0x${dev.base.toString(16)}`, irq: dev.irq });
            this.emit("added", dev);
          }
        }
      }
    }
    for (const [key, dev] of this.#known) {
      if (seen.has(key)) continue;
      this.#known.delete(key);
      const state = await this.#store.tryRead(`${dev.backendPath}/state`);
      const reason = state === undefined ? "backend directory removed" : `state ${state}`;
      this.#log.info("device removed", { key, reason });
      this.emit("removed", key, reason);
    }
  }

  async #list(path: string): Promise<string[]> {
    try {
      return await this.#store.directory(path);
    } catch (err) {
      if ((err as { code?: string }).code === "ENOENT") return [];
      throw err;
    }
  }

  async #describe(layout: XenstoreLayout, domid: number, devid: string, slot: number): Promise<DiscoveredDevice | undefined> {
    const backendPath = `${this.#root}/${layout}/${domid}/${devid}`;
    const nodes: Record<string, string> = {};
    for (const name of await this.#list(backendPath)) {
      const v = await this.#store.tryRead(`${backendPath}/${name}`);
      if (v !== undefined) nodes[name] = v;
    }
    const state = Number(nodes["state"] ?? XenbusState.Unknown);
    if (state >= XenbusState.Closing) return undefined;
    let deviceId: number | undefined;
    let base: bigint | undefined;
    let irq: bigint | undefined;
    if (layout === "virtio") {
      if (nodes["type"] === undefined || nodes["base"] === undefined || nodes["irq"] === undefined) return undefined;
      deviceId = parseDtCompatible(nodes["type"]);
      base = parseXsNumber(nodes["base"]);
      irq = parseXsNumber(nodes["irq"]);
      if (deviceId === undefined || base === undefined || irq === undefined) {
        this.#log.warn("malformed virtio backend entry", { backendPath, type: nodes["type"], base: nodes["base"], irq: nodes["irq"] });
        return undefined;
      }
    } else {
      // libxl 4.17 writes state=1 with the rest (one transaction) and then waits for InitWait; the bridge
      // moves it on to Connected once the guest's driver found the device. No state yet: not complete.
      if (state < XenbusState.Initialising || state > XenbusState.Connected) return undefined;
      base = parseXsNumber(nodes["base"]) ?? GUEST_VIRTIO_MMIO_BASE + BigInt(slot) * GUEST_VIRTIO_MMIO_SIZE;
      irq = parseXsNumber(nodes["irq"]) ?? BigInt(GUEST_VIRTIO_MMIO_SPI_FIRST + slot);
    }
    return {
      key: `${layout}/${domid}/${devid}`,
      layout,
      domid,
      devid,
      backendPath,
      deviceId,
      base,
      irq: Number(irq),
      grantUsage: nodes["grant_usage"] === "1",
      nodes,
    };
  }
}
