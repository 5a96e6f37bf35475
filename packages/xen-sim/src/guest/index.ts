// @xen-vhost/xen-sim/guest: the simulated guest's side, for guest programs (modules run by startGuest).
export { Guest, sleepSync, type GuestInfo } from "./guest.js";
export { Vcpu, type VcpuCounters } from "./vcpu.js";
export { GrantTable } from "./grants.js";
export type { GuestContext, GuestProgram } from "./program.js";
export { VirtioMmioDriver, GuestAllocator, type DeviceIdentity, type VirtioMmioDriverOptions } from "./virtio/driver.js";
export { VirtioRngDriver } from "./virtio/rng.js";
export { VirtioBlkDriver, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID } from "./virtio/blk.js";
export { VirtioI2cDriver, VIRTIO_I2C_F_ZERO_LENGTH_REQUEST, VIRTIO_I2C_FLAGS_M_RD } from "./virtio/i2c.js";
export { VirtioGpioDriver, VIRTIO_GPIO_MSG, VIRTIO_GPIO_DIRECTION } from "./virtio/gpio.js";
