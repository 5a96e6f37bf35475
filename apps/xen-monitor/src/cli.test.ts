import { describe, expect, it } from "vitest";
import { XenError } from "@xen-vhost/xen-sys";
import { USAGE, parseCommandLine } from "./cli.js";
import { EXIT_CODES, MonitorError } from "./error.js";

function usageError(argv: string[]): MonitorError {
  try {
    parseCommandLine(argv);
  } catch (err) {
    expect(err).toBeInstanceOf(MonitorError);
    return err as MonitorError;
  }
  throw new Error(`accepted ${argv.join(" ")}`);
}

describe("parseCommandLine", () => {
  it("has defaults and takes every option", () => {
    expect(parseCommandLine([])).toEqual({ interval: 1, once: false, json: false, console: true, scheduling: false, xenstore: true, xenstorePath: undefined });
    expect(parseCommandLine(["--interval", "0.25", "--json", "--no-console", "--scheduling", "--xenstore", "/tmp/xs"])).toEqual({
      interval: 0.25, once: false, json: true, console: false, scheduling: true, xenstore: true, xenstorePath: "/tmp/xs",
    });
    expect(parseCommandLine(["--once", "--no-xenstore"])).toMatchObject({ once: true, xenstore: false });
    expect(parseCommandLine(["-h"])).toBe("help");
  });

  it("refuses bad input with a Usage error (exit 2) naming it", () => {
    for (const [argv, what] of [
      [["--interval", "0"], "--interval 0"],
      [["--interval=-1"], "--interval -1"],
      [["--interval", "1e3"], "--interval 1e3"],
      [["--interval", "3601"], "--interval 3601"],
      [["--bogus"], "--bogus"],
      [["extra"], "extra"],
      [["--xenstore", "/x", "--no-xenstore"], "contradict"],
      [["--once", "--interval", "2"], "--once"],
    ] as const) {
      const e = usageError([...argv]);
      expect(e.kind).toBe("Usage");
      expect(e.exitCode).toBe(2);
      expect(e.message).toContain(what);
    }
  });

  it("documents every exit status", () => {
    for (const code of Object.values(EXIT_CODES)) expect(USAGE).toMatch(new RegExp(`^  ${code}  `, "m"));
  });
});

describe("MonitorError.from", () => {
  it("tells a missing privcmd, a non-root user, a domU and an unknown Xen apart", () => {
    const missing = MonitorError.from(new XenError("DeviceMissing", "x", { op: "open /dev/xen/privcmd", code: "ENOENT", path: "/dev/xen/privcmd" }));
    expect([missing.kind, missing.exitCode]).toEqual(["PrivcmdMissing", 3]);
    expect(missing.message).toContain("/dev/xen/privcmd does not exist");
    const notRoot = MonitorError.from(new XenError("PermissionDenied", "x", { op: "open /dev/xen/privcmd", code: "EACCES", path: "/dev/xen/privcmd" }));
    expect([notRoot.kind, notRoot.exitCode]).toEqual(["NotPrivileged", 4]);
    expect(notRoot.message).toContain("run as root");
    // what a domU gets: privcmd exists, the sysctl hypercall is refused (XSM dummy policy: -EPERM)
    const domU = MonitorError.from(new XenError("PermissionDenied", "x", { op: "sysctl getdomaininfolist", code: "EPERM", path: "/dev/xen/privcmd" }));
    expect([domU.kind, domU.exitCode]).toEqual(["NotPrivileged", 4]);
    expect(domU.message).toMatch(/^not dom0: Xen refused sysctl getdomaininfolist \(EPERM\)/);
    const version = MonitorError.from(new XenError("InterfaceVersion", "sysctl getdomaininfolist: Xen refused interface versions 0x15", { op: "sysctl getdomaininfolist" }));
    expect([version.kind, version.exitCode]).toEqual(["InterfaceVersion", 5]);
    const other = MonitorError.from(new XenError("OperationFailed", "sysctl getdomaininfolist: EFAULT", { op: "sysctl getdomaininfolist", code: "EFAULT" }));
    expect([other.kind, other.exitCode]).toEqual(["Failed", 1]);
    expect(MonitorError.from(new Error("boom")).kind).toBe("Failed");
  });
});
