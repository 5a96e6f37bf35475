// @xen-vhost/xen-sim/guest: the simulated guest's side, for guest programs (modules run by startGuest).
export { Guest, sleepSync, type GuestInfo } from "./guest.js";
export { Vcpu, type VcpuCounters } from "./vcpu.js";
export { GrantTable } from "./grants.js";
export { XenBus, XenBusError, type XenBusWatchEvent } from "./xenbus.js";
export type { GuestContext, GuestProgram } from "./program.js";
export type { VirtioTransport, DeviceIdentity } from "./virtio/transport.js";
export { GuestAllocator } from "./virtio/allocator.js";
export { VirtioMmioDriver, type VirtioMmioDriverOptions } from "./virtio/driver.js";
export { VirtioRngDriver } from "./virtio/rng.js";
export { VirtioBlkDriver, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID } from "./virtio/blk.js";
export { VirtioI2cDriver, VIRTIO_I2C_F_ZERO_LENGTH_REQUEST, VIRTIO_I2C_FLAGS_M_RD } from "./virtio/i2c.js";
export { VirtioGpioDriver, VIRTIO_GPIO_MSG, VIRTIO_GPIO_DIRECTION } from "./virtio/gpio.js";
export {
  VirtioNetDriver, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
  VIRTIO_NET_HDR_SIZE, VIRTIO_NET_CONFIG, ETH_HLEN, type VirtioNetOptions, type NetFrame,
} from "./virtio/net.js";
export {
  VirtioFsDriver, FuseOpcode, FUSE_ROOT_ID, FUSE_IN_HEADER_SIZE, FUSE_OUT_HEADER_SIZE, FUSE_KERNEL_VERSION, FUSE_KERNEL_MINOR_VERSION,
  VIRTIO_FS_CONFIG, type FuseAttr, type FuseEntry, type FuseInitInfo, type FuseReply, type VirtioFsOptions,
} from "./virtio/fs.js";
