// The bridge: for each guest an IOREQ server, its notifier and a foreign mapping of its RAM; for each device
// a vhost-user backend behind a virtio-mmio register file in the guest's MMIO window. Many guests and
// devices share one process and one event loop; one failing device never stops the others.
import { EventEmitter } from "eventemitter3";
import { Xen, XenStore, type XenTransport } from "@xen-vhost/xen-sys";
import { discoverGuestRam, guestMemoryFromLayout, readConfiguredRamBytes, type XenGuestMemory } from "@xen-vhost/vm-memory-xen";
import { IoreqServer, XenNotifier, type Irqfd } from "@xen-vhost/ioreq-eventfd";
import { VirtioMmioTransport, VirtioStatus, deviceType, bit, VirtioFeature, VIRTIO_MMIO_WINDOW, type QueueConfig } from "@xen-vhost/virtio-mmio";
import { Frontend, fromCRegion } from "@xen-vhost/vhost-user-master";
import { VhostUserDevice } from "./vhost-user-device.js";
import { ShadowGuestMemory } from "./shadow-grants.js";
import { BackendProcess } from "./backend-process.js";
import { socketFor, type BridgeConfig, type DeviceConfig } from "./config.js";
import { XenbusDiscovery, XenbusState, type DiscoveredDevice, type XenbusStateValue } from "./discovery.js";
import type { JsonLogger } from "./log.js";
import type { CounterSource } from "./metrics.js";
import { QueueDoorbells } from "./queue-doorbells.js";
import { GuestLiveness } from "./guest-liveness.js";
import { sharedMemoryRegions } from "./shared-memory.js";
import { DeviceMemory } from "./device-memory.js";
import { suppliedConfig } from "./device-config.js";

export interface BridgeEvents {
  /** A device's driver set DRIVER_OK and the backend runs. */
  deviceReady: [key: string];
  /** A device was torn down (guest gone, backend gone for good, or shutdown). */
  deviceRemoved: [key: string, reason: string];
}

/** Where a device lives and what serves it. */
export interface DevicePlacement {
  key: string;
  domid: number;
  deviceId: number;
  base: bigint;
  irq: number;
  config: DeviceConfig;
  /** The xenstore entry it came from, if discovered. */
  discovered?: DiscoveredDevice;
}

interface Guest {
  domid: number;
  server: IoreqServer;
  notifier: XenNotifier;
  memory: XenGuestMemory;
  devices: Set<string>;
}

interface RunningDevice {
  placement: DevicePlacement;
  device: VhostUserDevice;
  mmio: VirtioMmioTransport;
  kicks: QueueDoorbells;
  mem: DeviceMemory;
  irq: Irqfd;
  unmap: () => void;
  backend: BackendProcess | undefined;
  counters: { ioreqs: number; kicks: number; interrupts: number; configReads: number; errors: number };
  /** The xenbus state says Connected (written once). */
  connected: boolean;
}

export interface BridgeOptions {
  config: BridgeConfig;
  /** The way to Xen: privcmd in dom0, or a simulator's transport. */
  transport: XenTransport;
  /** XenStore socket (default: xen-sys's default, /var/run/xenstored/socket or /dev/xen/xenbus). */
  xenstorePath?: string;
  logger: JsonLogger;
}

export class Bridge extends EventEmitter<BridgeEvents> {
  readonly #opts: BridgeOptions;
  readonly #log: JsonLogger;
  readonly xen: Xen;
  #xs: XenStore | undefined;
  #discovery: XenbusDiscovery | undefined;
  #liveness: GuestLiveness | undefined;
  readonly #guests = new Map<number, Guest>();
  readonly #devices = new Map<string, RunningDevice>();
  readonly #starting = new Map<string, Promise<void>>();
  /** Per device type, how many discovered devices got a directory-prefix socket (xen-vhost-frontend's N). */
  readonly #socketIndex = new Map<number, number>();
  #closed = false;

