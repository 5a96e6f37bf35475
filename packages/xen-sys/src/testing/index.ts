// Test helpers for this package and its dependents (published as "@xen-vhost/xen-sys/testing").
export { RecordingTransport, fail, type RecordedCall, type Responders } from "./recording-transport.js";
export { XenStoreTestServer } from "./xenstore-server.js";
