// Run by xen-sys.sh in dom0: node xen-sys.mjs <xl list -v output> <xl info output> <domU name>
// Prints "RIG: ok ..." per passed check and "RIG: FAIL xen-sys <what>: ours <x>, xl <y>" per difference,
// then "RIG: ok xen-sys" only if nothing differed.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import * as xenSys from "@xen-vhost/xen-sys";

const { Xen, XenError, XenStore, XenStoreError } = xenSys;
const [xlListFile, xlInfoFile, domuName] = process.argv.slice(2);
let failures = 0;
const ok = (check, detail = "") => console.log(`RIG: ok ${check}${detail ? ` ${detail}` : ""}`);
const fail = (what, detail) => {
  failures++;
  console.log(`RIG: FAIL xen-sys ${what}: ${detail instanceof Error ? `${detail.name}${detail.kind ? `(${detail.kind})` : ""}: ${detail.message}` : detail}`);
};
const same = (what, ours, theirs) => {
  if (String(ours) === String(theirs)) return true;
  fail(what, `ours ${ours}, xl ${theirs}`);
  return false;
};
const timed = (fn) => {
  const t0 = process.hrtime.bigint();
  const r = fn();
  return [r, (Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)];
};

// `xl list -v`: Name ID Mem VCPUs State Time(s) UUID Reason-Code Security-Label
function parseXlList(text) {
  const rows = new Map();
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 7 || !/^\d+$/.test(f[1])) continue;
    rows.set(Number(f[1]), { name: f[0], mem: Number(f[2]), vcpus: Number(f[3]), state: f[4], uuid: f[6] });
  }
  return rows;
}
// `xl info`: "key : value" lines
function parseXlInfo(text) {
  return Object.fromEntries(text.split("\n").filter((l) => l.includes(":")).map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i).trim(), l.slice(i + 1).trim()];
  }));
}
// xl's state column letters for the flags that do not change from one instant to the next
// (r and b do: a vCPU runs or blocks between the two snapshots). xl_info.c: "rbpscd".
const stableState = (s) => s.slice(2, 6);
function ourState(d) {
  const crashed = d.shutdown && d.shutdownReason === 3;
  return `${d.paused ? "p" : "-"}${d.shutdown && !crashed ? "s" : "-"}${crashed ? "c" : "-"}${d.dying ? "d" : "-"}`;
}

console.log(`RIG: xen-sys checks start (node up ${process.uptime().toFixed(1)} s)`);
// Runs a xenstore-* tool; returns stdout (trimmed) or undefined when it exits non-zero.
function tool(name, ...args) {
  try {
    return execFileSync(name, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return undefined;
  }
}
const nextEvent = (emitter, name, ms, what) => new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error(`${what}: no ${name} event within ${ms} ms`)), ms);
  emitter.once(name, (...a) => { clearTimeout(t); resolve(a); });
});

