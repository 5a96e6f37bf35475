// Opening /dev/xen nodes with one error mapping: a missing node is XenError "DeviceMissing" naming it.
import { open, close, constants } from "@xen-vhost/vmm-sys-util";
import { XenError } from "./error.js";

/** Opens a device node read-write (close-on-exec). @throws XenError DeviceMissing / PermissionDenied */
export function openDevice(path: string, options: { nonblocking?: boolean } = {}): number {
  try {
    return open(path, constants.O_RDWR | (options.nonblocking ? constants.O_NONBLOCK : 0));
  } catch (err) {
    throw XenError.fromSysError(err, `open ${path}`, { path, opening: true });
  }
}

/** Closes an fd, ignoring errors (used on teardown paths that must not throw). */
export function closeQuietly(fd: number): void {
  try {
    close(fd);
  } catch {
    // already gone: nothing else to release
  }
}

/** Checks a domid is a domid_t a caller may target (below DOMID_FIRST_RESERVED). @throws RangeError */
export function checkDomid(domid: number, what = "domid"): void {
  if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0)
    throw new RangeError(`${what} ${String(domid)} is not a domain id (0..0x7fef)`);
}

/** Checks a u32 argument. @throws RangeError */
export function checkU32(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`${what} ${String(value)} out of u32 range`);
}
