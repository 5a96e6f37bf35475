// ABI test (STYLE.md section 4): generate a C probe from the TS tables, compile it against the system's
// <linux/kvm.h>, and compare sizeof/_Alignof/offsetof/field sizes and every constant and ioctl number.
// x86-only structs (kvm_regs, kvm_sregs...) are checked on x86_64 only: arm64's differ.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { FieldSpec } from "@xen-vhost/vmm-sys-util";
import * as abi from "../src/kvm/abi.js";

const isX86 = process.arch === "x64";

function hasCc(): boolean {
  try {
    execFileSync("cc", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
const canProbe = hasCc() && existsSync("/usr/include/linux/kvm.h");
const required = process.env["ABI_TEST_REQUIRED"] === "1";

interface Probe {
  /** The parts of a StructLayout the probe reads (StructLayout<F> is invariant in F). */
  layout: { readonly name: string; readonly size: number; readonly align: number; readonly fields: Readonly<Record<string, FieldSpec>> };
  /** C type the layout mirrors (a struct, or a `__typeof__` of a union member). */
  ctype: string;
  /** For union members of struct kvm_run: the member name, whose offset in kvm_run is also checked. */
  runMember?: string;
  /** The layout covers a prefix of ctype (kvm_run's header): size is checked as offsetof(ctype, sizeAt). */
  sizeAt?: string;
  x86Only?: boolean;
}

const runMember = (m: string): string => `__typeof__(((struct kvm_run *)0)->${m})`;

const probes: Probe[] = [
  { layout: abi.KvmUserspaceMemoryRegion, ctype: "struct kvm_userspace_memory_region" },
  { layout: abi.KvmIoeventfd, ctype: "struct kvm_ioeventfd" },
  { layout: abi.KvmIrqfd, ctype: "struct kvm_irqfd" },
  { layout: abi.KvmIrqLevel, ctype: "struct kvm_irq_level" },
  { layout: abi.KvmRunHeader, ctype: "struct kvm_run", sizeAt: "hw" },
  { layout: abi.KvmRunIo, ctype: runMember("io"), runMember: "io" },
  { layout: abi.KvmRunMmio, ctype: runMember("mmio"), runMember: "mmio" },
  { layout: abi.KvmRunFailEntry, ctype: runMember("fail_entry"), runMember: "fail_entry" },
  { layout: abi.KvmRunInternal, ctype: runMember("internal"), runMember: "internal" },
  { layout: abi.KvmRegs, ctype: "struct kvm_regs", x86Only: true },
  { layout: abi.KvmSegment, ctype: "struct kvm_segment", x86Only: true },
  { layout: abi.KvmDtable, ctype: "struct kvm_dtable", x86Only: true },
  { layout: abi.KvmSregs, ctype: "struct kvm_sregs", x86Only: true },
];

const x86OnlyConstants = new Set(["KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_SET_TSS_ADDR"]);

/** Every numeric KVM_* export, plus the KvmCap and KvmExitReason tables. */
function constants(): Map<string, number> {
  const out = new Map<string, number>();
  for (const [name, v] of Object.entries(abi)) {
    if (typeof v === "number" && name.startsWith("KVM") && name !== "KVM_RUN_EXIT_OFFSET") out.set(name, v);
  }
  for (const [name, v] of Object.entries(abi.KvmCap)) out.set(name, v);
  for (const [name, v] of Object.entries(abi.KvmExitReason)) out.set(name, v);
  for (const name of [...out.keys()]) if (!isX86 && x86OnlyConstants.has(name)) out.delete(name);
  return out;
}

function fieldSize(f: FieldSpec): number {
  switch (f.kind) {
    case "bytes":
      return f.length;
    case "bits":
      return f.unit;
    case "u8":
    case "i8":
      return 1;
    case "u16":
    case "i16":
      return 2;
    case "u32":
    case "i32":
      return 4;
    case "u64":
    case "i64":
      return 8;
  }
}

function active(): Probe[] {
  return probes.filter((p) => isX86 || !p.x86Only);
}

function expected(): string[] {
  const lines: string[] = [];
  active().forEach((p) => {
    const name = p.layout.name;
    if (p.sizeAt) lines.push(`S ${name} ${p.layout.size}`);
    else lines.push(`S ${name} ${p.layout.size} ${p.layout.align}`);
    if (p.runMember) lines.push(`M ${name} ${abi.KVM_RUN_EXIT_OFFSET}`);
    for (const [field, spec] of Object.entries(p.layout.fields)) lines.push(`F ${name}.${field} ${spec.offset} ${fieldSize(spec)}`);
  });
  for (const [name, v] of constants()) lines.push(`C ${name} ${v >>> 0}`);
  return lines;
}

function probeSource(): string {
  const out: string[] = [
    "#include <stddef.h>",
    "#include <stdio.h>",
    "#include <linux/kvm.h>",
    "int main(void) {",
  ];
  active().forEach((p, i) => {
    const t = `t${i}`;
    const name = p.layout.name;
    out.push(`  { typedef ${p.ctype} ${t};`);
    if (p.sizeAt) out.push(`    printf("S ${name} %zu\\n", offsetof(${t}, ${p.sizeAt}));`);
    else out.push(`    printf("S ${name} %zu %zu\\n", sizeof(${t}), _Alignof(${t}));`);
    if (p.runMember) out.push(`    printf("M ${name} %zu\\n", offsetof(struct kvm_run, ${p.runMember}));`);
    for (const field of Object.keys(p.layout.fields))
      out.push(`    printf("F ${name}.${field} %zu %zu\\n", offsetof(${t}, ${field}), sizeof(((${t} *)0)->${field}));`);
    out.push("  }");
  });
  for (const name of constants().keys()) out.push(`  printf("C ${name} %lu\\n", (unsigned long)(${name}));`);
  out.push("  return 0;", "}");
  return out.join("\n");
}

describe("KVM ABI against <linux/kvm.h>", () => {
  it.skipIf(!canProbe && !required)("layouts, constants and ioctl numbers match the C headers (needs cc and linux-libc-dev)", () => {
    const dir = mkdtempSync(join(tmpdir(), "kvm-abi-"));
    try {
      writeFileSync(join(dir, "probe.c"), probeSource());
      execFileSync("cc", ["-std=gnu11", "-Wall", "-Werror", "-o", join(dir, "probe"), join(dir, "probe.c")]);
      const actual = execFileSync(join(dir, "probe"), { encoding: "utf8" }).trim().split("\n");
      expect(actual).toEqual(expected());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("ioctl numbers are the values strace prints on x86_64/arm64", () => {
    // Independent of the encoder: literals from `strace -e ioctl` of QEMU / kvmtool.
    expect(abi.KVM_CREATE_VM).toBe(0xae01);
    expect(abi.KVM_RUN).toBe(0xae80);
    expect(abi.KVM_SET_USER_MEMORY_REGION).toBe(0x4020ae46);
    expect(abi.KVM_IRQFD).toBe(0x4020ae76);
    expect(abi.KVM_IOEVENTFD).toBe(0x4040ae79);
    expect(abi.KVM_GET_SREGS).toBe(0x8138ae83);
  });
});
