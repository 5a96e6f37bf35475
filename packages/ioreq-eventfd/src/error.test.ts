import { describe, expect, it } from "vitest";
import { SysError, errnoOf } from "@xen-vhost/vmm-sys-util";
import { NotifierError, classifyErrno } from "./error.js";

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
