// sysctl/domctl operations (xen/include/public/sysctl.h, domctl.h), encoded above the transport, with
// interface-version probing: the struct carries `interface_version` and Xen answers -EACCES to any version
// but its own, which changes between releases. The first accepted version is cached per interface.
import {
  XEN_SYSCTL, XEN_SYSCTL_INTERFACE_VERSIONS, XEN_SYSCTL_PAYLOAD_OFFSET, XEN_SYSCTL_PHYSINFO_MIN_VERSION, XenSysctl,
  XenSysctlGetdomaininfolist, XenSysctlPhysinfo, XEN_SYSCTL_PHYSCAP,
} from "./abi/sysctl.js";
import {
  XEN_DOMCTL, XEN_DOMCTL_INTERFACE_VERSIONS, XEN_DOMCTL_PAYLOAD_OFFSET, XEN_DOMINF, XEN_DOMINF_shutdownmask,
  XEN_DOMINF_shutdownshift, XenArchDomainconfigArm, XenArchDomainconfigX86, XenDomctl, xenDomctlGetdomaininfo,
  type XenArch,
} from "./abi/domctl.js";
import { XenError } from "./error.js";
import type { GuestHandle, XenTransport } from "./transport.js";

/** Tries interface versions until Xen accepts one, then sticks to it. */
export class InterfaceVersion {
  readonly name: "sysctl" | "domctl";
  readonly candidates: readonly number[];
  #accepted: number | undefined;

  constructor(name: "sysctl" | "domctl", candidates: readonly number[], fixed?: number) {
    this.name = name;
    this.candidates = fixed !== undefined ? [fixed] : candidates;
  }

  /** The version Xen accepted, once known. */
  get accepted(): number | undefined {
    return this.#accepted;
  }

