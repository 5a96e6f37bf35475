// The simulated hypervisor: decodes the real sysctl/domctl/dm_op bytes, answers in the real layouts, and
// keeps domains, event channels, ioreq servers and grant tables. Each method is one request of the sim
// socket protocol (src/protocol.ts); a HypervisorError (errno name) is the simulated -errno.
import {
  XEN_SYSCTL, XEN_SYSCTL_PAYLOAD_OFFSET, XenSysctl, XenSysctlGetdomaininfolist, XenSysctlPhysinfo, XEN_SYSCTL_PHYSCAP,
  XEN_DOMCTL_PAYLOAD_OFFSET, XenDomctl, xenDomctlGetdomaininfo, XEN_DOMINF, XenArchDomainconfigArm,
  XenArchDomainconfigX86, XEN_DMOP, XEN_DM_OP_PAYLOAD_OFFSET, XenDmOp, XenDmOpCreateIoreqServer,
  XenDmOpGetIoreqServerInfo, XenDmOpIoreqServerRange, XenDmOpSetIoreqServerState, XenDmOpDestroyIoreqServer,
  XenDmOpSetIrqLevel, XenDmOpNrVcpus, XenDmOpRemoteShutdown, XEN_DMOP_no_gfns, XENMEM_resource_ioreq_server,
  XENMEM_resource_grant_table, CONSOLEIO_read, CONSOLEIO_write, type XenArch,
} from "@xen-vhost/xen-sys";
import { FdWatcher, PollEvents, close as closeFd, read as readFd, type StructLayout, type FieldSpec } from "@xen-vhost/vmm-sys-util";
import { refuse } from "../error.js";
import {
  GNTST, GRANT_ENTRY_SIZE, GTF_permit_access, GTF_readonly, GTF_reading, GTF_type_mask, GTF_writing, GUEST_RAM0_BASE,
  GUEST_RAM0_SIZE, GUEST_RAM1_BASE, NR_LOCAL_IRQS, PAGE_SIZE, DOMPAGE_PENDING, raisePending, type EndpointDescription,
} from "../layout.js";
import { Domain, type DomainConfig } from "./domain.js";
import { EvtchnDeviceRec, bindInterdomain, closePort, endpointOf, packEndpoints, type Endpoint } from "./evtchn.js";
import { IoreqServer, MAX_NR_IOREQ_SERVERS } from "./ioreq-server.js";

/** Interface versions of the simulated Xen release (public/sysctl.h, public/domctl.h). */
export const XEN_RELEASES = {
  "4.17": { sysctl: 0x15, domctl: 0x15 },
  "4.18": { sysctl: 0x15, domctl: 0x16 },
  "4.19": { sysctl: 0x15, domctl: 0x17 },
  /** Not a Xen release: versions no client knows, for tests of a failed interface-version probe. */
  unreleased: { sysctl: 0xff, domctl: 0xff },
} as const;
export type XenRelease = keyof typeof XEN_RELEASES;

export interface HypervisorConfig {
  /** The ABI of the simulated hypervisor (default arm64: the Arm guest layout). */
  arch?: XenArch;
  release?: XenRelease;
  domains?: DomainConfig[];
}

/** A reply: a JSON-able result and fds to send with it (owned by the simulator; sending copies them). */
export interface Reply {
  result: unknown;
  fds?: number[];
}

/** One connected client (a bridge's SimTransport, a guest process, a test controller). */
export class Client {
  readonly id: number;
  /** The domain the client runs in: dom0 for transports. */
  readonly domid = 0;
  readonly evtchns = new Map<number, EvtchnDeviceRec>();
  readonly gntdevs = new Map<number, GntdevRec>();
  restrictDomid: number | undefined;
  attachedTo: Domain | undefined;
  /** privcmd irqfds: id -> the watcher on the client's eventfd (a dup received over SCM_RIGHTS). */
  readonly irqfds = new Map<number, { watcher: FdWatcher; fd: number }>();

  constructor(id: number) {
    this.id = id;
  }
}

interface GrantPin {
  dom: Domain;
  ref: number;
  readOnly: boolean;
}

interface GntdevRec {
  id: number;
  /** index -> pins, like gntdev's grant_map list (index = offset of the mapping in the device). */
  maps: Map<string, GrantPin[]>;
  nextIndex: bigint;
}

const DOMID_DOM0 = 0;

function bytesOf(v: unknown, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) refuse("EFAULT", `${what} missing`);
  return v;
}

function num(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isInteger(v)) refuse("EINVAL", `${what} is not an integer`);
  return v;
}

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function readPayload<F extends Record<string, FieldSpec>>(layout: StructLayout<F>, buf: Uint8Array) {
  const need = XEN_DM_OP_PAYLOAD_OFFSET + layout.size;
  if (buf.byteLength < need) refuse("EFAULT", `dm_op buffer of ${buf.byteLength} bytes, ${need} needed`);
  return layout.read(dv(buf), XEN_DM_OP_PAYLOAD_OFFSET);
}

export class Hypervisor {
  readonly arch: XenArch;
  readonly release: XenRelease;
  readonly domains = new Map<number, Domain>();
  /** Text written with console_io CONSOLEIO_write (Xen's console ring). */
  console = "";
  #nextDevice = 1;
  #nextDomid = 1;
  readonly #dom0: Domain;

