// ABI test: the TS layout tables against the C headers (Debian libxen-dev + the kernel uapi), for x86_64 with
// `cc` and arm64 with `aarch64-linux-gnu-gcc`. Skips (with the missing component named) only when a compiler
// or the headers are absent; ABI_TEST_REQUIRED=1 (CI) turns a skip into a failure.
import { describe, expect, it } from "vitest";
import { defineStruct, u16, u32, u64, bits } from "@xen-vhost/vmm-sys-util";
import { abiConstants, abiIncludes, abiStructs, type AbiStruct } from "../src/abi/manifest.js";
import type { XenArch } from "../src/abi/domctl.js";
import { compileProbe, compilerVersion, generateProbe, toolchain } from "./abi-probe.js";

const required = process.env["ABI_TEST_REQUIRED"] === "1";

/** The bytes a bit field covers when set to all ones in a zeroed struct, per the TS layout's own writer. */
function expectedBits(st: AbiStruct, field: string): number[] {
  const f = st.layout.fields[field];
  if (!f || f.kind !== "bits") throw new Error(`${field} is not a bit field`);
  const buf = new Uint8Array(st.layout.size);
  st.layout.write(new DataView(buf.buffer), 0, { [field]: 2 ** f.width - 1 });
  return [...buf];
}

for (const arch of ["x86_64", "arm64"] as XenArch[]) {
  const tc = toolchain(arch);
  describe(`ABI ${arch}`, () => {
    if (tc.missing && required) {
      it(`has a toolchain (ABI_TEST_REQUIRED=1)`, () => {
        expect.fail(`ABI test for ${arch} required but ${tc.missing} is missing`);
      });
      return;
    }

    it.skipIf(tc.missing !== undefined)(
      `every struct, field, bit field and ioctl number matches the C headers (needs ${tc.missing ?? tc.cc})`,
      () => {
        const probe = generateProbe(abiStructs, abiConstants, abiIncludes, arch);
        const r = compileProbe(tc, probe);
        expect(r.errors, `${compilerVersion(tc)} rejected the probe`).toEqual([]);
        expect(r.ok).toBe(true);
        expect(probe.asserts).toBeGreaterThan(400);
        for (const p of probe.bitProbes) {
          const got = r.sections.get(p.section);
          expect(got, `section ${p.section} for ${p.struct.ctype}.${p.field}`).toBeDefined();
          expect([...got!], `${p.struct.ctype}.${p.field} all-ones bytes`).toEqual(expectedBits(p.struct, p.field));
        }
        // ioreq's 4 + buf_ioreq's 5 bit fields (state, data_is_ptr, dir, df, _pad1; type, pad, dir, size, addr)
        expect(probe.bitProbes.length).toBe(10);
      },
    );

    it.skipIf(tc.missing !== undefined)(`a drifted layout fails the probe (needs ${tc.missing ?? tc.cc})`, () => {
      // Each drift a careless edit could make: a wrong offset, a wrong size, a misplaced bit field, a wrong ioctl.
      const drifted: AbiStruct[] = [
        {
          ctype: "struct privcmd_mmapbatch_v2",
          header: "test",
          layout: defineStruct("privcmd_mmapbatch_v2", { size: 32, align: 8 }, {
            num: u32(0), dom: u16(4), addr: u64(8), arr: u64(16), err: u64(24),
          }) as unknown as AbiStruct["layout"],
        },
        {
          ctype: "struct privcmd_mmap_resource",
          header: "test",
          layout: defineStruct("privcmd_mmap_resource", { size: 32, align: 8 }, {
            dom: u16(0), type: u32(4), id: u32(12), idx: u32(8), num: u64(16), addr: u64(24),
          }) as unknown as AbiStruct["layout"],
        },
        {
          ctype: "struct xen_dm_op_set_irq_level",
          header: "test",
          layout: defineStruct("xen_dm_op_set_irq_level", { size: 8, align: 4 }, {
            irq: u32(0), level: u16(4),
          }) as unknown as AbiStruct["layout"],
        },
      ];
      const r = compileProbe(tc, generateProbe(drifted, [{ c: "IOCTL_PRIVCMD_DM_OP", value: 0x00185005, header: "test" }], abiIncludes, arch));
      expect(r.ok).toBe(false);
      const text = r.errors.join("\n");
      expect(text).toContain("offsetof(struct privcmd_mmap_resource, id) == 12");
      expect(text).toContain("offsetof(struct privcmd_mmap_resource, idx) == 8");
      expect(text).toContain("sizeof(struct xen_dm_op_set_irq_level.level) == 2");
      expect(text).toContain("IOCTL_PRIVCMD_DM_OP == 0x185005");
      expect(text).not.toContain("privcmd_mmapbatch_v2");

      // A bit field one position off compiles, but its bytes differ from the layout's.
      const badBits: AbiStruct = {
        ctype: "struct ioreq",
        header: "test",
        layout: defineStruct("ioreq", { size: 32, align: 8 }, { state: bits(30, 1, 4) }) as unknown as AbiStruct["layout"],
      };
      const probe = generateProbe([badBits], [], abiIncludes, arch);
      const r2 = compileProbe(tc, probe);
      expect(r2.errors).toEqual([]);
      const got = [...r2.sections.get(probe.bitProbes[0]!.section)!];
      expect(got).not.toEqual(expectedBits(badBits, "state"));
      expect(got[30]).toBe(0x0f);
    });
  });
}
