export { FakeBackend, FAKE_FEATURES, FAKE_PROTOCOL_FEATURES, type FakeBackendOptions, type FakeBackendBehaviour, type FakeBackendApi } from "./fake-backend.js";
export { startQsd, hasQsd, sectorContent, SECTOR, type Qsd } from "./qsd.js";
export { session, DATA, type Session, type SessionOptions, type Ring } from "./driver-session.js";
export { startDpdkVhostBlk, buildDpdkVhostBlk, hasDpdkVhostBlk, DPDK_BLK_BLOCKS, DPDK_BLK_BLOCK_SIZE, type DpdkVhostBlk } from "./dpdk-blk.js";
export {
  BlkDriver, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
  type BlkRequest, type BlkCompletion, type BlkRunOptions,
} from "./blk-driver.js";
export { RequestRecorder } from "./request-recorder.js";
export { killOnExit, spawnDaemon } from "./reap.js";
