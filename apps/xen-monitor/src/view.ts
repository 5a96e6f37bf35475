// What the monitor keeps of a domain between two polls: the parts of `struct xen_domctl_getdomaininfo`
// (xen/include/public/domctl.h) a person watching domains cares about, plus the XenStore name.
import type { DomainInfo } from "@xen-vhost/xen-sys";

/**
 * What a domain's vCPUs are doing: paused by the toolstack, one running on a pCPU now, one runnable but
 * waiting for a pCPU (Xen reports neither running nor blocked: `xl list` shows "------"), or all blocked.
 */
export type Activity = "paused" | "running" | "runnable" | "blocked";

// xen/include/public/sched.h: SHUTDOWN_poweroff 0 ... SHUTDOWN_soft_reset 5 (SHUTDOWN_MAX).
export const SHUTDOWN_REASONS = ["poweroff", "reboot", "suspend", "crash", "watchdog", "soft_reset"] as const;
export type ShutdownReasonName = (typeof SHUTDOWN_REASONS)[number];

/** `poweroff`..`soft_reset`, or `code <n>` for a code this table does not name. */
export function shutdownReasonName(code: number): string {
  return SHUTDOWN_REASONS[code] ?? `code ${code}`;
}

export interface DomainView {
  domid: number;
  /** The domain handle: a domid reused by a new domain gets a new one. */
  uuid: string;
  /** /local/domain/<domid>/name, when XenStore had it. */
  name: string | undefined;
  paused: boolean;
  running: boolean;
  blocked: boolean;
  /** The SHUTDOWN_* code once XEN_DOMINF_shutdown is set; undefined while the domain is live. */
  shutdownCode: number | undefined;
  dying: boolean;
  /** nr_online_vcpus. */
  vcpus: number;
  /** max_vcpu_id + 1. */
  maxVcpus: number;
  /** (tot_pages + outstanding_pages) in KiB, which is what `xl list` shows as Mem (divided by 1024). */
  memKiB: number;
  /** max_pages in KiB. */
  maxMemKiB: number;
  /** CPU time used, in seconds. */
  cpuSeconds: number;
}

/** Page size of getdomaininfo's page counts (XC_PAGE_SIZE), in KiB. */
const PAGE_KIB = 4;

/**
 * A view of one getdomaininfo record. The shutdown code is read only when XEN_DOMINF_shutdown is set: a live
 * domain carries Xen's SHUTDOWN_CODE_INVALID (~0u) in those bits, which reads as 255 (seen on the rig).
 */
export function viewOf(info: DomainInfo, name: string | undefined): DomainView {
  return {
    domid: info.domid,
    uuid: info.uuid,
    name,
    paused: info.paused,
    running: info.running,
    blocked: info.blocked,
    shutdownCode: info.shutdown ? (info.flags >>> 16) & 0xff : undefined,
    dying: info.dying,
    vcpus: info.onlineVcpus,
    maxVcpus: info.maxVcpuId + 1,
    memKiB: Number(info.totPages + info.outstandingPages) * PAGE_KIB,
    maxMemKiB: Number(info.maxPages) * PAGE_KIB,
    cpuSeconds: Number(info.cpuTime) / 1e9,
  };
}

/**
 * paused wins (the toolstack holds it), then running, then blocked, else runnable; none for a shut-down or
 * dying domain, or one without online vCPUs (being built: getdomaininfo then reports no run state at all).
 */
export function activityOf(v: DomainView): Activity | undefined {
  if (v.paused) return "paused";
  if (v.running) return "running";
  if (v.blocked) return "blocked";
  if (v.shutdownCode !== undefined || v.dying || v.vcpus === 0) return undefined;
  return "runnable";
}

/** The states a guest moves between on its own, many times a second. */
export function isScheduling(a: Activity | undefined): boolean {
  return a === "running" || a === "runnable" || a === "blocked";
}

/** Whole MiB as `xl list` computes them (integer division of KiB). */
export function memMiB(kib: number): number {
  return Math.floor(kib / 1024);
}
