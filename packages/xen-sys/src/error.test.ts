// The package's one errno classifier: which kind each errno becomes, and what that means for retrying.
import { describe, expect, it } from "vitest";
import { SysError } from "@xen-vhost/vmm-sys-util";
import { XenError } from "./error.js";

describe("XenError classification", () => {
  it.each([
    [2, false, "OperationFailed", "ENOENT"],
    [2, true, "DeviceMissing", "ENOENT"],
    [13, false, "PermissionDenied", "EACCES"],
    [1, false, "PermissionDenied", "EPERM"],
    [25, false, "Unsupported", "ENOTTY"],
    // EOPNOTSUPP and ENOTSUP are errno 95 on Linux; the errno table names it ENOTSUP.
    [95, false, "Unsupported", "ENOTSUP"],
    [38, false, "Unsupported", "ENOSYS"],
    [3, false, "NoSuchDomain", "ESRCH"],
    [16, false, "OperationFailed", "EBUSY"],
  ] as const)("errno %i (opening %s) is %s", (errno, opening, kind, code) => {
    const e = XenError.fromSysError(new SysError("ioctl", errno), "IOCTL_X", { opening });
    expect(e).toMatchObject({ kind, code, errno, op: "IOCTL_X" });
    expect(e.cause).toBeInstanceOf(SysError);
    if (!opening) expect(XenError.fromErrno(errno, "hypercall")).toMatchObject({ kind, code, errno });
  });

  it("only transient failures are retryable", () => {
    expect(XenError.fromErrno(16, "dm_op").retryable).toBe(true); // EBUSY
    expect(XenError.fromErrno(11, "dm_op").retryable).toBe(true); // EAGAIN
    expect(XenError.fromErrno(95, "dm_op").retryable).toBe(false); // EOPNOTSUPP
    expect(XenError.fromErrno(3, "dm_op").retryable).toBe(false);
    expect(XenError.closed("x")).toMatchObject({ kind: "Closed", code: "EBADF", retryable: false });
  });
});
