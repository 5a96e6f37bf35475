// Guest program "grants": exercises the grant table against a backend reachable over MMIO at `base`.
// It grants one page read-write and one read-only to dom0, fills them, tells the backend the refs
// (writes to base+0x0 / base+0x4), then asks it to map them (read base+0x8), tries to end access while the
// backend holds the mapping (must fail: GTF_reading/GTF_writing), asks it to unmap (write base+0xc) and ends
// access for real. Returns what it observed.
import type { GuestContext } from "../program.js";
import { GuestAllocator } from "../virtio/driver.js";

export default function grants(ctx: GuestContext): unknown {
  const { base = "0x2000000" } = ctx.args as { base?: string };
  const b = BigInt(base);
  const { guest, vcpu } = ctx;
  const alloc = GuestAllocator.forGuest(guest);
  const rw = alloc.alloc(4096, 4096);
  const ro = alloc.alloc(4096, 4096);
  guest.memory.fill(rw, 4096, 0xa5);
  guest.memory.fill(ro, 4096, 0x5a);
  const rwRef = guest.grants.grantAccess(rw >> 12n);
  const roRef = guest.grants.grantAccess(ro >> 12n, { readOnly: true });
  ctx.log(`granted page 0x${rw.toString(16)} as ref ${rwRef} (rw), 0x${ro.toString(16)} as ref ${roRef} (ro)`);
  vcpu.write32(b, rwRef);
  vcpu.write32(b + 4n, roRef);
  const mapped = vcpu.read32(b + 8n);
  const flagsWhileMapped = guest.grants.flags(rwRef);
  const endWhileMapped = guest.grants.endAccess(rwRef);
  ctx.log(`backend mapped: ${mapped}; flags 0x${flagsWhileMapped.toString(16)}; end access while mapped: ${endWhileMapped}`);
  vcpu.write32(b + 12n, 1);
  const endAfter = guest.grants.endAccess(rwRef) && guest.grants.endAccess(roRef);
  const firstByte = guest.memory.load8(rw);
  ctx.log(`end access after unmap: ${endAfter}; rw page byte 0 now 0x${firstByte.toString(16)}`);
  return { rwRef, roRef, mapped, flagsWhileMapped, endWhileMapped, endAfter, firstByte };
}
