export { VhostUserDevice, type VhostUserDeviceOptions, type VhostUserDeviceEvents } from "./vhost-user-device.js";