async function xenstoreChecks(transport, xl) {
  const base = `/rig/xen-sys/${transport}`;
  let store;
  let good = true;
  const check = (what, ours, theirs) => (good = same(`xenstore(${transport}) ${what}`, ours, theirs) && good);
  try {
    store = await XenStore.open({ transport });
    // names and domain paths
    for (const [domid, row] of xl) {
      check(`getDomainPath(${domid})`, await store.getDomainPath(domid), `/local/domain/${domid}`);
      check(`name of domain ${domid}`, await store.read(`/local/domain/${domid}/name`), row.name);
    }
    check("directory /local/domain", (await store.directory("/local/domain")).sort().join(","),
      (tool("xenstore-list", "/local/domain") ?? "").split("\n").sort().join(","));
    // ours -> tools
    await store.write(`${base}/ours`, "written by xen-sys");
    check("xenstore-read of our write", tool("xenstore-read", `${base}/ours`), "written by xen-sys");
    // tools -> ours
    tool("xenstore-write", `${base}/theirs`, "written by xenstore-write");
    check("our read of xenstore-write's value", await store.read(`${base}/theirs`), "written by xenstore-write");
    // permissions as xenstore-ls -p shows them
    await store.setPerms(`${base}/ours`, [{ domid: 0, perm: "none" }, { domid: 1, perm: "read" }]);
    const lsp = tool("xenstore-ls", "-p", base) ?? "";
    const lspLine = lsp.split("\n").find((l) => l.includes("ours")) ?? lsp;
    check("xenstore-ls -p of our setPerms (n0,r1)", /\(n0,r1\)/.test(lspLine) ? "(n0,r1)" : JSON.stringify(lspLine), "(n0,r1)");
    check("getPerms", (await store.getPerms(`${base}/ours`)).map((p) => `${p.perm}${p.domid}`).join(","), "none0,read1");
    // a watch, fired by the tool
    // xenstored fires every watch once on registration. Seen on the connection's "watch" event (subscribed
    // before the request) and, if the API lets a caller see it, on the watch object.
    const seen = [];
    const onConn = (ev) => seen.push(ev);
    store.on("watch", onConn);
    const w = await store.watch(`${base}/watched`);
    let onObject = 0;
    w.on("change", () => onObject++);
    await new Promise((r) => setTimeout(r, 300));
    check("registration event on the connection", seen.some((ev) => ev.token === w.token), true);
    if (onObject === 0) console.log(`RIG:   xenstore(${transport}): the registration event reached store.on("watch") but not the watch object's "change" (emitted before watch() resolved)`);
    store.off("watch", onConn);
    const fired = nextEvent(w, "change", 15000, "watch after xenstore-write");
    tool("xenstore-write", `${base}/watched/child`, "1");
    const [changed] = await fired;
    check("watch event path", changed, `${base}/watched/child`);
    await w.close();
    // transaction
    await store.transaction(async (tx) => {
      await tx.write(`${base}/tx/a`, "1");
      await tx.write(`${base}/tx/b`, "2");
    });
    check("transaction result via xenstore-ls", tool("xenstore-list", `${base}/tx`)?.split("\n").sort().join(","), "a,b");
    // 64 requests in flight at once
    const many = await Promise.all(Array.from({ length: 64 }, () => store.read(`${base}/ours`)));
    check("64 concurrent reads", many.every((v) => v === "written by xen-sys"), true);
    // errors
    try {
      await store.read(`${base}/no-such-node`);
      check("read of a missing node", "no error", "ENOENT");
    } catch (e) {
      check("read of a missing node", e instanceof XenStoreError ? e.code : e, "ENOENT");
    }
    check("tryRead of a missing node", await store.tryRead(`${base}/no-such-node`), undefined);
    // removal seen by the tools
    await store.rm(base);
    check("xenstore-exists after our rm", tool("xenstore-exists", base) === undefined, true);
    if (good) ok(`xen-sys xenstore ${transport}`, `(${store.description}): names, directory, read/write both ways, perms, watch, transaction, 64 in flight, ENOENT, rm`);
  } catch (e) {
    fail(`xenstore(${transport})`, e);
  } finally {
    store?.close();
  }
}

