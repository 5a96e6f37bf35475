export { FakeBackend, FAKE_FEATURES, FAKE_PROTOCOL_FEATURES, type FakeBackendOptions, type FakeBackendBehaviour, type FakeBackendApi } from "./fake-backend.js";
export { startQsd, hasQsd, sectorContent, SECTOR, type Qsd } from "./qsd.js";
export { session, DATA, type Session, type Ring } from "./driver-session.js";
