export { BackendError, type BackendErrorKind } from "./error.js";
export {
  MemoryTable, mapRegion, xenRegionType,
  type RegionDescription, type XenRegionDescription, type XenRegionMapper, type XenRegionMapperModule, type XenRegionType,
} from "./memory.js";
export { loadXenRegionMapper } from "./mapper-loader.js";
export { readBuffers, writeBuffers, totalLength, BufferCursor, type GuestBuffer } from "./chain-io.js";
export type { VhostUserDevice, DeviceVring, DeviceContext } from "./device.js";
export { Vring } from "./vring.js";
export {
  InflightArea, InflightQueue, DescStateSplit, QueueRegionSplit, INFLIGHT_VERSION, INFLIGHT_ALIGNMENT, inflightQueueRegionSize,
  type InflightDescription,
} from "./inflight.js";
export { walkChain, type WalkOptions } from "./chain-walk.js";
export { BackendRequestChannel } from "./backend-req.js";
export {
  BackendHandler, offeredProtocolFeatures, VHOST_USER_F_PROTOCOL_FEATURES, MAX_MEM_SLOTS,
  type BackendHandlerOptions, type BackendHandlerEvents,
} from "./handler.js";
export { VhostUserDaemon, socketPaths, type DaemonOptions, type DaemonEvents } from "./daemon.js";
export { jsonLogger } from "./json-logger.js";
export { commonOptions, commonHelp, commonArgs, parseNumber, runDaemons, serveUntilStopped, runMain, UsageError, type CommonArgs, type RunningDaemons } from "./cli.js";
