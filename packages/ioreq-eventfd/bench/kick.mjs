// Doorbell cost, guest side: a real-mode guest writes a 4-byte MMIO doorbell N times in a loop.
// - ioeventfd: KVM signals the eventfd in the kernel; the whole loop is one KVM_RUN.
// - exit:      no ioeventfd; every write is a KVM_EXIT_MMIO handled by this process (what a device model
//              without ioeventfd pays per kick).
// Prints ns per doorbell write for both and the eventfd count (must equal N). Needs /dev/kvm on x86_64.
import { KvmNotifier, kvmAvailable } from "../dist/index.js";
import { Asm16, RealModeVm } from "../dist/testing/index.js";

if (process.arch !== "x64" || !kvmAvailable()) {
  console.log("skipped: needs /dev/kvm on x86_64");
  process.exit(0);
}

const N = 50_000;
const ROUNDS = 5;
const DOORBELL = 0x10000;

function program() {
  const a = new Asm16().movAx(DOORBELL >> 4).movDsAx().movEax(1).movCx(N);
  const top = a.length;
  a.storeEax(0).loopTo(top).hlt();
  return a.bytes();
}

function once(withIoeventfd) {
  const g = RealModeVm.create({ code: program() });
  const n = new KvmNotifier(g.vm);
  try {
    const h = withIoeventfd ? n.ioeventfd({ addr: BigInt(DOORBELL), len: 4 }) : undefined;
    let exits = 0;
    const t0 = process.hrtime.bigint();
    for (;;) {
      const e = g.run();
      if (e.reason === "hlt") break;
      if (e.reason !== "mmio") throw new Error(`unexpected exit ${e.reason}`);
      exits++;
    }
    const ns = Number(process.hrtime.bigint() - t0);
    const count = h ? h.eventfd.read() : null;
    return { ns, exits, count };
  } finally {
    n.close();
    g.close();
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

for (const [name, withIoeventfd] of [["ioeventfd", true], ["mmio-exit", false]]) {
  once(withIoeventfd); // warm up
  const runs = Array.from({ length: ROUNDS }, () => once(withIoeventfd));
  const last = runs.at(-1);
  const perKick = median(runs.map((r) => r.ns / N));
  console.log(
    `${name.padEnd(10)} ${perKick.toFixed(0).padStart(6)} ns/doorbell write  (N=${N}, median of ${ROUNDS}; userspace exits ${last.exits}, eventfd count ${last.count ?? "-"})`,
  );
}
