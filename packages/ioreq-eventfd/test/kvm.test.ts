// The /dev/kvm binding itself: capabilities, error classification, argument checks, lifetimes.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventFd, MemoryMapping, pageSize } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { Kvm, NotifierError, kvmAbi } from "../src/index.js";

const hasKvm = kvmAvailable();
function kvmAvailable(): boolean {
  try {
    Kvm.open().close();
    return true;
  } catch {
    return false;
  }
}

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error("did not throw");
}

describe("Kvm.open without KVM", () => {
  it("a missing device node is DeviceUnavailable (ENOENT)", () => {
    const err = thrown(() => Kvm.open("/nonexistent/kvm"));
    expect(err).toBeInstanceOf(NotifierError);
    expect(err).toMatchObject({ kind: "DeviceUnavailable", cause: { code: "ENOENT" } });
  });

  it("a node that is not KVM is DeviceUnavailable (ENOTTY) and its fd is closed", () => {
    const leaks = fdLeakCheck();
    expect(thrown(() => Kvm.open("/dev/null"))).toMatchObject({ kind: "DeviceUnavailable", cause: { code: "ENOTTY" } });
    expect(leaks.check()).toEqual([]);
  });
});

describe.skipIf(!hasKvm)("Kvm binding (needs /dev/kvm)", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(() => {
    leaks = fdLeakCheck();
  });
  afterEach(() => {
    expect(leaks.check()).toEqual([]);
  });

  it("reports API version 12 and the capabilities the notifier relies on", () => {
    using kvm = Kvm.open();
    expect(kvm.apiVersion()).toBe(kvmAbi.KVM_API_VERSION);
    for (const cap of [kvmAbi.KvmCap.KVM_CAP_USER_MEMORY, kvmAbi.KvmCap.KVM_CAP_IOEVENTFD, kvmAbi.KvmCap.KVM_CAP_IRQFD])
      expect(kvm.checkExtension(cap)).toBeGreaterThan(0);
    expect(kvm.vcpuMmapSize()).toBeGreaterThanOrEqual(pageSize());
  });

  it("the VM outlives the Kvm fd; close() is idempotent and later calls are EBADF", () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    kvm.close();
    kvm.close();
    expect(vm.checkExtension(kvmAbi.KvmCap.KVM_CAP_IOEVENTFD)).toBeGreaterThan(0);
    const vcpu = vm.createVcpu(0);
    vm.close();
    expect(vcpu.closed).toBe(true);
    expect(() => vm.createVcpu(1)).toThrow(expect.objectContaining({ code: "EBADF" }));
    expect(() => vcpu.run()).toThrow(expect.objectContaining({ code: "EBADF" }));
    expect(() => kvm.apiVersion()).toThrow(expect.objectContaining({ code: "EBADF" }));
  });

  it("memory slots: misaligned memory is a RangeError, overlapping slots are AddressInUse", () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using mem = new MemoryMapping(2 * pageSize());
    expect(() => vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0x123n, memory: mem.buffer })).toThrow(RangeError);
    expect(() => vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0n, memory: mem.buffer.slice(0, 100) })).toThrow(RangeError);
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0n, memory: mem.buffer });
    expect(thrown(() => vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BigInt(pageSize()), memory: mem.buffer }))).toMatchObject({
      kind: "AddressInUse",
    });
    vm.removeUserMemoryRegion(0);
    vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: BigInt(pageSize()), memory: mem.buffer });
  });

  it("raw KVM_IOEVENTFD: deassigning an unknown registration is NotRegistered", () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using e = new EventFd();
    vm.assignIoeventfd({ fd: e.fd, addr: 0x1000n, len: 4, datamatch: 7n });
    expect(thrown(() => vm.deassignIoeventfd({ fd: e.fd, addr: 0x1000n, len: 4, datamatch: 8n }))).toMatchObject({
      kind: "NotRegistered",
      cause: { code: "ENOENT" },
    });
    vm.deassignIoeventfd({ fd: e.fd, addr: 0x1000n, len: 4, datamatch: 7n });
  });

  it("raw KVM_IOEVENTFD: a bad length is InvalidArgument from the kernel", () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    using e = new EventFd();
    expect(thrown(() => vm.assignIoeventfd({ fd: e.fd, addr: 0x1000n, len: 3 }))).toMatchObject({ kind: "InvalidArgument" });
  });

  it.skipIf(process.arch !== "x64")("KVM_CREATE_IRQCHIP twice is a typed error; after vCPUs it is refused", () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    vm.createIrqchip();
    expect(vm.hasIrqchip).toBe(true);
    expect(thrown(() => vm.createIrqchip())).toBeInstanceOf(NotifierError);
  });

  it.skipIf(process.arch !== "x64")("vCPU registers round-trip through KVM_SET_REGS/KVM_GET_REGS and SREGS", () => {
    using kvm = Kvm.open();
    using vm = kvm.createVm();
    const vcpu = vm.createVcpu(0);
    // Architectural reset state: CS = F000 with base FFFF0000, IP = FFF0 (Intel SDM vol. 3, 9.1.4).
    expect(vcpu.getSegment("cs")).toMatchObject({ selector: 0xf000, base: 0xffff0000n });
    expect(vcpu.getRegs().rip).toBe(0xfff0n);
    vcpu.setRegs({ rip: 0x1234n, rax: 0xdeadbeefn });
    vcpu.setSregs({ segments: { cs: { base: 0n, selector: 0 } } });
    expect(vcpu.getRegs()).toMatchObject({ rip: 0x1234n, rax: 0xdeadbeefn, rflags: 2n });
    expect(vcpu.getSegment("cs")).toMatchObject({ selector: 0, base: 0n });
  });
});