const xl = parseXlList(readFileSync(xlListFile, "utf8"));
const info = parseXlInfo(readFileSync(xlInfoFile, "utf8"));
const xen = Xen.open();
try {
  // ---- domain list --------------------------------------------------------------------------------------
  const [domains, ms] = timed(() => xen.listDomains());
  console.log(`RIG: xen-sys listDomains: ${domains.length} domains in ${ms} ms (sysctl interface 0x${xen.control.sysctlVersion.accepted?.toString(16)})`);
  for (const d of domains) {
    console.log(`RIG:   domid ${d.domid}: totPages ${d.totPages} maxPages ${d.maxPages} vcpus ${d.onlineVcpus}/${d.maxVcpuId + 1} ` +
      `uuid ${d.uuid} flags 0x${d.flags.toString(16)} cpupool ${d.cpupool} gpaddrBits ${d.gpaddrBits} arch ${JSON.stringify(d.arch)}`);
  }
  const ids = domains.map((d) => d.domid).sort((a, b) => a - b).join(",");
  const xlIds = [...xl.keys()].sort((a, b) => a - b).join(",");
  let listOk = same("domids", ids, xlIds);
  const domu = [...xl.entries()].find(([, r]) => r.name === domuName)?.[0];
  if (domu === undefined) fail("setup", `xl list has no ${domuName}`);
  for (const d of domains) {
    const r = xl.get(d.domid);
    if (!r) continue;
    const memMiB = Number(((d.totPages + d.outstandingPages) * 4n) >> 10n); // xl: (current_memkb + outstanding_memkb) >> 10
    listOk = same(`domain ${d.domid} memory MiB`, memMiB, r.mem) && listOk;
    listOk = same(`domain ${d.domid} online vcpus`, d.onlineVcpus, r.vcpus) && listOk;
    listOk = same(`domain ${d.domid} uuid`, d.uuid, r.uuid) && listOk;
    listOk = same(`domain ${d.domid} state flags (pscd)`, ourState(d), stableState(r.state)) && listOk;
  }
  if (listOk) ok("xen-sys domain list", `domids ${ids}; memory, vcpus, uuid, pscd flags equal to xl list -v`);

  // ---- getdomaininfo (domctl) ---------------------------------------------------------------------------
  let one = true;
  for (const d of domains) {
    const g = xen.getDomainInfo(d.domid);
    for (const k of ["domid", "totPages", "maxPages", "onlineVcpus", "maxVcpuId", "uuid", "cpupool"]) {
      one = same(`getDomainInfo(${d.domid}).${k} vs the list entry`, g[k], d[k]) && one;
    }
  }
  try {
    xen.getDomainInfo(4242);
    one = false;
    fail("getDomainInfo(4242)", "no error for a domain that does not exist");
  } catch (e) {
    if (e instanceof XenError && e.kind === "NoSuchDomain") console.log(`RIG:   getDomainInfo(4242): ${e.kind}: ${e.message}`);
    else { one = false; fail("getDomainInfo(4242)", e); }
  }
  if (one) ok("xen-sys getdomaininfo", "agrees with getdomaininfolist; a missing domain is NoSuchDomain");

  // ---- physinfo ----------------------------------------------------------------------------------------
  const p = xen.physinfo();
  let phys = true;
  phys = same("physinfo nr_cpus", p.nrCpus, info.nr_cpus) && phys;
  phys = same("physinfo max_cpu_id", p.maxCpuId, info.max_cpu_id) && phys;
  phys = same("physinfo nr_nodes", p.nrNodes, info.nr_nodes) && phys;
  phys = same("physinfo cores_per_socket", p.coresPerSocket, info.cores_per_socket) && phys;
  phys = same("physinfo threads_per_core", p.threadsPerCore, info.threads_per_core) && phys;
  phys = same("physinfo total_memory MiB", Number((p.totalPages * 4n) >> 10n), info.total_memory) && phys;
  phys = same("physinfo cpu_mhz", `${Math.floor(p.cpuKhz / 1000)}.${String(p.cpuKhz % 1000).padStart(3, "0")}`, info.cpu_mhz) && phys;
  const ourCaps = Object.entries(p.capabilities).filter(([, v]) => v).map(([k]) => k.replace(/_/g, "-")).sort().join(" ");
  const xlCaps = (info.virt_caps ?? "").split(/\s+/).filter(Boolean).map((c) => c.replace(/_/g, "-")).sort().join(" ");
  phys = same("physinfo capabilities vs virt_caps", ourCaps, xlCaps) && phys;
  if (phys) ok("xen-sys physinfo", `${p.nrCpus} cpus, ${Number((p.totalPages * 4n) >> 10n)} MiB, caps ${ourCaps}`);

  // ---- dm_op nr_vcpus ----------------------------------------------------------------------------------
  if (domu !== undefined) {
    try {
      const n = xen.nrVcpus(domu);
      if (same("dm_op nr_vcpus", n, xl.get(domu).vcpus)) ok("xen-sys dm_op nr_vcpus", `domain ${domu}: ${n}`);
    } catch (e) {
      fail(`dm_op nr_vcpus (domain ${domu})`, e);
    }
  }

  // ---- IOREQ server lifecycle on the domU (needs the IOREQ-enabled hypervisor) ---------------------------
  if (domu !== undefined) {
    let id;
    try {
      id = xen.createIoreqServer(domu);
      const si = xen.getIoreqServerInfo(domu, id);
      const pages = xen.mapIoreqServerPages(domu, id);
      // struct ioreq (hvm/ioreq.h): addr u64, data u64, count u32, size u32, vp_eport u32 @24, pad u16,
      // state:4|data_is_ptr:1|dir:1|df:1|pad:1 u8 @30, type u8 @31; 32 bytes per vCPU.
      // Xen writes each vCPU's vp_eport into the page when the server is enabled (ioreq_update_evtchn),
      // not at creation or mapping: read it after enabling.
      const v = new DataView(pages.buffer);
      const before = v.getUint32(24, true);
      xen.mapIoRangeToIoreqServer(domu, id, 0x2000000n, 0x20001ffn);
      xen.setIoreqServerState(domu, id, true);
      const eport = v.getUint32(24, true), state = v.getUint8(30) & 0xf;
      console.log(`RIG:   ioreq server ${id}: vCPU0 vp_eport ${before} before enable, ${eport} after`);
      xen.setIoreqServerState(domu, id, false);
      xen.unmapIoRangeFromIoreqServer(domu, id, 0x2000000n, 0x20001ffn);
      const bytes = pages.buffer.byteLength;
      xen.unmap(pages.buffer);
      if (state !== 0 || eport === 0) fail("ioreq page", `vCPU 0 slot: state ${state} (want 0, NONE), vp_eport ${eport} (want a port)`);
      else ok("xen-sys ioreq server", `id ${id} on domain ${domu}: ${pages.frames} ioreq frame(s) (${bytes} bytes), vCPU0 vp_eport ${eport}, bufioreq_port ${si.bufioreqPort}; mmio range mapped, enabled, disabled`);
    } catch (e) {
      fail(`ioreq server (domain ${domu})`, e);
    } finally {
      if (id !== undefined) {
        try { xen.destroyIoreqServer(domu, id); } catch (e) { fail("destroyIoreqServer", e); }
      }
    }

    // ---- foreign mapping of guest RAM (GUEST_RAM0_BASE 0x40000000 = gfn 0x40000) and of a hole ---------
    try {
      const m = xen.mapForeignPages(domu, [0x40000n, 0x40001n]);
      const words = new Uint32Array(m.buffer);
      let nonzero = 0;
      for (const w of words) if (w !== 0) nonzero++;
      xen.unmap(m.buffer);
      let holeOk = false, holeWhy = "no error";
      try {
        const h = xen.mapForeignPages(domu, [0x40000n, 0x7000000n]);
        xen.unmap(h.buffer);
      } catch (e) {
        holeOk = e instanceof XenError && e.kind === "MappingFailed";
        holeWhy = `${e.kind}: ${e.message}`;
      }
      if (!holeOk) fail("mapForeignPages of a gfn outside guest RAM", holeWhy);
      else ok("xen-sys foreign map", `2 pages at gfn 0x40000 (${nonzero} nonzero words); a hole -> ${holeWhy}`);
    } catch (e) {
      fail(`mapForeignPages (domain ${domu})`, e);
    }
  }

  // ---- console_io --------------------------------------------------------------------------------------
  // The marker below is only ever written through the hypercall, never to stdout.
  const token = Math.random().toString(36).slice(2, 10);
  xen.consoleWrite(`RIG: ok console_${"io"} written by Xen.consoleWrite token=${token}\n`);
  console.log(`RIG: console_io write returned (token reversed: ${[...token].reverse().join("")})`);

  // ---- XenStore, over both transports, against the xenstore-* tools -------------------------------------
  for (const transport of ["socket", "xenbus"]) await xenstoreChecks(transport, xl);
} catch (e) {
  fail("unexpected exception", e);
  console.log(e?.stack);
} finally {
  xen.close();
}
if (failures === 0) ok("xen-sys");
process.exitCode = failures ? 1 : 0;
