// The XenStore nodes the toolstack writes for virtio-mmio devices, so a bridge finds its devices the way it
// does under real `xl`. Two generations:
//  - xl >= 4.18 `virtio = ["type=virtio,device22, transport=mmio"]`: tools/libs/light/libxl_virtio.c writes
//    backend/virtio/<domid>/<devid>/{irq,base,type,transport} plus the generic device nodes
//    (libxl_device.c: frontend, frontend-id, online, state) and the frontend device/virtio/<devid>.
//  - xl 4.17 `disk = ["backendtype=standalone, specification=virtio, vdev=xvda, ..."]`: libxl_disk.c writes
//    backend/virtio_disk/<domid>/51712/... and waits for the backend to reach state 2 (InitWait).
//    (/work/shared/xen-rig/README.md section "libxl / xl 4.17", seen on the rig.)

import type { XsPermission } from "@xen-vhost/xen-sys";

/** Writes one node (as dom0), optionally with its permissions (owner first, as XS_SET_PERMS). */
export type Seed = (path: string, value: string, perms?: XsPermission[]) => void;

export interface VirtioDeviceSpec {
  /** Frontend (guest) domain. */
  domid: number;
  devid: number;
  /** DT compatible "virtio,device<id in lower-case hex>", e.g. "virtio,device22" for i2c, "virtio,device4" for rng. */
  type: string;
  base: bigint;
  irq: number;
  backendDomid?: number;
  /** Initial backend state (XenbusStateInitialising = 1). */
  state?: number;
}

export function writeVirtioDevice(seed: Seed, spec: VirtioDeviceSpec): string {
  const be = spec.backendDomid ?? 0;
  const bpath = `/local/domain/${be}/backend/virtio/${spec.domid}/${spec.devid}`;
  const fpath = `/local/domain/${spec.domid}/device/virtio/${spec.devid}`;
  // libxl_device.c libxl__device_generic_add: the frontend directory is the guest's (backend may read), the
  // backend directory the backend domain's (guest may read).
  seed(bpath, "", devicePerms(be, spec.domid));
  seed(fpath, "", devicePerms(spec.domid, be));
  // libxl_virtio.c libxl__set_xenstore_virtio: irq "%u", base "%#"PRIx64, type, transport "mmio".
  for (const p of [bpath, fpath]) {
    seed(`${p}/irq`, String(spec.irq));
    seed(`${p}/base`, `0x${spec.base.toString(16)}`);
    seed(`${p}/type`, spec.type);
    seed(`${p}/transport`, "mmio");
  }
  seed(`${bpath}/frontend`, fpath);
  seed(`${bpath}/frontend-id`, String(spec.domid));
  seed(`${bpath}/online`, "1");
  seed(`${bpath}/state`, String(spec.state ?? 1));
  seed(`${fpath}/backend`, bpath);
  seed(`${fpath}/backend-id`, String(be));
  seed(`${fpath}/state`, String(spec.state ?? 1));
  return bpath;
}

export interface VirtioDiskSpec {
  domid: number;
  /** The disk's target (a block device path under real xl). */
  target: string;
  base?: bigint;
  irq?: number;
  backendDomid?: number;
}

/** xl 4.17 `specification=virtio` disk, vdev xvda (devid 51712 = 202 << 8). */
export function writeVirtioDisk(seed: Seed, spec: VirtioDiskSpec): string {
  const be = spec.backendDomid ?? 0;
  const devid = 51712;
  const bpath = `/local/domain/${be}/backend/virtio_disk/${spec.domid}/${devid}`;
  const fpath = `/local/domain/${spec.domid}/device/virtio_disk/${devid}`;
  seed(bpath, "", devicePerms(be, spec.domid));
  seed(fpath, "", devicePerms(spec.domid, be));
  const nodes: [string, string][] = [
    ["frontend", fpath], ["frontend-id", String(spec.domid)], ["online", "1"], ["state", "1"],
    ["params", spec.target], ["type", "phy"], ["mode", "w"], ["removable", "0"], ["device-type", "disk"],
    ["dev", "xvda"], ["specification", "virtio"], ["transport", "mmio"],
    ["base", `0x${(spec.base ?? 0x2000000n).toString(16)}`], ["irq", String(spec.irq ?? 33)],
  ];
  for (const [k, v] of nodes) seed(`${bpath}/${k}`, v);
  seed(`${fpath}/backend`, bpath);
  seed(`${fpath}/backend-id`, String(be));
  seed(`${fpath}/state`, "1");
  seed(`${fpath}/virtual-device`, String(devid));
  return bpath;
}

function devicePerms(owner: number, reader: number): XsPermission[] {
  return [{ domid: owner, perm: "none" }, { domid: reader, perm: "read" }];
}

/**
 * The nodes `xl create` writes for a domain (libxl_create.c libxl__domain_make), trimmed to what a device
 * model and a guest's xenbus use, with libxl's permissions: the domain directory and cpu/memory/device/
 * control are dom0's and readable by the guest ("roperm"); data, drivers, feature, attr, error and
 * control/shutdown are the guest's own ("rwperm").
 */
export function writeDomain(seed: Seed, domid: number, name: string, uuid: string, vcpus: number, memKiB: number): void {
  const d = `/local/domain/${domid}`;
  const roperm: XsPermission[] = [{ domid: 0, perm: "none" }, { domid, perm: "read" }];
  const rwperm: XsPermission[] = [{ domid, perm: "none" }];
  seed(d, "", roperm);
  for (const sub of ["cpu", "memory", "device", "control"]) seed(`${d}/${sub}`, "", roperm);
  for (const sub of ["control/shutdown", "data", "drivers", "feature", "attr", "error"]) seed(`${d}/${sub}`, "", rwperm);
  seed(`${d}/name`, name);
  seed(`${d}/domid`, String(domid));
  seed(`${d}/vm`, `/vm/${uuid}`);
  seed(`${d}/memory/target`, String(memKiB));
  for (let v = 0; v < vcpus; v++) seed(`${d}/cpu/${v}/availability`, "online");
  seed(`/vm/${uuid}/name`, name);
  seed(`/vm/${uuid}/uuid`, uuid);
}
