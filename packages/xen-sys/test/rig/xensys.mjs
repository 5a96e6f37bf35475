// @xen-vhost/xen-sys against real Xen (the repository's xen-rig: Xen 4.17 arm64 + Linux 6.1 dom0 under QEMU),
// run by xensys.sh inside dom0 with a paused domU. Every check prints "RIG: ok <what>" or "RIG: FAIL <what> <why>",
// and "RIG: ok xen-sys" only when all passed.
import { addressOf } from "@xen-vhost/vmm-sys-util";
import { Xen, XenStore, XenError, XenStoreError, IoReq, XEN_PAGE_SIZE } from "@xen-vhost/xen-sys";

let failures = 0;
const ok = (c, d = "") => console.log(`RIG: ok ${c}${d ? ` ${d}` : ""}`);
const fail = (c, why) => { failures++; console.log(`RIG: FAIL ${c} ${why instanceof Error ? `${why.name} ${why.kind ?? ""}: ${why.message}` : why}`); };
async function check(name, f) { try { const d = await f(); ok(name, d ?? ""); } catch (e) { fail(name, e); } }
const withTimeout = (p, ms, what) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: timeout ${ms} ms`)), ms).unref())]);
const domu = Number(process.env.DOMU);

const xen = Xen.open();
await check("listDomains", () => {
  const doms = xen.listDomains();
  const d0 = doms.find((d) => d.domid === 0);
  if (!d0 || !d0.running && !d0.blocked) throw new Error(`dom0 missing: ${JSON.stringify(doms.map((d) => d.domid))}`);
  const du = doms.find((d) => d.domid === domu);
  if (!du || !du.paused) throw new Error(`domU ${domu} missing or not paused`);
  return `${doms.map((d) => `${d.domid}:${d.uuid}:${d.totPages}pages:${d.onlineVcpus}vcpu:gic${d.arch.gicVersion}`).join(" ")} sysctl=0x${xen.control.sysctlVersion.accepted.toString(16)}`;
});
await check("physinfo", () => { const p = xen.physinfo(); if (p.nrCpus < 1) throw new Error("no cpus"); return `cpus=${p.nrCpus} total=${p.totalPages} free=${p.freePages} hvm=${p.capabilities.hvm}`; });
await check("getDomainInfo", () => { const i = xen.getDomainInfo(domu); return `domid=${i.domid} paused=${i.paused} maxVcpuId=${i.maxVcpuId} gpaddrBits=${i.gpaddrBits} domctl=0x${xen.control.domctlVersion.accepted.toString(16)}`; });
await check("getDomainInfo missing", () => { try { xen.getDomainInfo(999); } catch (e) { if (e instanceof XenError && e.kind === "NoSuchDomain") return e.message; throw e; } throw new Error("no error"); });
await check("consoleWrite", () => { xen.consoleWrite("XENSYS-CONSOLE hello from dom0 via console_io\n"); });
await check("capabilities", () => JSON.stringify(xen.capabilities()));
await check("nrVcpus", () => { const n = xen.nrVcpus(domu); if (n !== 1) throw new Error(`nr_vcpus ${n}`); return String(n); });
await check("dm_op on a missing domain", () => { try { xen.nrVcpus(998); } catch (e) { if (e instanceof XenError) return `${e.kind} ${e.message}`; throw e; } throw new Error("no error"); });

// ioreq server + ioreq page + event channel to the vCPU's port
let id;
await check("createIoreqServer", () => { id = xen.createIoreqServer(domu); return `id=${id}`; });
let pages;
await check("mapIoreqServerPages", () => {
  pages = xen.mapIoreqServerPages(domu, id);
  return `frames=${pages.frames} size=${xen.resourceSize(domu, 0, id)}`;
});
await check("setIoreqServerState+mapIoRange", () => {
  xen.setIoreqServerState(domu, id, true);
  xen.mapIoRangeToIoreqServer(domu, id, 0x2000000n, 0x20001ffn);
  const info = xen.getIoreqServerInfo(domu, id);
  const req = IoReq.read(new DataView(pages.buffer), 0);
  if (req.vp_eport === 0) throw new Error("vcpu 0 port is 0");
  return `vp_eport=${req.vp_eport} state=${req.state} bufioreqPort=${info.bufioreqPort}`;
});
await check("evtchn bind to vCPU port", () => {
  const ec = xen.openEventChannels();
  const port = ec.bindInterdomain(domu, IoReq.read(new DataView(pages.buffer), 0).vp_eport);
  ec.close();
  return `local=${port}`;
});
await check("evtchn loopback on the loop", async () => {
  const ec = xen.openEventChannels();
  const a = ec.bindUnboundPort(0);
  const b = ec.bindInterdomain(0, a);
  // Xen sets the new interdomain port pending on bind (EVTCHNOP_bind_interdomain "may have lost
  // notifications"), so b may fire once by itself; wait for a.
  const seen = [];
  const got = new Promise((r) => ec.on("event", (p) => { seen.push(p); if (p === a) r(p); }));
  ec.notify(b);
  await withTimeout(got, 5000, "evtchn event");
  const back = new Promise((r) => ec.on("event", (p) => { if (p === b) r(p); }));
  ec.notify(a);
  await withTimeout(back, 5000, "evtchn event back");
  ec.close();
  return `a=${a} b=${b} seen=${seen}`;
});
await check("unmap+destroyIoreqServer", () => {
  xen.unmapIoRangeFromIoreqServer(domu, id, 0x2000000n, 0x20001ffn);
  xen.setIoreqServerState(domu, id, false);
  xen.unmap(pages.buffer);
  xen.destroyIoreqServer(domu, id);
});

// foreign mapping of guest RAM (Arm GUEST_RAM0_BASE = 0x40000000 → gfn 0x40000)
await check("mapForeignPages", () => {
  const m = xen.mapForeignPages(domu, [0x40000n, 0x40001n]);
  const bytes = new Uint8Array(m.buffer);
  const len = bytes.length;
  const nz = bytes.reduce((n, b) => n + (b !== 0 ? 1 : 0), 0);
  xen.unmap(m.buffer);
  return `${len} bytes, ${nz} non-zero, detached=${m.buffer.byteLength === 0}`;
});
await check("mapForeignPages bad gfn", () => {
  try { xen.mapForeignPages(domu, [0x40000n, 0xfffffffn]); } catch (e) { if (e instanceof XenError && e.kind === "MappingFailed") return `${e.message} errors=${[...e.pageErrors]}`; throw e; }
  throw new Error("no error");
});

// gntdev: the domU's xenstore ring is grant ref 1 (GNTTAB_RESERVED_XENSTORE), granted to dom0 by libxl
await check("gntdev map+copy", () => {
  const g = xen.openGrantDevice();
  const m = g.mapGrantRefs(domu, [1]);
  const local = new Uint8Array(64);
  const st = g.grantCopy([{ source: { ref: 1, offset: 0, domid: domu }, dest: { local }, len: 64 }]);
  const same = Buffer.compare(Buffer.from(local), Buffer.from(new Uint8Array(m.buffer, 0, 64))) === 0;
  const off = g.getOffsetForVaddr(addressOf(m.buffer));
  if (off.offset !== m.index || off.count !== 1) throw new Error(`get_offset_for_vaddr ${off.offset}/${off.count} vs index ${m.index}`);
  g.unmapGrantRefs(m);
  g.close();
  if (st[0] !== 0 || !same) throw new Error(`status=${st[0]} same=${same}`);
  return `status=${st[0]} same=${same}`;
});
xen.close();

// XenStore over both transports
for (const transport of ["socket", "xenbus"]) {
  await check(`xenstore ${transport}`, async () => {
    const xs = await XenStore.open({ transport });
    const via = xs.description;
    const name = await xs.read("/local/domain/0/name");
    const dp = await xs.getDomainPath(domu);
    const intro = await xs.isDomainIntroduced(domu);
    const names = await xs.directory("/local/domain");
    const base = `/local/domain/0/xensys-${transport}`;
    const events = [];
    const w = await xs.watch(base, { token: "tok", onChange: (p) => events.push(p) });
    await xs.write(`${base}/a`, "1");
    await xs.transaction(async (tx) => { await tx.write(`${base}/b`, String(Number(await tx.read(`${base}/a`)) + 1)); });
    const b = await xs.read(`${base}/b`);
    await xs.rm(base);
    let err;
    try { await xs.read(`${base}/a`); } catch (e) { err = e; }
    if (!(err instanceof XenStoreError) || err.code !== "ENOENT") throw new Error(`expected ENOENT, got ${err}`);
    await new Promise((r) => setTimeout(r, 200));
    await w.close();
    xs.close();
    if (name !== "Domain-0" || b !== "2" || !intro || events.length < 4 || events[0] !== base) throw new Error(`name=${name} b=${b} intro=${intro} events=${events}`);
    return `${via} name=${name} dp=${dp} doms=${names} events=${events.join(",")} err="${err.message}"`;
  });
}

if (failures === 0) console.log("RIG: ok xen-sys");
process.exit(failures === 0 ? 0 : 1);
