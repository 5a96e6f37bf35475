import { describe, expect, it } from "vitest";
import { SysError, errnoOf } from "@xen-vhost/vmm-sys-util";
import { XenError } from "@xen-vhost/xen-sys";
import { NotifierError, classifyErrno, classifyXenError } from "./error.js";

describe("classifyErrno", () => {
  it.each([
    ["ENOENT", "DeviceUnavailable"],
    ["EACCES", "DeviceUnavailable"],
    ["ENOTTY", "Unsupported"],
    ["EOPNOTSUPP", "Unsupported"],
    ["EEXIST", "AddressInUse"],
    ["EBUSY", "EventfdInUse"],
    ["EINVAL", "InvalidArgument"],
    ["EFAULT", "Hypervisor"],
  ])("%s -> %s, keeping the SysError as cause", (code, kind) => {
    const sys = new SysError("ioctl", errnoOf(code), "0xae79");
    const err = classifyErrno(sys, "KVM_IOEVENTFD assign");
    expect(err).toBeInstanceOf(NotifierError);
    expect(err).toMatchObject({ kind, message: `KVM_IOEVENTFD assign: ${sys.code}`, cause: sys });
  });

  it("applies per-call overrides", () => {
    const err = classifyErrno(new SysError("ioctl", errnoOf("ENOENT")), "deassign", { ENOENT: "NotRegistered" });
    expect(err).toMatchObject({ kind: "NotRegistered" });
  });

  it("passes non-syscall errors through", () => {
    const e = new RangeError("x");
    expect(classifyErrno(e, "y")).toBe(e);
  });

  it("says which failures a fallback path can fix", () => {
    expect(new NotifierError("Unsupported", "x").canFallBack).toBe(true);
    expect(new NotifierError("DeviceUnavailable", "x").canFallBack).toBe(false);
  });
});

describe("classifyXenError", () => {
  it.each([
    ["ENOENT", "NotRegistered"], // a XenError kind OperationFailed with ENOENT (deassign of nothing)
    ["ENOTTY", "Unsupported"],
    ["EOPNOTSUPP", "Unsupported"],
    ["EPERM", "DeviceUnavailable"],
    ["ESRCH", "InvalidArgument"], // no such domain
    ["EEXIST", "AddressInUse"],
    ["EBUSY", "EventfdInUse"],
    ["EINVAL", "InvalidArgument"],
    ["EIO", "Hypervisor"],
  ])("XenError %s -> %s, keeping it as cause", (code, kind) => {
    const xen = XenError.fromErrno(errnoOf(code), "dm_op");
    const err = classifyXenError(xen, "map range");
    expect(err).toBeInstanceOf(NotifierError);
    expect(err).toMatchObject({ kind, cause: xen });
    expect((err as Error).message).toContain("map range");
  });

  it("passes NotifierErrors and non-errors through, and classifies SysErrors by errno", () => {
    const n = new NotifierError("Unsupported", "x");
    expect(classifyXenError(n, "y")).toBe(n);
    expect(classifyXenError("text", "y")).toBe("text");
    expect(classifyXenError(new SysError("ioctl", errnoOf("EEXIST")), "y")).toMatchObject({ kind: "AddressInUse" });
    const plain = new RangeError("bad");
    expect(classifyXenError(plain, "y")).toBe(plain);
  });
});