  /**
   * Runs `call(version)` with each candidate until one is not refused with EACCES.
   * @throws XenError "InterfaceVersion" if every candidate was refused; other errors pass through.
   */
  run<T>(op: string, call: (version: number) => T): T {
    if (this.#accepted !== undefined) return call(this.#accepted);
    let last: XenError | undefined;
    for (const v of this.candidates) {
      try {
        const r = call(v);
        this.#accepted = v;
        return r;
      } catch (err) {
        if (err instanceof XenError && err.code === "EACCES") {
          last = err;
          continue;
        }
        throw err;
      }
    }
    const tried = this.candidates.map((v) => `0x${v.toString(16)}`).join(", ");
    throw new XenError(
      "InterfaceVersion",
      `${this.name} ${op}: Xen refused interface versions ${tried} (EACCES; an XSM policy denial looks the same)`,
      { op: `${this.name} ${op}`, code: "EACCES", errno: 13 },
      { cause: last },
    );
  }
}

/** A `struct xen_sysctl` for `cmd` with the payload bytes at the union. */
export function encodeSysctl(cmd: number, version: number, payload: Uint8Array): Uint8Array {
  const buf = XenSysctl.encode({ cmd, interface_version: version });
  buf.set(payload, XEN_SYSCTL_PAYLOAD_OFFSET);
  return buf;
}

/** A `struct xen_domctl` for `cmd` on `domain`. */
export function encodeDomctl(cmd: number, version: number, domain: number, payload?: Uint8Array): Uint8Array {
  const buf = XenDomctl.encode({ cmd, interface_version: version, domain });
  if (payload) buf.set(payload, XEN_DOMCTL_PAYLOAD_OFFSET);
  return buf;
}

/** What `getdomaininfo` reports about a domain, decoded. */
export interface DomainInfo {
  domid: number;
  dying: boolean;
  hvm: boolean;
  shutdown: boolean;
  paused: boolean;
  blocked: boolean;
  running: boolean;
  debugged: boolean;
  xenstoreDomain: boolean;
  hap: boolean;
  /**
   * The SHUTDOWN_* code (poweroff 0, reboot 1, suspend 2, crash 3, watchdog 4, soft_reset 5; see `SHUTDOWN`)
   * when `shutdown` is set, else -1 (libxl's LIBXL_SHUTDOWN_REASON_UNKNOWN). Xen keeps its internal
   * SHUTDOWN_CODE_INVALID (~0u) in the field of a live domain, which would read as 255.
   */
  shutdownReason: number;
  /** The raw XEN_DOMINF_* flags. */
  flags: number;
  totPages: bigint;
  maxPages: bigint;
  outstandingPages: bigint;
  sharedPages: bigint;
  pagedPages: bigint;
  sharedInfoFrame: bigint;
  /** Nanoseconds of CPU time used. */
  cpuTime: bigint;
  onlineVcpus: number;
  maxVcpuId: number;
  ssidref: number;
  /** The domain handle (UUID), as 8-4-4-4-12 hex. */
  uuid: string;
  cpupool: number;
  gpaddrBits: number;
  /**
   * The arch tail: x86 emulation flags, or the Arm GIC version and SPI count. `reported` says whether Xen
   * filled it: x86's arch_get_domain_info copies the flags, Arm's (Xen 4.17 to at least 4.20) leaves the
   * whole tail zero, so on Arm the fields are 0 and `reported` is false unless some byte was set. Take the
   * GIC version and SPI count of an Arm guest from its configuration (xl, device tree) instead.
   */
  arch:
    | { arch: "x86_64"; reported: boolean; emulationFlags: number; miscFlags: number }
    | { arch: "arm64"; reported: boolean; gicVersion: number; teeType: number; nrSpis: number; clockFrequency: number };
}

/** Decodes one `struct xen_domctl_getdomaininfo` at `offset`. */
export function decodeDomainInfo(arch: XenArch, bytes: Uint8Array, offset = 0): DomainInfo {
  const layout = xenDomctlGetdomaininfo(arch);
  const r = layout.read(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), offset);
  const f = r.flags;
  const hex = Buffer.from(r.handle).toString("hex");
  const uuid = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  const tail = r.arch_config;
  const archInfo: DomainInfo["arch"] =
    arch === "x86_64"
      ? (() => {
          const a = XenArchDomainconfigX86.decode(tail);
          return { arch: "x86_64" as const, reported: true, emulationFlags: a.emulation_flags, miscFlags: a.misc_flags };
        })()
      : (() => {
          const a = XenArchDomainconfigArm.decode(tail);
          return {
            arch: "arm64" as const,
            reported: tail.some((byte) => byte !== 0),
            gicVersion: a.gic_version,
            teeType: a.tee_type,
            nrSpis: a.nr_spis,
            clockFrequency: a.clock_frequency,
          };
        })();
  return {
    domid: r.domain,
    dying: (f & XEN_DOMINF.dying) !== 0,
    hvm: (f & XEN_DOMINF.hvm_guest) !== 0,
    shutdown: (f & XEN_DOMINF.shutdown) !== 0,
    paused: (f & XEN_DOMINF.paused) !== 0,
    blocked: (f & XEN_DOMINF.blocked) !== 0,
    running: (f & XEN_DOMINF.running) !== 0,
    debugged: (f & XEN_DOMINF.debugged) !== 0,
    xenstoreDomain: (f & XEN_DOMINF.xs_domain) !== 0,
    hap: (f & XEN_DOMINF.hap) !== 0,
    shutdownReason: (f & XEN_DOMINF.shutdown) !== 0 ? (f >>> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask : -1,
    flags: f,
    totPages: r.tot_pages,
    maxPages: r.max_pages,
    outstandingPages: r.outstanding_pages,
    sharedPages: r.shr_pages,
    pagedPages: r.paged_pages,
    sharedInfoFrame: r.shared_info_frame,
    cpuTime: r.cpu_time,
    onlineVcpus: r.nr_online_vcpus,
    maxVcpuId: r.max_vcpu_id,
    ssidref: r.ssidref,
    uuid,
    cpupool: r.cpupool,
    gpaddrBits: r.gpaddr_bits,
    arch: archInfo,
  };
}

/** XEN_SYSCTL_physinfo, decoded. */
export interface PhysInfo {
  threadsPerCore: number;
  coresPerSocket: number;
  nrCpus: number;
  maxCpuId: number;
  nrNodes: number;
  maxNodeId: number;
  cpuKhz: number;
  capabilities: { [K in keyof typeof XEN_SYSCTL_PHYSCAP]: boolean };
  rawCapabilities: number;
  archCapabilities: number;
  totalPages: bigint;
  freePages: bigint;
  scrubPages: bigint;
  outstandingPages: bigint;
  maxMfn: bigint;
}

/** The sysctl and domctl calls over a transport, sharing its probed versions. */
export class ControlOps {
  readonly #t: XenTransport;
  readonly sysctlVersion: InterfaceVersion;
  readonly domctlVersion: InterfaceVersion;

  constructor(transport: XenTransport, options: { sysctlVersion?: number; domctlVersion?: number } = {}) {
    this.#t = transport;
    this.sysctlVersion = new InterfaceVersion("sysctl", XEN_SYSCTL_INTERFACE_VERSIONS, options.sysctlVersion);
    this.domctlVersion = new InterfaceVersion("domctl", XEN_DOMCTL_INTERFACE_VERSIONS, options.domctlVersion);
  }

  #sysctl(name: string, build: (v: number) => { op: Uint8Array; handles?: GuestHandle[] }): Uint8Array {
    return this.sysctlVersion.run(name, (v) => {
      const { op, handles } = build(v);
      try {
        this.#t.sysctl(op, handles);
      } catch (err) {
        throw relabel(err, `sysctl ${name}`);
      }
      return op;
    });
  }

