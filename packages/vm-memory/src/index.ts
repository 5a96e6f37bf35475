export { GuestMemoryError, type GuestMemoryErrorKind, type GuestMemoryErrorOptions } from "./error.js";
export { GuestAddress, type GuestAddressLike } from "./guest-address.js";
export {
  MappedRegion,
  MAX_REGION_END,
  type GuestMemoryRegion,
  type RegionMapping,
  type RegionView,
} from "./guest-memory-region.js";
export { MmapRegion, type MemfdRegionOptions, type FdRegionOptions } from "./mmap-region.js";
export { GuestMemory, type GuestMemoryOptions, type FromRangesOptions } from "./guest-memory.js";
export { guestToUserAddr, userToGuestAddr, type VhostUserRegionDescription } from "./vhost-user.js";
