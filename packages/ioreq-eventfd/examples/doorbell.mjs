// A guest rings a doorbell; the kernel signals an eventfd; no exit reaches this process.
// Run: pnpm build && node examples/doorbell.mjs   (x86_64 with /dev/kvm)
import { KvmNotifier } from "@xen-vhost/ioreq-eventfd";
import { Asm16, RealModeVm } from "@xen-vhost/ioreq-eventfd/testing";

// ds = 0x1000; mov dword [0], 1   -> a 4-byte write to guest-physical 0x10000; then hlt
const code = new Asm16().movAx(0x1000).movDsAx().movEax(1).storeEax(0).hlt().bytes();
const guest = RealModeVm.create({ code });
const notifier = new KvmNotifier(guest.vm);
try {
  const kick = notifier.ioeventfd({ addr: 0x10000n, len: 4, datamatch: 1n });
  console.log(notifier.kind, guest.run()); // kvm { reason: 'hlt' }  (no KVM_EXIT_MMIO)
  console.log(kick.eventfd.read()); // 1n
} finally {
  notifier.close(); // deassigns and closes the eventfd it created
  guest.close();
}
