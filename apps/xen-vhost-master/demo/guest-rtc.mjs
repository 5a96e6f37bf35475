// Demo guest program: what `hwclock -f /dev/rtc1` does with the seed's ds1338 at 0x20 behind virtio-i2c
// (Linux i2c-virtio + rtc-ds1307): set the register pointer to 0, read the seven BCD time registers.
// args: { base, irq }
import { VirtioMmioDriver, VirtioI2cDriver } from "@xen-vhost/xen-sim/guest";

const bcd = (b) => (b >> 4) * 10 + (b & 0xf);
const two = (n) => String(n).padStart(2, "0");

export default function main({ guest, vcpu, args, log }) {
  const drv = new VirtioMmioDriver(guest, vcpu, BigInt(args.base), { irq: args.irq, log });
  const bus = VirtioI2cDriver.init(drv);
  if (!bus.transfer(0x20, { write: Uint8Array.of(0) }).ok) throw new Error("no ds1338 at 0x20");
  const t = bus.transfer(0x20, { read: 7 }).data;
  const time = `20${two(bcd(t[6]))}-${two(bcd(t[5] & 0x1f))}-${two(bcd(t[4] & 0x3f))} ${two(bcd(t[2] & 0x3f))}:${two(bcd(t[1] & 0x7f))}:${two(bcd(t[0] & 0x7f))} UTC`;
  log(`hwclock: ds1338 at 0x20 reads ${time}`);
  drv.reset();
  return { time };
}