  /** XEN_SYSCTL_getdomaininfolist: up to `max` domains with domid >= `first`. */
  getDomainInfoList(first = 0, max = 1024): DomainInfo[] {
    if (!Number.isInteger(first) || first < 0 || first > 0x7fff) throw new RangeError(`first domid ${first}`);
    if (!Number.isInteger(max) || max < 1 || max > 0x7ff0) throw new RangeError(`max ${max} must be 1..32752`);
    const layout = xenDomctlGetdomaininfo(this.#t.arch);
    const data = new Uint8Array(max * layout.size);
    const handleOffset = XEN_SYSCTL_PAYLOAD_OFFSET + XenSysctlGetdomaininfolist.offsetOf("buffer");
    const op = this.#sysctl("getdomaininfolist", (v) => ({
      op: encodeSysctl(XEN_SYSCTL.getdomaininfolist, v, XenSysctlGetdomaininfolist.encode({ first_domain: first, max_domains: max })),
      handles: [{ offset: handleOffset, data }],
    }));
    const out = XenSysctlGetdomaininfolist.read(new DataView(op.buffer, op.byteOffset), XEN_SYSCTL_PAYLOAD_OFFSET);
    const n = Math.min(out.num_domains, max);
    return Array.from({ length: n }, (_, i) => decodeDomainInfo(this.#t.arch, data, i * layout.size));
  }

  /** XEN_SYSCTL_physinfo (needs sysctl interface >= 0x15, Xen 4.17+). */
  physinfo(): PhysInfo {
    const op = this.#sysctl("physinfo", (v) => {
      if (v < XEN_SYSCTL_PHYSINFO_MIN_VERSION) {
        throw new XenError("Unsupported", `sysctl physinfo: interface 0x${v.toString(16)} predates the mirrored layout (0x15)`, {
          op: "sysctl physinfo",
        });
      }
      return { op: encodeSysctl(XEN_SYSCTL.physinfo, v, new Uint8Array(0)) };
    });
    const p = XenSysctlPhysinfo.read(new DataView(op.buffer, op.byteOffset), XEN_SYSCTL_PAYLOAD_OFFSET);
    const caps = Object.fromEntries(
      Object.entries(XEN_SYSCTL_PHYSCAP).map(([k, bit]) => [k, (p.capabilities & bit) !== 0]),
    ) as PhysInfo["capabilities"];
    return {
      threadsPerCore: p.threads_per_core, coresPerSocket: p.cores_per_socket, nrCpus: p.nr_cpus, maxCpuId: p.max_cpu_id,
      nrNodes: p.nr_nodes, maxNodeId: p.max_node_id, cpuKhz: p.cpu_khz, capabilities: caps, rawCapabilities: p.capabilities,
      archCapabilities: p.arch_capabilities, totalPages: p.total_pages, freePages: p.free_pages, scrubPages: p.scrub_pages,
      outstandingPages: p.outstanding_pages, maxMfn: p.max_mfn,
    };
  }

  /** XEN_DOMCTL_getdomaininfo. Note: Xen returns the next existing domain >= domid; this checks the domid. */
  getDomainInfo(domid: number): DomainInfo {
    if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0) throw new RangeError(`domid ${domid} is not a domain id (0..0x7fef)`);
    const op = this.domctlVersion.run("getdomaininfo", (v) => {
      const buf = encodeDomctl(XEN_DOMCTL.getdomaininfo, v, domid);
      try {
        this.#t.domctl(buf);
      } catch (err) {
        throw relabel(err, "domctl getdomaininfo", domid);
      }
      return buf;
    });
    const info = decodeDomainInfo(this.#t.arch, op, XEN_DOMCTL_PAYLOAD_OFFSET);
    if (info.domid !== domid) {
      throw new XenError("NoSuchDomain", `domctl getdomaininfo (domain ${domid}): ESRCH`, {
        op: "domctl getdomaininfo", code: "ESRCH", errno: 3, domid,
      });
    }
    return info;
  }
}

/** Re-labels a transport error with the typed operation's name (keeping kind, errno and cause). */
export function relabel(err: unknown, op: string, domid?: number): unknown {
  if (!(err instanceof XenError) || err.op === op) return err;
  const where = domid !== undefined ? ` (domain ${domid})` : "";
  const details = {
    op,
    ...(err.code !== undefined ? { code: err.code } : {}),
    ...(err.errno !== undefined ? { errno: err.errno } : {}),
    ...(err.path !== undefined ? { path: err.path } : {}),
    ...(domid !== undefined ? { domid } : err.domid !== undefined ? { domid: err.domid } : {}),
  };
  return new XenError(err.kind, `${op}${where}: ${err.code ?? err.message}`, details, { cause: err });
}
