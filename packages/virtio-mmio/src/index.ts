export * from "./registers.js";
export { VIRTIO_DEVICE_TYPES, deviceType, dtCompatible, parseDtCompatible, type VirtioDeviceType } from "./device-types.js";
export type { VirtioDevice, QueueConfig, SharedMemoryRegion, ConfigValue, MaybePromise } from "./device.js";
export {
  VirtioMmioTransport, DEFAULT_VENDOR_ID,
  type VirtioMmioOptions, type VirtioMmioEvents, type VirtioMmioCounters, type AccessSize,
} from "./transport.js";
export { regionsFromShmemConfig, shmRegisterValue, MAX_SHMEM_REGIONS, SHM_NO_REGION, type ShmemPlacement } from "./shared-memory.js";
