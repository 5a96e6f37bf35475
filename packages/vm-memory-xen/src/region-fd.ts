// The fd a vhost-user front-end sends with a Xen region. A backend cannot use the front-end's mapping: it
// re-does it on its own copy of the fd (rust-vmm vm-memory MmapXenForeign / MmapXenGrant): mmap(privcmd) +
// IOCTL_PRIVCMD_MMAPBATCH_V2 for foreign regions, IOCTL_GNTDEV_MAP_GRANT_REF + mmap(gntdev) for grants.
// So each region carries a *fresh* /dev/xen/privcmd or /dev/xen/gntdev fd, never the front-end's own:
// the backend's mappings and grant reservations then live and die with the backend's fd.
//
// A fresh privcmd fd is restricted to the guest (IOCTL_PRIVCMD_RESTRICT) before it leaves this process, so a
// backend receiving it can map that one domain and issue no other privileged operation with it
// (privcmd.h: "restrict this fd to the given domain").
//
// XenTransport (xen-sys) has no method for this yet: a transport that implements `MappingFdProvider`
// (a simulator handing out its own kind of fd, or a future xen-sys method) is asked first; otherwise the
// device nodes are opened directly.
import { close as closeFd, constants, ioctl, open } from "@xen-vhost/vmm-sys-util";
import { GNTDEV_DEVICE, IOCTL_PRIVCMD_RESTRICT, PRIVCMD_DEVICE, XenError, checkDomid } from "@xen-vhost/xen-sys";
import { XenMemoryError, errnoOfCause } from "./error.js";

/** Which device a region's fd comes from. */
export type MappingFdKind = "privcmd" | "gntdev";

/** Something that hands out fresh, caller-owned fds for a backend to map a domain's memory with. */
export interface MappingFdProvider {
  /** A new fd the caller owns and closes. */
  openMappingFd(kind: MappingFdKind, domid: number): number;
}

export interface DeviceFdOptions {
  /** Default /dev/xen/privcmd. */
  privcmdPath?: string;
  /** Default /dev/xen/gntdev. */
  gntdevPath?: string;
  /** IOCTL_PRIVCMD_RESTRICT the privcmd fd to the domain (default true). */
  restrict?: boolean;
}

/** Opens the device nodes (what a dom0 front-end on real Xen uses). */
export function deviceFdProvider(options: DeviceFdOptions = {}): MappingFdProvider {
  return {
    openMappingFd(kind: MappingFdKind, domid: number): number {
      checkDomid(domid);
      const path = kind === "privcmd" ? (options.privcmdPath ?? PRIVCMD_DEVICE) : (options.gntdevPath ?? GNTDEV_DEVICE);
      let fd: number;
      try {
        fd = open(path, constants.O_RDWR);
      } catch (err) {
        const cause = XenError.fromSysError(err, `open ${path}`, { path, opening: true });
        throw new XenMemoryError("FdUnavailable", `cannot open ${path} for a vhost-user backend: ${cause.message}`, fdDetails(domid, cause), { cause });
      }
      if (kind === "privcmd" && (options.restrict ?? true)) {
        try {
          const arg = new Uint8Array(2);
          new DataView(arg.buffer).setUint16(0, domid, true);
          ioctl(fd, IOCTL_PRIVCMD_RESTRICT, arg);
        } catch (err) {
          closeFd(fd);
          const cause = XenError.fromSysError(err, "IOCTL_PRIVCMD_RESTRICT", { domid });
          throw new XenMemoryError("FdUnavailable", `cannot restrict ${path} to domain ${domid}: ${cause.message}`, fdDetails(domid, cause), { cause });
        }
      }
      return fd;
    },
  };
}

function fdDetails(domid: number, cause: unknown): { domid: number; errno?: number } {
  const errno = errnoOfCause(cause);
  return errno === undefined ? { domid } : { domid, errno };
}

/** The transport itself if it can hand out mapping fds, else the device nodes. */
export function fdProviderFor(transport: object, fallback?: MappingFdProvider): MappingFdProvider {
  const t = transport as Partial<MappingFdProvider>;
  if (typeof t.openMappingFd === "function") return { openMappingFd: (k, d) => t.openMappingFd!(k, d) };
  return fallback ?? deviceFdProvider();
}

/** Opens through `provider`, turning any failure into XenMemoryError `FdUnavailable`. */
export function openMappingFd(provider: MappingFdProvider, kind: MappingFdKind, domid: number): number {
  try {
    return provider.openMappingFd(kind, domid);
  } catch (err) {
    if (err instanceof XenMemoryError) throw err;
    throw new XenMemoryError("FdUnavailable", `no ${kind} fd for domain ${domid}: ${(err as Error).message}`, fdDetails(domid, err), { cause: err });
  }
}