  constructor(options: BridgeOptions) {
    super();
    this.#opts = options;
    this.#log = options.logger;
    this.xen = Xen.open({ transport: options.transport, logger: this.#log.child({ module: "xen-sys" }) });
  }

  /** Starts static devices, and watches xenstore for the others. */
  async start(): Promise<void> {
    const cfg = this.#opts.config;
    for (const d of cfg.devices) {
      if (d.domid === undefined || d.mmioBase === undefined || d.irq === undefined || d.deviceId === undefined) continue;
      const key = `static/${d.domid}/${d.mmioBase.toString(16)}`;
      await this.#startDevice({ key, domid: d.domid, deviceId: d.deviceId, base: d.mmioBase, irq: d.irq, config: d });
    }
    if (!cfg.discovery) return;
    this.#xs = await XenStore.open({
      ...(this.#opts.xenstorePath ? { socketPath: this.#opts.xenstorePath } : {}),
      reconnect: true,
      logger: this.#log.child({ module: "xenstore" }),
    });
    const disc = new XenbusDiscovery(this.#xs, { backendDomid: cfg.backendDomid, logger: this.#log.child({ module: "discovery" }) });
    this.#discovery = disc;
    disc.on("added", (dev) => void this.#onDiscovered(dev));
    disc.on("removed", (key, reason) => void this.removeDevice(key, reason));
    await disc.start();
    // A guest destroyed without the toolstack removing its devices still goes (xenstored's @releaseDomain).
    this.#liveness = await GuestLiveness.start(this.#xs, this.xen, () => this.#guests.keys(), (domid, reason) => void this.#dropGuest(domid, `guest gone: ${reason}`), this.#log.child({ module: "liveness" }));
  }

  /** Picks the configured backend for a discovered device: first one whose type matches (or is unset). */
  #configFor(dev: DiscoveredDevice): DeviceConfig | undefined {
    return this.#opts.config.devices.find(
      (d) => d.domid === undefined && (d.deviceId === undefined || dev.deviceId === undefined || d.deviceId === dev.deviceId),
    );
  }

  async #onDiscovered(dev: DiscoveredDevice): Promise<void> {
    const config = this.#configFor(dev);
    const deviceId = dev.deviceId ?? config?.deviceId ?? deviceType("blk")!.id;
    if (!config) {
      this.#log.warn("no backend configured for this device type; leaving it alone", { device: dev.key, deviceId });
      return;
    }
    const placement: DevicePlacement = { key: dev.key, domid: dev.domid, deviceId, base: dev.base, irq: dev.irq, config, discovered: dev };
    const disc = this.#discovery;
    // InitWait as soon as the device is ours, as a xenbus backend does when it probes: the set-up below
    // (the guest's RAM mapped, the ioreq server, the backend's negotiation) takes seconds on a loaded host,
    // and libxl 4.17 fails `xl create` if a virtio_disk backend is not in InitWait within ~10 s.
    try {
      await disc?.setState(dev, XenbusState.InitWait);
    } catch (err) {
      this.#log.warn("cannot update xenbus state", { device: dev.key, error: err });
    }
    try {
      await this.#startDevice(placement);
    } catch {
      // #startDevice logged why. Closed tells the toolstack nobody serves the device (a create still
      // waiting fails instead of starting a guest whose device would never answer).
      if (!this.#closed) await disc?.setState(dev, XenbusState.Closed).catch(() => undefined);
      return;
    }
    // Connected: the device is served. xl >= 4.18 does not wait for the backend. libxl 4.17 waits for
    // exactly InitWait (libxl__ev_devstate_wait compares for equality, reading the node when its watch
    // fires), so a Connected written before it looked would fail the create: for that layout the device
    // goes Connected when the guest's driver first acknowledges it (the guest runs only after the create).
    if (dev.layout === "virtio") await disc?.setState(dev, XenbusState.Connected).catch((e: unknown) => this.#log.warn("cannot update xenbus state", { device: dev.key, error: e }));
  }

  /** The guest's driver acknowledged a discovered device: libxl is past its wait, so it may go Connected. */
  #driverFound(p: DevicePlacement): void {
    const dev = p.discovered;
    const running = this.#devices.get(p.key);
    if (!dev || dev.layout !== "virtio_disk" || !running || running.connected) return;
    running.connected = true;
    void this.#discovery?.setState(dev, XenbusState.Connected).catch((e: unknown) => this.#log.warn("cannot update xenbus state", { device: p.key, error: e }));
  }

  #socketPath(p: DevicePlacement): string {
    const s = p.config.socket;
    if (!s.endsWith("/")) return s;
    const n = this.#socketIndex.get(p.deviceId) ?? 0;
    this.#socketIndex.set(p.deviceId, n + 1);
    return socketFor(s, p.deviceId, n);
  }

