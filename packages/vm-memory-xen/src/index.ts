// @xen-vhost/vm-memory-xen: Xen foreign and grant guest-memory regions for @xen-vhost/vm-memory.
export { XenMemoryError, type XenMemoryErrorKind, type XenMemoryErrorDetails } from "./error.js";
export { XenMmapFlag, xenMmapFlags, parseXenMmapFlags, type NoAdvanceMapEncoding } from "./flags.js";
export { XEN_GRANT_DMA_ADDR_OFF, XEN_PAGE_SIZE, grantAddress, grantRefOf, isGrantAddress } from "./grant-address.js";
export { XenForeignRegion, type ForeignRegionOptions } from "./foreign-region.js";
export {
  XenGrantRegion, SYNTHETIC_USER_ADDR_BASE, type GrantRegionOptions, type GrantCacheOptions, type GrantCacheStats,
} from "./grant-region.js";
export { XenGrantCopyRegion, type GrantCopyRegionOptions, type GrantCopyStats } from "./grant-copy-region.js";
export { XenGuestMemory, GRANT_WINDOW_BASE } from "./xen-guest-memory.js";
export {
  deviceFdProvider, fdProviderFor, type MappingFdProvider, type MappingFdKind, type DeviceFdOptions,
} from "./region-fd.js";
export {
  guestRamLayout, discoverGuestRam, readConfiguredRamBytes, GUEST_RAM0_BASE, GUEST_RAM0_SIZE, GUEST_RAM1_BASE, GUEST_RAM1_SIZE, GUEST_RAM_MAX,
  GUEST_MAGIC_BASE, NR_MAGIC_PAGES, LIBXL_MAXMEM_CONSTANT_PAGES, HVM_BELOW_4G_RAM_END, VGA_HOLE_START, VGA_HOLE_END,
  XEN_X86_EMU_VGA, type RamBank, type GuestRamLayout, type RamLayoutOptions, type RamSizeSource, type DomainInfoSource,
  type XenStoreReader,
} from "./layout.js";
export { mapGuestRam, guestMemoryFromLayout, type MapGuestRamOptions } from "./guest-ram.js";
export {
  createXenRegionMapper, type XenRegionMapper, type XenRegionMapperOptions, type XenRegionRequest,
} from "./mapper.js";