  constructor(config: HypervisorConfig = {}) {
    this.arch = config.arch ?? "arm64";
    this.release = config.release ?? "4.17";
    // Domain-0: no RAM is simulated for it (nothing maps dom0 memory), one vCPU, running.
    this.#dom0 = new Domain(DOMID_DOM0, { name: "Domain-0", vcpus: 1, paused: false, grantFrames: 1 }, []);
    this.domains.set(0, this.#dom0);
    for (const d of config.domains ?? []) this.createDomain(d);
  }

  // ---- domains -------------------------------------------------------------------------------------------

  /** What `xl create` does for the sim: RAM0 (+RAM1) memfds, vCPUs, paused unless told otherwise. */
  createDomain(cfg: DomainConfig): Domain {
    const domid = cfg.domid ?? this.#nextDomid;
    if (!Number.isInteger(domid) || domid < 1 || domid >= 0x7ff0) refuse("EINVAL", `domid ${domid}`);
    if (this.domains.has(domid)) refuse("EEXIST", `domain ${domid} exists`);
    const ram = cfg.ram ?? 64 << 20;
    if (ram <= 0 || ram % PAGE_SIZE !== 0 || BigInt(ram) > GUEST_RAM0_SIZE) refuse("EINVAL", `ram ${ram} must be a page multiple <= 3 GiB`);
    const layout = [{ base: GUEST_RAM0_BASE, size: ram }];
    if (cfg.ram1 !== undefined) {
      if (cfg.ram1 <= 0 || cfg.ram1 % PAGE_SIZE !== 0) refuse("EINVAL", `ram1 ${cfg.ram1} must be a page multiple`);
      layout.push({ base: GUEST_RAM1_BASE, size: cfg.ram1 });
    }
    const vcpus = cfg.vcpus ?? 1;
    if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 128) refuse("EINVAL", `vcpus ${vcpus} must be 1..128`);
    const dom = new Domain(domid, cfg, layout);
    this.domains.set(domid, dom);
    this.#nextDomid = Math.max(this.#nextDomid, domid + 1);
    return dom;
  }

  domain(domid: number): Domain {
    const d = this.domains.get(domid);
    if (!d || d.dying) return refuse("ESRCH", `no domain ${domid}`);
    return d;
  }