  async #guest(domid: number): Promise<Guest> {
    const existing = this.#guests.get(domid);
    if (existing) return existing;
    const log = this.#log.child({ domid });
    // The toolstack's configured size (memory/static-max) is the truth when XenStore is at hand; page
    // counts from getdomaininfo are the fallback (they move with ballooning).
    const ramBytes = this.#xs ? await readConfiguredRamBytes(this.#xs, domid) : undefined;
    const again = this.#guests.get(domid);
    if (again) return again;
    const layout = discoverGuestRam(this.xen, domid, ramBytes !== undefined ? { ramBytes } : {});
    log.info("guest RAM", { banks: layout.banks.map((b) => ({ base: b.base, size: b.size })), source: layout.source });
    // Foreign-map all of RAM before the guest can probe: mapping late can time out the guest kernel.
    const memory = guestMemoryFromLayout(this.xen.transport, layout, { logger: log });
    let server: IoreqServer | undefined;
    try {
      // The transport is shared with other guests and sysctls, so it is not restricted to this guest;
      // the event-channel fd is (IOCTL_EVTCHN_RESTRICT_DOMID).
      server = IoreqServer.create({ xen: this.xen, domid, restrictTransport: false, logger: log.child({ module: "ioreq" }) });
      const notifier = new XenNotifier(server, { logger: log.child({ module: "notifier" }) });
      const guest: Guest = { domid, server, notifier, memory, devices: new Set() };
      server.on("close", (cause) => {
        if (cause) log.error("ioreq server failed", { error: cause });
        void this.#dropGuest(domid, cause ? `ioreq server failed: ${cause.message}` : "ioreq server closed");
      });
      this.#guests.set(domid, guest);
      return guest;
    } catch (err) {
      server?.close();
      memory.close();
      throw err;
    }
  }

  async #startDevice(p: DevicePlacement): Promise<void> {
    if (this.#devices.has(p.key) || this.#starting.has(p.key)) return;
    const run = this.#startDeviceNow(p).finally(() => this.#starting.delete(p.key));
    this.#starting.set(p.key, run);
    return run;
  }

  async #startDeviceNow(p: DevicePlacement): Promise<void> {
    const log = this.#log.child({ device: p.key, type: deviceType(p.deviceId)?.name ?? p.deviceId });
    const undo: (() => void)[] = [];
    try {
      const socket = this.#socketPath(p);
      let backend: BackendProcess | undefined;
      if (p.config.backendCmd) {
        backend = new BackendProcess({ command: p.config.backendCmd, socket, logger: log.child({ module: "backend" }) });
        await backend.start();
        const b = backend;
        undo.push(() => void b.stop());
      }
      const guest = await this.#guest(p.domid);
      // Shadow mode rebuilds its rings for every reconnection attempt (VhostUserDevice.restoreVringBase).
      const hook: { restore?: (queue: number, last: number) => number } = {};
      const frontendOptions = { logger: log.child({ module: "vhost-user" }), reconnect: true, restoreVringBase: (q: number, last: number) => hook.restore?.(q, last) ?? last };
      const frontend = p.config.socketMode === "server" ? await Frontend.listen(socket, frontendOptions) : await Frontend.connect(socket, frontendOptions);
      undo.push(() => frontend.close());
      const type = deviceType(p.deviceId);
      // Foreign RAM or grants, from the configuration, xenstore's grant_usage and the driver's ring addresses.
      const mem = new DeviceMemory({ transport: this.xen.transport, domid: p.domid, ram: guest.memory, mode: p.config.memory, grantUsage: p.discovered?.grantUsage ?? false, logger: log.child({ module: "memory" }) });
      undo.push(() => mem.close());
      const kicks = new QueueDoorbells(guest.notifier, p.base);
      undo.push(() => kicks.close());
      const device = await VhostUserDevice.create({
        frontend,
        deviceId: p.deviceId,
        defaultQueues: type?.queues ?? 1,
        queueMaxSize: Math.min(p.config.queueMaxSize, type?.queueMax ?? p.config.queueMaxSize),
        configSize: type?.configSize ?? 0,
        memory: () => mem.regions().map(fromCRegion),
        translate: (gpa, len) => mem.translate(gpa, len),
        extraFeatures: mem.offersAccessPlatform ? bit(VirtioFeature.ACCESS_PLATFORM) : 0n,
        // Stock backends (virtiofsd, DPDK) have no config space: the bridge supplies the fs tag / net MAC.
        suppliedConfig: (queues) => suppliedConfig(p.deviceId, p.config, queues),
        requireProtocolFeatures: ["XEN_MMAP"],
        // Without XEN_MMAP (stock backends) the device relays through shadow rings (shadow-rings.ts).
        shadow: p.config.shadow,
        guestMemory: () => ShadowGuestMemory.create(this.xen.transport, p.domid, guest.memory, log.child({ module: "grants" })),
        ownsGuestMemory: true,
        kickEventFd: (q) => {
          const k = kicks.eventfd(q);
          if (k.created) log.debug("queue doorbell", { queue: q, path: k.kind });
          return k.eventfd;
        },
        logger: log.child({ module: "device" }),
      });
      undo.push(() => device.close());
      if (!device.configSupplied && (p.config.fs || p.config.net)) log.warn("the backend serves its own config space (CONFIG protocol feature); the configured fs/net options are not used");
      hook.restore = (q, last) => device.restoreVringBase(q, last);
      const validateQueue = (q: QueueConfig): string | undefined => mem.validate(q);
      const shm = await sharedMemoryRegions(frontend, log);
      const mmio = new VirtioMmioTransport(device, { validateQueue, sharedMemoryRegions: () => shm, logger: log.child({ module: "virtio-mmio" }) });
      const irq = guest.notifier.irqfd({ line: p.irq, trigger: "level" });
      undo.push(() => irq.close());
      const counters = { ioreqs: 0, kicks: 0, interrupts: 0, configReads: 0, errors: 0 };
      device.on("used", () => mmio.signalUsedBuffers());
      device.on("configChange", () => mmio.signalConfigChange());
      device.on("failed", (cause) => mmio.setNeedsReset(`backend failed: ${cause.message}`));
      device.on("broken", (cause) => mmio.setNeedsReset(`shadow queue stopped: ${cause.message}`));
      mmio.on("interrupt", (level) => {
        if (level) {
          counters.interrupts++;
          irq.raise();
        } else irq.deassert();
      });
      mmio.on("status", (s) => {
        if (s === 0) mem.reset();
        if (s & VirtioStatus.ACKNOWLEDGE) this.#driverFound(p);
        if (s & 4) this.emit("deviceReady", p.key);
      });
      const range = guest.server.mapMmio(p.base, Number(VIRTIO_MMIO_WINDOW), {
        read: (offset, size) => {
          counters.ioreqs++;
          return mmio.read(offset, size);
        },
        write: (offset, size, value) => {
          counters.ioreqs++;
          return mmio.write(offset, size, value);
        },
      });
      undo.push(() => range.unmap());
      guest.devices.add(p.key);
      this.#devices.set(p.key, { placement: p, device, mmio, kicks, irq, unmap: () => range.unmap(), mem, backend, counters, connected: false });
      log.info("device ready for the guest", { base: p.base, irq: p.irq, socket, queues: device.numQueues, features: device.features });
    } catch (err) {
      log.error("device set-up failed", { error: err });
      for (const fn of undo.reverse()) {
        try {
          fn();
        } catch (e) {
          log.warn("undoing a set-up step failed", { error: e });
        }
      }
      const g = this.#guests.get(p.domid);
      if (g && g.devices.size === 0) await this.#dropGuest(p.domid, "no devices left");
      throw err;
    }
  }

  /**
   * Tears one device down; the guest's ioreq server goes with its last device. The backend's xenbus state
   * says what happened: Closed when the toolstack removed the device, Initialising when the bridge itself
   * stops (so a restarted bridge picks the device up again).
   */
  async removeDevice(key: string, reason: string, state: XenbusStateValue = XenbusState.Closed): Promise<void> {
    await this.#starting.get(key)?.catch(() => undefined);
    const d = this.#devices.get(key);
    if (!d) return;
    this.#devices.delete(key);
    const log = this.#log.child({ device: key });
    log.info("removing device", { reason });
    // Each step runs even if an earlier one fails: for a guest that is already gone, lowering its interrupt
    // line or unregistering its doorbells fails with ESRCH, and the rest must still be released.
    for (const [what, release] of [["MMIO range", () => d.unmap()], ["doorbells", () => d.kicks.close()], ["interrupt", () => d.irq.close()], ["backend connection", () => d.device.close()], ["grant mappings", () => d.mem.close()]] as const) {
      try {
        release();
      } catch (err) {
        log.warn(`releasing the ${what} failed`, { error: err });
      }
    }
    await d.backend?.stop();
    if (d.placement.discovered && this.#discovery) {
      await this.#discovery.setState(d.placement.discovered, state).catch((err: unknown) => log.warn("cannot update xenbus state", { error: err }));
    }
    this.emit("deviceRemoved", key, reason);
    const g = this.#guests.get(d.placement.domid);
    if (g) {
      g.devices.delete(key);
      if (g.devices.size === 0) await this.#dropGuest(g.domid, "no devices left");
    }
  }

  async #dropGuest(domid: number, reason: string): Promise<void> {
    const g = this.#guests.get(domid);
    if (!g) return;
    this.#guests.delete(domid);
    for (const key of [...g.devices]) await this.removeDevice(key, reason);
    // Each step runs even if an earlier one fails: a guest's teardown must release everything it can and
    // never take the other guests down with an exception.
    for (const [what, release] of [["notifier", () => g.notifier.close()], ["ioreq server", () => g.server.close()], ["guest memory", () => g.memory.close()]] as const) {
      try {
        release();
      } catch (err) {
        this.#log.error(`releasing the ${what} failed`, { domid, error: err });
      }
    }
    this.#log.info("guest released", { domid, reason });
  }

  /** Per-device counters for the metrics endpoint. */
  counters: CounterSource = () =>
    [...this.#devices.values()].map((d) => ({
      labels: { device: d.placement.key, domid: d.placement.domid, type: deviceType(d.placement.deviceId)?.name ?? String(d.placement.deviceId) },
      // kicks: QueueNotify writes the register file saw plus those the userspace doorbell relay took;
      // doorbells completed in the kernel are not visible to this process (kicksOffloadedQueues says how many).
      counters: {
        ...d.counters,
        kicks: d.mmio.counters.notifies + d.kicks.kicks,
        kicksOffloadedQueues: d.kicks.offloaded,
        configReads: d.mmio.counters.configReads,
        errors: d.mmio.counters.badAccesses,
      },
    }));

  /**
   * Shadow mode's relay counters per device and queue (ShadowRings.stats()): guest chains posted to and
   * completed from the backend's shadow ring, bytes copied each way, stalls, requests re-posted or failed
   * after a backend loss, backend kicks and guest interrupts, and the current in-flight count and pool use.
   * Empty for direct-mode devices and before the first DRIVER_OK; the counters add up over guest resets.
   */
  shadowCounters: CounterSource = () =>
    [...this.#devices.values()].flatMap((d) => {
      if (!d.device.shadow) return [];
      const stats = d.device.shadowStats();
      const type = deviceType(d.placement.deviceId)?.name ?? String(d.placement.deviceId);
      return [...stats].map(([queue, s]) => ({
        labels: { device: d.placement.key, domid: d.placement.domid, type, queue },
        counters: {
          shadowPosted: s.posted, shadowCompleted: s.completed, shadowBytesIn: s.bytesIn, shadowBytesOut: s.bytesOut,
          shadowStalls: s.stalls, shadowReposted: s.reposted, shadowFailed: s.failed, shadowKicks: s.kicks,
          shadowInterrupts: s.interrupts,
        },
        gauges: { shadowInFlight: s.inFlight, shadowPoolBytesUsed: s.poolUsed },
      }));
    });

  /** Per-guest ioreq statistics (the IOREQ server's loop: every access, doorbells relayed, bad input). */
  guestCounters: CounterSource = () =>
    [...this.#guests.values()].map((g) => {
      const s = g.server.stats;
      return {
        labels: { domid: g.domid },
        counters: { ioreqsHandled: s.handled, doorbells: s.doorbells, spurious: s.spurious, unmapped: s.unmapped, badIoreqs: s.badSize + s.badRep + s.unknownType + s.badVcpu, handlerErrors: s.handlerErrors },
      };
    });

  /** Orderly teardown: every device, every ioreq server, the xenstore watches. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#discovery?.stop();
    await this.#liveness?.close().catch(() => undefined);
    await Promise.allSettled([...this.#starting.values()]);
    for (const key of [...this.#devices.keys()]) await this.removeDevice(key, "shutdown", XenbusState.Initialising);
    for (const domid of [...this.#guests.keys()]) await this.#dropGuest(domid, "shutdown");
    this.#xs?.close();
    this.xen.close();
  }
}
