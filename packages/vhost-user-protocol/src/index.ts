export { VhostUserError, fromSysError, type VhostUserErrorKind } from "./error.js";
export {
  VhostUserVirtioFeatures, VirtioFeatures, VhostUserProtocolFeature, protocolFeatures, defaultQuirks, protocolFeatureBit,
  protocolFeatureMask, hasProtocolFeature, protocolFeatureSet, describeProtocolFeatures, missingPrerequisites, XenMmapFlags,
  VhostUserConfigFlags, VhostUserConfigFlagsRustVmm, configFlagsFor, VirtioDeviceStatus,
  type ProtocolFeatureInfo, type ProtocolFeatureName, type ProtocolQuirks,
} from "./features.js";
export {
  frontendRequests, backendRequests, FrontendReq, BackendReq, NO_FDS, messageInfo, requestName,
  type PayloadKind, type FdRule, type ReplyRule, type MessageInfo, type FrontendReqName, type BackendReqName, type Channel,
} from "./message.js";
export * from "./structs.js";
export {
  HEADER_SIZE, MAX_MSG_SIZE, MAX_ATTACHED_FD_ENTRIES, codecOptions, encodeHeader, decodeHeader, encodePayload, encodeMessage,
  decodePayload, decodeMessage, decodeBuffer, closeMessageFds, replyExpectation, ackExpectation, fdCountFor,
  type MemoryRegion, type Payload, type PayloadOf, type VhostUserHeaderValue, type VhostUserMessage, type CodecOptions, type CodecSettings,
  type Expectation,
} from "./codec.js";
export { Connection, type ConnectionEvents, type ConnectionOptions } from "./connection.js";
export { noopLogger, type Logger } from "./logger.js";