  /** The target of a privileged op: exists, is not the caller, honours IOCTL_PRIVCMD_RESTRICT. */
  #remote(client: Client, domid: number): Domain {
    if (client.restrictDomid !== undefined && client.restrictDomid !== domid) refuse("EPERM", `restricted to domain ${client.restrictDomid}`);
    const d = this.domain(domid);
    // rcu_lock_remote_domain_by_id: a domain cannot target itself.
    if (d.domid === client.domid) refuse("EPERM", "cannot target the calling domain");
    return d;
  }

  /**
   * domain_kill. With `lingerMs` the domain stays listed as dying that long before it goes, as on real Xen
   * while something still holds its pages (e.g. a device model's foreign mappings): every operation on it
   * already fails with ESRCH, getdomaininfolist still reports it with XEN_DOMINF_dying.
   */
  destroyDomain(domid: number, options: { lingerMs?: number } = {}): void {
    const d = this.domain(domid);
    if (d.domid === 0) refuse("EINVAL", "cannot destroy dom0");
    const linger = options.lingerMs ?? 0;
    if (!Number.isInteger(linger) || linger < 0 || linger > 60_000) refuse("EINVAL", `lingerMs ${linger} must be 0..60000`);
    d.destroy();
    for (const s of d.ioreqServers.values()) s.release(d);
    d.ioreqServers.clear();
    for (const port of [...d.ports.keys()]) closePort(d, port, (id) => this.domains.get(id));
    if (linger === 0) {
      this.#reap(d);
      return;
    }
    const timer = setTimeout(() => {
      this.#dying.delete(d);
      this.#reap(d);
    }, linger);
    this.#dying.set(d, timer);
  }

  /** Dying domains waiting to go, with their timers. */
  readonly #dying = new Map<Domain, NodeJS.Timeout>();

  #reap(d: Domain): void {
    if (this.domains.get(d.domid) === d) this.domains.delete(d.domid);
    d.release();
  }

  /** SCHEDOP_shutdown from the guest, or `xl shutdown/reboot`: SHUTDOWN_poweroff 0 .. SHUTDOWN_soft_reset 5. */
  shutdownDomain(domid: number, reason: number): void {
    const d = this.domain(domid);
    if (d.domid === 0) refuse("EINVAL", "cannot shut dom0 down");
    // public/sched.h: SHUTDOWN_MAX 5.
    if (!Number.isInteger(reason) || reason < 0 || reason > 5) refuse("EINVAL", `shutdown reason ${reason}`);
    d.shutdown(reason);
  }

  #domainInfo(d: Domain): Record<string, unknown> {
    const down = d.dying || d.shutdownReason !== undefined;
    // dom0 is the caller of every hypercall the simulator answers, so one of its vCPUs is running now.
    const running = !d.paused && !down && (d.attached > 0 || d.domid === DOMID_DOM0);
    // common/domctl.c getdomaininfo: XEN_DOMINF_blocked only while every vCPU is blocked (not paused, not
    // shut down), and `d->shutdown_code << XEN_DOMINF_shutdownshift` always: a live domain's code is
    // SHUTDOWN_CODE_INVALID (~0u), so its flags read 0xffff.... as on the rig.
    const flags =
      ((d.dying ? XEN_DOMINF.dying : 0) |
        (d.shutdownReason !== undefined ? XEN_DOMINF.shutdown | (d.shutdownReason << 16) : 0xffff0000) |
        XEN_DOMINF.hvm_guest |
        XEN_DOMINF.hap |
        (d.paused ? XEN_DOMINF.paused : 0) |
        (running ? XEN_DOMINF.running : 0) |
        (!running && !d.paused && !down ? XEN_DOMINF.blocked : 0)) >>>
      0;
    const arch =
      this.arch === "arm64"
        // XEN_DOMCTL_CONFIG_GIC_V3 = 2; TEE none; nr_spis as configured.
        ? XenArchDomainconfigArm.encode({ gic_version: 2, tee_type: 0, nr_spis: d.nrSpis, clock_frequency: 0 })
        : XenArchDomainconfigX86.encode({ emulation_flags: 0, misc_flags: 0 });
    return {
      domain: d.domid, flags, tot_pages: d.currentPages(), max_pages: d.totPages(), outstanding_pages: 0n, shr_pages: 0n,
      paged_pages: 0n, shared_info_frame: 0n, cpu_time: process.hrtime.bigint() - d.createdAt, nr_online_vcpus: d.onlineVcpus,
      max_vcpu_id: d.vcpus - 1, ssidref: 0, handle: d.uuid, cpupool: 0, gpaddr_bits: this.arch === "arm64" ? 40 : 52,
      arch_config: arch,
    };
  }

  // ---- sysctl / domctl -----------------------------------------------------------------------------------

  sysctl(_client: Client, params: { op: Uint8Array; handles?: { offset: number; data: Uint8Array }[] }): Reply {
    const op = bytesOf(params.op, "sysctl op");
    if (op.byteLength < XenSysctl.size) refuse("EFAULT", "short struct xen_sysctl");
    const hdr = XenSysctl.decode(op);
    // xen/common/sysctl.c: op->interface_version != XEN_SYSCTL_INTERFACE_VERSION -> -EACCES.
    if (hdr.interface_version !== XEN_RELEASES[this.release].sysctl) refuse("EACCES", `sysctl interface 0x${hdr.interface_version.toString(16)}`);
    const handles = params.handles ?? [];
    const view = dv(op);
    switch (hdr.cmd) {
      case XEN_SYSCTL.getdomaininfolist: {
        const a = XenSysctlGetdomaininfolist.read(view, XEN_SYSCTL_PAYLOAD_OFFSET);
        const h = handles.find((x) => x.offset === XEN_SYSCTL_PAYLOAD_OFFSET + XenSysctlGetdomaininfolist.offsetOf("buffer"));
        const layout = xenDomctlGetdomaininfo(this.arch);
        const list = [...this.domains.values()].filter((d) => d.domid >= a.first_domain).sort((x, y) => x.domid - y.domid);
        const n = Math.min(list.length, a.max_domains);
        if (n > 0 && (!h || h.data.byteLength < n * layout.size)) refuse("EFAULT", "getdomaininfolist buffer too small");
        for (let i = 0; i < n; i++) layout.write(dv(h!.data), i * layout.size, this.#domainInfo(list[i]!));
        XenSysctlGetdomaininfolist.write(view, XEN_SYSCTL_PAYLOAD_OFFSET, { num_domains: n });
        return { result: { op, handles: handles.map((x) => x.data), rc: 0 } };
      }
      case XEN_SYSCTL.physinfo: {
        if (this.arch !== "arm64" && this.arch !== "x86_64") refuse("EINVAL");
        let total = 0n;
        for (const d of this.domains.values()) total += d.totPages();
        XenSysctlPhysinfo.write(view, XEN_SYSCTL_PAYLOAD_OFFSET, {
          threads_per_core: 1, cores_per_socket: 2, nr_cpus: 2, max_cpu_id: 1, nr_nodes: 1, max_node_id: 0, cpu_khz: 1_000_000,
          // arch/arm/sysctl.c arch_do_physinfo: hvm | hap; gnttab v1 only.
          capabilities: XEN_SYSCTL_PHYSCAP.hvm | XEN_SYSCTL_PHYSCAP.hap | XEN_SYSCTL_PHYSCAP.gnttab_v1,
          total_pages: total + 262144n, free_pages: 262144n, max_mfn: 0xfffffn,
        });
        return { result: { op, handles: handles.map((x) => x.data), rc: 0 } };
      }
      default:
        return refuse("ENOSYS", `sysctl cmd ${hdr.cmd} not simulated`);
    }
  }

  domctl(_client: Client, params: { op: Uint8Array }): Reply {
    const op = bytesOf(params.op, "domctl op");
    if (op.byteLength < XenDomctl.size) refuse("EFAULT", "short struct xen_domctl");
    const hdr = XenDomctl.decode(op);
    if (hdr.interface_version !== XEN_RELEASES[this.release].domctl) refuse("EACCES", `domctl interface 0x${hdr.interface_version.toString(16)}`);
    switch (hdr.cmd) {
      case 5: {
        // XEN_DOMCTL_getdomaininfo: the first domain with domid >= the requested one (common/domctl.c walks
        // the whole domain list, so a dying domain still answers, with XEN_DOMINF_dying).
        const d = [...this.domains.values()].filter((x) => x.domid >= hdr.domain).sort((x, y) => x.domid - y.domid)[0];
        if (!d) refuse("ESRCH", `no domain >= ${hdr.domain}`);
        xenDomctlGetdomaininfo(this.arch).write(dv(op), XEN_DOMCTL_PAYLOAD_OFFSET, this.#domainInfo(d));
        XenDomctl.write(dv(op), 0, { domain: d.domid });
        return { result: { op, rc: 0 } };
      }
      case 3: // XEN_DOMCTL_pausedomain
      case 4: // XEN_DOMCTL_unpausedomain
      case 2: { // XEN_DOMCTL_destroydomain
        const d = this.domain(hdr.domain);
        if (d.domid === 0) refuse("EINVAL", "cannot pause, unpause or destroy dom0");
        if (hdr.cmd === 3) d.pause();
        else if (hdr.cmd === 4) d.unpause();
        else this.destroyDomain(d.domid);
        return { result: { op, rc: 0 } };
      }
      default:
        return refuse("ENOSYS", `domctl cmd ${hdr.cmd} not simulated`);
    }
  }

  consoleIo(_client: Client, params: { cmd: number; data: Uint8Array }): Reply {
    const data = bytesOf(params.data, "console data");
    if (params.cmd === CONSOLEIO_write) {
      this.console += Buffer.from(data).toString("utf8");
      return { result: { rc: 0, data } };
    }
    if (params.cmd === CONSOLEIO_read) return { result: { rc: 0, data } };
    return refuse("ENOSYS", `console_io cmd ${params.cmd}`);
  }

  // ---- dm_op (xen/arch/*/dm.c, xen/common/ioreq.c) ----------------------------------------------------------

  dmOp(client: Client, params: { domid: number; bufs: Uint8Array[] }): Reply {
    const d = this.#remote(client, num(params.domid, "domid"));
    const bufs = params.bufs;
    if (!Array.isArray(bufs) || bufs.length === 0) refuse("EINVAL", "dm_op without buffers");
    const b0 = bytesOf(bufs[0], "dm_op buffer 0");
    if (b0.byteLength < XEN_DM_OP_PAYLOAD_OFFSET) refuse("EFAULT", "short struct xen_dm_op");
    const op = dv(b0).getUint32(XenDmOp.offsetOf("op"), true);
    const pad = dv(b0).getUint32(XenDmOp.offsetOf("pad"), true);
    if (pad !== 0) refuse("EINVAL", "xen_dm_op pad");
    const write = <F extends Record<string, FieldSpec>>(layout: StructLayout<F>, value: Parameters<StructLayout<F>["write"]>[2]): void => {
      // common dm.c copies the whole struct xen_dm_op back: a shorter buffer is -EFAULT (copy_buf_to_guest).
      if (b0.byteLength < XenDmOp.size) refuse("EFAULT", `dm_op buffer of ${b0.byteLength} bytes, ${XenDmOp.size} needed for the result`);
      layout.write(dv(b0), XEN_DM_OP_PAYLOAD_OFFSET, value);
    };
    const server = (id: number): IoreqServer => {
      const s = d.ioreqServers.get(id);
      if (!s) return refuse("ENOENT", `no ioreq server ${id} on domain ${d.domid}`);
      // ioreq.c: s->emulator != current->domain -> -EPERM
      if (s.emulatorDomid !== client.domid) return refuse("EPERM");
      return s;
    };
    switch (op) {
      case XEN_DMOP.create_ioreq_server: {
        const a = readPayload(XenDmOpCreateIoreqServer, b0);
        if (a.pad.some((x) => x !== 0)) refuse("EINVAL", "create_ioreq_server pad");
        if (a.handle_bufioreq > 2) refuse("EINVAL", `handle_bufioreq ${a.handle_bufioreq}`);
        let id = 0;
        while (id < MAX_NR_IOREQ_SERVERS && d.ioreqServers.has(id)) id++;
        if (id >= MAX_NR_IOREQ_SERVERS) refuse("ENOSPC", "every ioreq server slot is in use");
        d.ioreqServers.set(id, new IoreqServer(id, d, client.domid, a.handle_bufioreq));
        d.touch();
        write(XenDmOpCreateIoreqServer, { id });
        break;
      }
      case XEN_DMOP.get_ioreq_server_info: {
        const a = readPayload(XenDmOpGetIoreqServerInfo, b0);
        if ((a.flags & ~XEN_DMOP_no_gfns) !== 0) refuse("EINVAL", `flags 0x${a.flags.toString(16)}`);
        const s = server(a.id);
        // Legacy gfn-mapped ioreq pages are x86-only (arch/arm/ioreq.c arch_ioreq_server_map_pages: -EOPNOTSUPP);
        // the simulator never maps them into the guest, on either architecture.
        if ((a.flags & XEN_DMOP_no_gfns) === 0) refuse("EOPNOTSUPP", "ioreq gfns are not simulated; use XENMEM_acquire_resource");
        write(XenDmOpGetIoreqServerInfo, { bufioreq_port: s.bufioreq !== 0 ? s.bufioreqPort : 0, ioreq_gfn: 0n, bufioreq_gfn: 0n });
        break;
      }
      case XEN_DMOP.map_io_range_to_ioreq_server:
      case XEN_DMOP.unmap_io_range_from_ioreq_server: {
        const a = readPayload(XenDmOpIoreqServerRange, b0);
        if (a.pad !== 0) refuse("EINVAL", "range pad");
        const s = server(a.id);
        if (a.type > 2) refuse("EINVAL", `range type ${a.type}`);
        if (a.start > a.end) refuse("EINVAL", "start > end");
        if (op === XEN_DMOP.map_io_range_to_ioreq_server) {
          if (s.overlaps(a.type, a.start, a.end)) refuse("EEXIST", "range overlaps one of this server");
          s.ranges.push({ type: a.type, start: a.start, end: a.end });
        } else {
          // rangeset_contains_range else -ENOENT; then rangeset_remove_range (which may split a range).
          const r = s.ranges.find((x) => x.type === a.type && x.start <= a.start && a.end <= x.end);
          if (!r) refuse("ENOENT", "range not mapped");
          s.ranges.splice(s.ranges.indexOf(r), 1);
          if (r.start < a.start) s.ranges.push({ type: r.type, start: r.start, end: a.start - 1n });
          if (a.end < r.end) s.ranges.push({ type: r.type, start: a.end + 1n, end: r.end });
        }
        d.touch();
        break;
      }
      case XEN_DMOP.set_ioreq_server_state: {
        const a = readPayload(XenDmOpSetIoreqServerState, b0);
        if (a.pad !== 0) refuse("EINVAL", "set_ioreq_server_state pad");
        server(a.id).enabled = a.enabled !== 0;
        d.touch();
        break;
      }
      case XEN_DMOP.destroy_ioreq_server: {
        const a = readPayload(XenDmOpDestroyIoreqServer, b0);
        if (a.pad !== 0) refuse("EINVAL", "destroy_ioreq_server pad");
        const s = server(a.id);
        d.ioreqServers.delete(a.id);
        for (const p of [...s.ports, ...(s.bufioreq ? [s.bufioreqPort] : [])]) closePort(d, p, (id) => this.domains.get(id));
        s.release(d);
        d.touch();
        break;
      }
      case XEN_DMOP.set_irq_level: {
        // xen/arch/arm/dm.c: SPIs only (irq >= NR_LOCAL_IRQS and < vgic_num_irqs), level 0/1, pad zero.
        if (this.arch !== "arm64") refuse("EOPNOTSUPP", "set_irq_level is Arm-only");
        const a = readPayload(XenDmOpSetIrqLevel, b0);
        if (a.pad.some((x) => x !== 0)) refuse("EINVAL", "set_irq_level pad");
        if (a.irq < NR_LOCAL_IRQS || a.irq >= NR_LOCAL_IRQS + d.nrSpis) refuse("EINVAL", `irq ${a.irq} is not an SPI of domain ${d.domid}`);
        if (a.level > 1) refuse("EINVAL", `level ${a.level}`);
        if (d.setIrqLevel(a.irq, a.level === 1)) d.upcall.write(1);
        break;
      }
      case XEN_DMOP.nr_vcpus:
        write(XenDmOpNrVcpus, { vcpus: d.vcpus });
        break;
      case XEN_DMOP.remote_shutdown: {
        // domain_shutdown(d, reason): the vCPUs stop, the domain stays until the toolstack destroys it.
        const a = readPayload(XenDmOpRemoteShutdown, b0);
        d.shutdown(a.reason & 0xff);
        break;
      }
      default:
        // Everything else (track_dirty_vram, modified_memory, set_mem_type, inject_msi, ... on Arm) is not
        // simulated; Arm Xen itself answers -EOPNOTSUPP to the x86-only ones.
        refuse("EOPNOTSUPP", `dm_op ${op} not simulated`);
    }
    return { result: { bufs } };
  }

  // ---- foreign and resource mappings ---------------------------------------------------------------------

  /**
   * IOCTL_PRIVCMD_MMAPBATCH_V2: per-frame (memfd, offset), or the errno Xen gives a frame with no RAM behind
   * it (-EINVAL from p2m lookup in xenmem_add_to_physmap_one with XENMAPSPACE_gmfn_foreign).
   */
  mmapForeign(client: Client, params: { domid: number; gfns: Uint8Array }): Reply {
    const d = this.#remote(client, num(params.domid, "domid"));
    const raw = bytesOf(params.gfns, "gfns");
    if (raw.byteLength % 8 !== 0 || raw.byteLength === 0) refuse("EINVAL", "gfns");
    const gfns = new BigUint64Array(raw.slice().buffer);
    const fds: number[] = [];
    const fdIndex = new Uint8Array(gfns.length);
    const offsets = new BigUint64Array(gfns.length);
    const errors = new Int32Array(gfns.length);
    gfns.forEach((gfn, i) => {
      const at = d.locate(gfn);
      if (!at) {
        errors[i] = 22; // EINVAL
        fdIndex[i] = 255;
        return;
      }
      let k = fds.indexOf(at.bank.fd);
      if (k < 0) k = fds.push(at.bank.fd) - 1;
      fdIndex[i] = k;
      offsets[i] = BigInt(at.offset);
    });
    return {
      result: { fdIndex, offsets: new Uint8Array(offsets.buffer), errors: new Uint8Array(errors.buffer) },
      fds,
    };
  }

  /** IOCTL_PRIVCMD_MMAP_RESOURCE (XENMEM_acquire_resource, common/memory.c). */
  mmapResource(client: Client, params: { domid: number; type: number; id: number; frame: number; nr: number }): Reply {
    const d = this.#remote(client, num(params.domid, "domid"));
    if (params.type !== XENMEM_resource_ioreq_server) refuse("EOPNOTSUPP", `resource type ${params.type} not simulated`);
    const s = d.ioreqServers.get(params.id);
    if (!s) return refuse("ENOENT", `no ioreq server ${params.id}`);
    if (s.emulatorDomid !== client.domid) refuse("EPERM");
    // ioreq_server_get_frame: frame 0 (bufioreq) only with buffered ioreqs; beyond the pages -> -EINVAL.
    if (params.frame === 0 && s.bufioreq === 0) refuse("EINVAL", "no buffered ioreq page (BUFIOREQ_OFF)");
    if (params.nr < 1 || params.frame + params.nr > s.frames) refuse("EINVAL", `frames ${params.frame}+${params.nr} > ${s.frames}`);
    return { result: { fileOffset: params.frame * PAGE_SIZE }, fds: [s.fd] };
  }

  resourceSize(client: Client, params: { domid: number; type: number; id: number }): Reply {
    const d = this.#remote(client, num(params.domid, "domid"));
    if (params.type === XENMEM_resource_ioreq_server) return { result: { frames: 1 + Math.ceil(d.vcpus / 128) } };
    if (params.type === XENMEM_resource_grant_table) return { result: { frames: d.grantFrames } };
    return refuse("EOPNOTSUPP", `resource type ${params.type}`);
  }

  restrict(client: Client, params: { domid: number }): Reply {
    this.domain(num(params.domid, "domid"));
    if (client.restrictDomid !== undefined && client.restrictDomid !== params.domid) refuse("EACCES");
    client.restrictDomid = params.domid;
    return { result: {} };
  }

  // ---- privcmd irqfd / ioeventfd (Linux >= 6.7, drivers/xen/privcmd.c) -------------------------------------

  /**
   * IOCTL_PRIVCMD_IRQFD assign: each time the eventfd is signalled, issue the stored xen_dm_op for `domid`
   * (the kernel copies the buffer at assign time). Returns an id for deassign.
   */
  irqfdAssign(client: Client, params: { domid: number; dmOp: Uint8Array }, fds: number[]): Reply {
    const fd = fds[0];
    if (fd === undefined) return refuse("EBADF", "no eventfd");
    try {
      this.#remote(client, num(params.domid, "domid"));
      const op = bytesOf(params.dmOp, "dm_op").slice();
      if (op.byteLength < XEN_DM_OP_PAYLOAD_OFFSET) refuse("EINVAL", "dm_op too short");
      const id = this.#nextDevice++;
      const counter = new Uint8Array(8);
      const watcher = new FdWatcher(fd, () => {
        try {
          readFd(fd, counter);
        } catch {
          return;
        }
        try {
          this.dmOp(client, { domid: params.domid, bufs: [op.slice()] });
        } catch {
          // The kernel logs a failed dm_op and keeps the irqfd; so does the simulator.
        }
      }).start(PollEvents.READABLE);
      watcher.unref();
      client.irqfds.set(id, { watcher, fd });
      return { result: { id } };
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  irqfdDeassign(client: Client, params: { id: number }): Reply {
    const e = client.irqfds.get(params.id);
    if (!e) return refuse("ENOENT", "irqfd not assigned");
    client.irqfds.delete(params.id);
    e.watcher.close();
    closeFd(e.fd);
    return { result: {} };
  }

  /**
   * IOCTL_PRIVCMD_IOEVENTFD assign: QUEUE_NOTIFY writes (base + 0x50, `addrLen` bytes, data & 0xffff == vq)
   * of the server whose vCPU ports are `ports` complete without the device model and signal the eventfd.
   * `ports` may be the vp_eports or the emulator's bound local ports.
   */
  ioeventfdAssign(client: Client, params: { domid: number; ports: number[]; addr: bigint; addrLen: number; vq: number }, fds: number[]): Reply {
    const fd = fds[0];
    if (fd === undefined) return refuse("EBADF", "no eventfd");
    try {
      const d = this.#remote(client, num(params.domid, "domid"));
      if (![1, 2, 4, 8].includes(params.addrLen)) refuse("EINVAL", `addr_len ${params.addrLen}`);
      if (!Array.isArray(params.ports) || params.ports.length < 1 || params.ports.length > 4096) refuse("EINVAL", "vcpus");
      const s = [...d.ioreqServers.values()].find((x) => {
        const local = x.ports.map((p) => d.ports.get(p)?.remotePort);
        const same = (a: readonly (number | undefined)[]): boolean => a.length === params.ports.length && a.every((v, i) => v === params.ports[i]);
        return same(x.ports) || same(local);
      });
      if (!s) return refuse("EINVAL", "ports match no ioreq server of the domain");
      const id = this.#nextDevice++;
      s.ioeventfds.push({ id, fd, addr: params.addr, addrLen: params.addrLen, vq: params.vq, client: client.id });
      d.touch();
      return { result: { id } };
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  ioeventfdDeassign(client: Client, params: { domid: number; id: number }): Reply {
    const d = this.domain(num(params.domid, "domid"));
    for (const s of d.ioreqServers.values()) {
      const i = s.ioeventfds.findIndex((e) => e.id === params.id && e.client === client.id);
      if (i >= 0) {
        closeFd(s.ioeventfds[i]!.fd);
        s.ioeventfds.splice(i, 1);
        d.touch();
        return { result: {} };
      }
    }
    return refuse("ENOENT", "ioeventfd not assigned");
  }

  // ---- event channels (dom0's /dev/xen/evtchn) -------------------------------------------------------------

  evtchnOpen(client: Client): Reply {
    const dev = new EvtchnDeviceRec(this.#nextDevice++, client.domid);
    client.evtchns.set(dev.id, dev);
    return { result: { device: dev.id }, fds: [dev.eventFd.fd, dev.memfd] };
  }

  #evtchn(client: Client, id: unknown): EvtchnDeviceRec {
    const dev = client.evtchns.get(num(id, "device"));
    if (!dev) return refuse("EBADF", `evtchn device ${String(id)} is not open`);
    return dev;
  }

  #restricted(dev: EvtchnDeviceRec, domid: number): void {
    // drivers/xen/evtchn.c: a restricted fd may only bind to its domain (-EACCES).
    if (dev.restrictDomid !== undefined && dev.restrictDomid !== domid) refuse("EACCES", `evtchn restricted to domain ${dev.restrictDomid}`);
  }

  #peerEndpoint(dom: Domain, port: number): Endpoint | undefined {
    const rec = dom.ports.get(port);
    if (!rec || rec.state !== "interdomain") return undefined;
    const peer = this.domains.get(rec.remoteDomid);
    const pr = peer?.ports.get(rec.remotePort);
    return peer && pr ? endpointOf(peer, rec.remotePort, pr) : undefined;
  }

  /**
   * evtchn_send from `dom`'s `port` (common/event_channel.c): an interdomain channel raises the peer's port;
   * unbound or virq ports do nothing.
   */
  sendFrom(dom: Domain, port: number): void {
    const rec = dom.ports.get(port);
    if (!rec) return refuse("EINVAL", `port ${port} is not allocated`);
    if (rec.state !== "interdomain") return;
    const peer = this.domains.get(rec.remoteDomid);
    const pr = peer?.ports.get(rec.remotePort);
    if (!peer || !pr) return;
    switch (pr.consumer.kind) {
      case "device":
        pr.consumer.device.raise(rec.remotePort);
        break;
      case "ioreq":
        peer.vcpuWake[pr.consumer.vcpu]!.write(1);
        break;
      case "guest":
        raisePending(peer.words, DOMPAGE_PENDING / 4, rec.remotePort);
        peer.upcall.write(1);
        break;
    }
  }

  evtchnBindInterdomain(client: Client, params: { device: number; domid: number; port: number }): Reply {
    const dev = this.#evtchn(client, params.device);
    this.#restricted(dev, params.domid);
    const remote = this.domain(num(params.domid, "domid"));
    const dom0 = this.domain(client.domid);
    const lport = bindInterdomain(dom0, { kind: "device", device: dev }, remote, num(params.port, "port"));
    dev.ports.add(lport);
    dev.raise(lport);
    const { descs, fds } = packEndpoints([this.#peerEndpoint(dom0, lport)]);
    return { result: { port: lport, endpoint: descs[0] }, fds };
  }

  evtchnBindUnbound(client: Client, params: { device: number; domid: number }): Reply {
    const dev = this.#evtchn(client, params.device);
    this.#restricted(dev, params.domid);
    this.domain(num(params.domid, "domid"));
    const port = this.domain(client.domid).allocPort({ state: "unbound", remoteDomid: params.domid, remotePort: 0, consumer: { kind: "device", device: dev } });
    dev.ports.add(port);
    return { result: { port } };
  }

  evtchnBindVirq(client: Client, params: { device: number; virq: number }): Reply {
    const dev = this.#evtchn(client, params.device);
    if (dev.restrictDomid !== undefined) refuse("EACCES");
    // public/xen.h NR_VIRQS = 24; a VIRQ binds once per vCPU (-EEXIST).
    if (params.virq < 0 || params.virq >= 24) refuse("EINVAL", `virq ${params.virq}`);
    const dom0 = this.domain(client.domid);
    for (const r of dom0.ports.values()) if (r.state === "virq" && r.remotePort === params.virq) refuse("EEXIST");
    const port = dom0.allocPort({ state: "virq", remoteDomid: DOMID_DOM0, remotePort: params.virq, consumer: { kind: "device", device: dev } });
    dev.ports.add(port);
    return { result: { port } };
  }

  evtchnUnbind(client: Client, params: { device: number; port: number }): Reply {
    const dev = this.#evtchn(client, params.device);
    if (!dev.ports.has(params.port)) refuse("ENOTCONN", `port ${params.port} is not bound by this device`);
    dev.ports.delete(params.port);
    closePort(this.domain(client.domid), params.port, (id) => this.domains.get(id));
    return { result: {} };
  }

  /** The peer of a bound port, for a sender that has no cached endpoint (e.g. bound unbound-port later). */
  evtchnEndpoint(client: Client, params: { device: number; port: number }): Reply {
    const dev = this.#evtchn(client, params.device);
    if (!dev.ports.has(params.port)) refuse("ENOTCONN", `port ${params.port} is not bound by this device`);
    const { descs, fds } = packEndpoints([this.#peerEndpoint(this.domain(client.domid), params.port)]);
    return { result: { endpoint: descs[0] }, fds };
  }

  evtchnRestrict(client: Client, params: { device: number; domid: number }): Reply {
    const dev = this.#evtchn(client, params.device);
    // drivers/xen/evtchn.c: only once, and only before any port is bound (-EACCES / -EINVAL... simplified).
    if (dev.restrictDomid !== undefined) refuse("EACCES", "already restricted");
    dev.restrictDomid = num(params.domid, "domid");
    return { result: {} };
  }

  evtchnClose(client: Client, params: { device: number }): Reply {
    const dev = client.evtchns.get(params.device);
    if (!dev) return { result: {} };
    this.#closeEvtchn(client, dev);
    return { result: {} };
  }

  #closeEvtchn(client: Client, dev: EvtchnDeviceRec): void {
    client.evtchns.delete(dev.id);
    const dom0 = this.domains.get(client.domid);
    for (const p of dev.ports) {
      try {
        if (dom0) closePort(dom0, p, (id) => this.domains.get(id));
      } catch {
        // already closed with its peer
      }
    }
    dev.ports.clear();
    dev.release();
  }

  // ---- grant tables (common/grant_table.c, v1) and gntdev ----------------------------------------------------

  #grantEntry(dom: Domain, ref: number): { flags: number; domid: number; frame: number; index: number } | undefined {
    const entries = (dom.grantFrames * PAGE_SIZE) / GRANT_ENTRY_SIZE;
    if (!Number.isInteger(ref) || ref < 0 || ref >= entries) return undefined;
    const u16 = new Uint16Array(dom.grantTable);
    const u32 = new Uint32Array(dom.grantTable);
    const flags = Atomics.load(u16, ref * 4);
    return { flags, domid: Atomics.load(u16, ref * 4 + 1), frame: Atomics.load(u32, ref * 2 + 1), index: ref * 4 };
  }

  /**
   * Checks a grant for a mapping or copy by `client` (common/grant_table.c _set_status_v1: the entry must be
   * GTF_permit_access for our domain, and not GTF_readonly for a writable use). Returns a GNTST code.
   */
  #checkGrant(dom: Domain, ref: number, domid: number, readOnly: boolean): number {
    const e = this.#grantEntry(dom, ref);
    if (!e) return GNTST.bad_gntref;
    const mask = GTF_type_mask | (readOnly ? 0 : GTF_readonly);
    if ((e.flags & mask) !== GTF_permit_access || e.domid !== domid) return GNTST.general_error;
    if (!dom.locate(BigInt(e.frame))) return GNTST.bad_page;
    return GNTST.okay;
  }

  #pin(dom: Domain, ref: number, readOnly: boolean): void {
    const u16 = new Uint16Array(dom.grantTable);
    Atomics.or(u16, ref * 4, GTF_reading | (readOnly ? 0 : GTF_writing));
  }

  #unpin(pins: GrantPin[], all: GntdevRec[]): void {
    for (const p of pins) {
      if (p.dom.dying) continue;
      // Clear GTF_reading/GTF_writing once no other mapping of this ref needs them.
      const others = all.flatMap((g) => [...g.maps.values()].flat()).filter((o) => o !== p && o.dom === p.dom && o.ref === p.ref);
      let clear = 0;
      if (!others.some((o) => !o.readOnly)) clear |= GTF_writing;
      if (others.length === 0) clear |= GTF_reading;
      Atomics.and(new Uint16Array(p.dom.grantTable), p.ref * 4, ~clear);
    }
  }

  #allGntdevs(): GntdevRec[] {
    return [...this.#clients].flatMap((c) => [...c.gntdevs.values()]);
  }

  readonly #clients = new Set<Client>();
  addClient(c: Client): void {
    this.#clients.add(c);
  }

  gntdevOpen(client: Client): Reply {
    const dev: GntdevRec = { id: this.#nextDevice++, maps: new Map(), nextIndex: 0n };
    client.gntdevs.set(dev.id, dev);
    return { result: { device: dev.id } };
  }

  #gntdev(client: Client, id: unknown): GntdevRec {
    const dev = client.gntdevs.get(num(id, "device"));
    if (!dev) return refuse("EBADF", `gntdev ${String(id)} is not open`);
    return dev;
  }

  gntdevMap(client: Client, params: { device: number; domid: number; refs: number[]; readOnly: boolean }): Reply {
    const dev = this.#gntdev(client, params.device);
    const dom = this.domain(num(params.domid, "domid"));
    const refs = params.refs;
    if (!Array.isArray(refs) || refs.length === 0) refuse("EINVAL", "no refs");
    const fds: number[] = [];
    const fdIndex: number[] = [];
    const offsets: number[] = [];
    for (const ref of refs) {
      const st = this.#checkGrant(dom, ref, client.domid, params.readOnly);
      // Linux gntdev: the map hypercall fails inside mmap(), which returns -EFAULT... the status names why.
      if (st !== GNTST.okay) refuse("EFAULT", `grant ref ${ref} of domain ${dom.domid}: GNTST ${st}`);
    }
    const pins: GrantPin[] = [];
    for (const ref of refs) {
      const e = this.#grantEntry(dom, ref)!;
      const at = dom.locate(BigInt(e.frame))!;
      let k = fds.indexOf(at.bank.fd);
      if (k < 0) k = fds.push(at.bank.fd) - 1;
      fdIndex.push(k);
      offsets.push(at.offset);
      this.#pin(dom, ref, params.readOnly);
      pins.push({ dom, ref, readOnly: params.readOnly });
    }
    const index = dev.nextIndex;
    dev.nextIndex += BigInt(refs.length * PAGE_SIZE);
    dev.maps.set(index.toString(), pins);
    return { result: { index, fdIndex, offsets }, fds };
  }

  gntdevUnmap(client: Client, params: { device: number; index: bigint; notifyPort?: number }): Reply {
    const dev = this.#gntdev(client, params.device);
    const pins = dev.maps.get(String(params.index));
    if (!pins) return refuse("EINVAL", `no grant mapping at index ${String(params.index)}`);
    dev.maps.delete(String(params.index));
    this.#unpin(pins, this.#allGntdevs());
    // gntdev UNMAP_NOTIFY_SEND_EVENT: notify_remote_via_evtchn(port) once the pages are gone.
    if (params.notifyPort !== undefined) {
      try {
        this.sendFrom(this.domain(client.domid), num(params.notifyPort, "port"));
      } catch {
        // the kernel ignores a stale notify port as well
      }
    }
    return { result: {} };
  }

  /** GNTTABOP_copy: resolves each foreign side to (memfd, offset) after the permission checks. */
  gntdevCopy(client: Client, params: { sides: { domid: number; ref: number; offset: number; len: number; write: boolean }[] }): Reply {
    const fds: number[] = [];
    const out = params.sides.map((s) => {
      const dom = this.domains.get(s.domid);
      if (!dom || dom.dying) return { status: GNTST.bad_domain };
      const st = this.#checkGrant(dom, s.ref, client.domid, !s.write);
      if (st !== GNTST.okay) return { status: st };
      if (s.offset + s.len > PAGE_SIZE) return { status: GNTST.bad_copy_arg };
      const e = this.#grantEntry(dom, s.ref)!;
      const at = dom.locate(BigInt(e.frame))!;
      let k = fds.indexOf(at.bank.fd);
      if (k < 0) k = fds.push(at.bank.fd) - 1;
      return { status: GNTST.okay, fd: k, fileOffset: at.offset };
    });
    return { result: { sides: out }, fds };
  }

  gntdevClose(client: Client, params: { device: number }): Reply {
    const dev = client.gntdevs.get(params.device);
    if (dev) this.#closeGntdev(client, dev);
    return { result: {} };
  }

  #closeGntdev(client: Client, dev: GntdevRec): void {
    const all = this.#allGntdevs();
    for (const pins of dev.maps.values()) this.#unpin(pins, all.filter((g) => g !== dev));
    dev.maps.clear();
    client.gntdevs.delete(dev.id);
  }

  // ---- the simulated guest's side ------------------------------------------------------------------------

  guestAttach(client: Client, params: { domid: number }): Reply {
    const d = this.domain(num(params.domid, "domid"));
    if (d.domid === 0) refuse("EINVAL", "dom0 is not simulated as a guest");
    client.attachedTo = d;
    d.attached++;
    const fds = [d.pageFd, d.grantFd, d.upcall.fd, ...d.vcpuWake.map((w) => w.fd), ...d.ram.map((b) => b.fd)];
    return {
      result: {
        domid: d.domid, vcpus: d.vcpus, arch: this.arch, nrSpis: d.nrSpis, grantFrames: d.grantFrames,
        ram: d.ram.map((b) => ({ base: b.base, size: b.size })),
      },
      fds,
    };
  }

  /** Answers once the domain may run (unpaused), or refuses when it is gone. */
  guestWaitRunnable(_client: Client, params: { domid: number }): Promise<Reply> | Reply {
    const d = this.domain(num(params.domid, "domid"));
    if (!d.paused) return { result: {} };
    return new Promise((resolve, reject) => {
      d.runnableWaiters.push(() => (d.dying ? reject(new Error("ESRCH")) : resolve({ result: {} })));
    });
  }

  /**
   * The guest's routing table: enabled ioreq servers (highest id first, as FOR_EACH_IOREQ_SERVER walks them),
   * their ranges, the ioreq pages and, per vCPU, where to notify (the emulator's bound port) or null.
   */
  guestRoutes(_client: Client, params: { domid: number }): Reply {
    const d = this.domain(num(params.domid, "domid"));
    const generation = Atomics.load(d.words, 0);
    const servers = [...d.ioreqServers.values()].filter((s) => s.enabled).sort((a, b) => b.id - a.id);
    const fds: number[] = [];
    const list = servers.map((s) => {
      const eps = s.ports.map((p) => this.#peerEndpoint(d, p));
      const packed = packEndpoints(eps);
      const shift = fds.length;
      fds.push(s.fd, ...packed.fds);
      const fix = (e: EndpointDescription | null): EndpointDescription | null =>
        e ? { ...e, eventFd: e.eventFd + shift + 1, pendingFd: e.pendingFd < 0 ? -1 : e.pendingFd + shift + 1 } : null;
      const ioeventfds = s.ioeventfds.map((e) => ({ addr: e.addr, addrLen: e.addrLen, vq: e.vq, fd: fds.push(e.fd) - 1 }));
      return { id: s.id, ranges: s.ranges, pagesFd: shift, frames: s.frames, endpoints: packed.descs.map(fix), ioeventfds };
    });
    return { result: { generation, servers: list }, fds };
  }

  /** The guest allocates a port another domain may bind (EVTCHNOP_alloc_unbound). */
  guestAllocUnbound(_client: Client, params: { domid: number; remote: number }): Reply {
    const d = this.domain(num(params.domid, "domid"));
    this.domain(num(params.remote, "remote"));
    return { result: { port: d.allocPort({ state: "unbound", remoteDomid: params.remote, remotePort: 0, consumer: { kind: "guest" } }) } };
  }

  /** Where the guest's sends on `port` go (EVTCHNOP_send), or null while unbound. */
  guestEndpoint(_client: Client, params: { domid: number; port: number }): Reply {
    const d = this.domain(num(params.domid, "domid"));
    const { descs, fds } = packEndpoints([this.#peerEndpoint(d, num(params.port, "port"))]);
    return { result: { endpoint: descs[0], generation: Atomics.load(d.words, 0) }, fds };
  }

  // ---- a client went away -------------------------------------------------------------------------------

  disconnect(client: Client): void {
    this.#clients.delete(client);
    for (const id of [...client.irqfds.keys()]) this.irqfdDeassign(client, { id });
    for (const d of this.domains.values()) {
      for (const s of d.ioreqServers.values()) {
        const mine = s.ioeventfds.filter((e) => e.client === client.id);
        if (mine.length === 0) continue;
        for (const e of mine) closeFd(e.fd);
        s.ioeventfds = s.ioeventfds.filter((e) => e.client !== client.id);
        d.touch();
      }
    }
    for (const dev of [...client.evtchns.values()]) this.#closeEvtchn(client, dev);
    for (const dev of [...client.gntdevs.values()]) this.#closeGntdev(client, dev);
    if (client.attachedTo) {
      client.attachedTo.attached--;
      client.attachedTo = undefined;
    }
  }

  close(): void {
    for (const [d, timer] of this.#dying) {
      clearTimeout(timer);
      this.#reap(d);
    }
    this.#dying.clear();
    for (const d of [...this.domains.values()]) {
      if (d.domid !== 0) this.destroyDomain(d.domid);
    }
    this.#dom0.release();
  }
}
