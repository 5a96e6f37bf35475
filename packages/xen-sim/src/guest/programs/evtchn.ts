// Guest program "evtchn": allocates an unbound port for dom0, tells the backend over MMIO (write at base),
// waits for the backend's event, answers with one of its own. Returns what it saw.
import type { GuestContext } from "../program.js";

export default function evtchn(ctx: GuestContext): unknown {
  const { base = "0x2000000" } = ctx.args as { base?: string };
  const port = ctx.guest.allocUnboundPort(0);
  ctx.log(`allocated port ${port} for dom0`);
  ctx.vcpu.write32(BigInt(base), port);
  const events = ctx.guest.waitEvents(5000);
  ctx.log(`events: ${events.join(",")}`);
  ctx.guest.unmaskEvent(port);
  ctx.guest.notify(port);
  return { port, events };
}
