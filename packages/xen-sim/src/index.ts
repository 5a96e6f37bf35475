// @xen-vhost/xen-sim: a Xen simulator below xen-sys's XenTransport, and a simulated guest. A test aid and a
// laptop demo: nothing in the product depends on it.
export { SimError, type SimErrorKind } from "./error.js";
export { SimTransport, XEN_VHOST_SIM_ENV } from "./transport/sim-transport.js";
export { SimEventChannelDevice } from "./transport/evtchn.js";
export { SimGrantDevice } from "./transport/gntdev.js";
export {
  Simulator, GuestProcess, startSimulator, type SimulatorOptions, type GuestOptions, type DomainConfig,
} from "./simulator.js";
export { XEN_RELEASES, type XenRelease } from "./sim/hypervisor.js";
export type { VirtioDeviceSpec, VirtioDiskSpec } from "./sim/libxl.js";
export {
  GUEST_RAM0_BASE, GUEST_RAM0_SIZE, GUEST_RAM1_BASE, GUEST_VIRTIO_MMIO_BASE, GUEST_VIRTIO_MMIO_SIZE,
  GUEST_VIRTIO_MMIO_SPI_FIRST, GUEST_VIRTIO_MMIO_SPI_LAST, XEN_GRANT_DMA_ADDR_OFF, grantDmaAddress,
} from "./layout.js";
export { XenVirtioMmioDevice, type XenVirtioMmioOptions } from "./devmodel/xen-virtio-mmio.js";
export { GrantDmaRegion } from "./devmodel/grant-region.js";
export { RngDevice, BlkDevice, I2cDevice, GpioDevice, NetDevice, FsDevice } from "./devmodel/devices.js";
export { runDemo, type DemoOptions } from "./demo.js";
