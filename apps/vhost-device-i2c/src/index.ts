export * from "./abi.js";
export { I2cError, type I2cErrorKind } from "./error.js";
export type { I2cAdapter, I2cMessage } from "./adapter.js";
export { SimAdapter, Ds1338Rtc, At24c02Eeprom, simDeviceTypes, type SimI2cDevice, type SimDeviceType } from "./sim.js";
export { PhysicalAdapter, encodeRdwr, encodeSmbus, smbusPlan, realOps, type I2cDevOps, type SmbusPlan } from "./passthrough.js";
export { I2cDevice, MAX_REQUEST_LEN } from "./device.js";
export { parse, parseDeviceList, help, type AdapterSpec, type I2cArgs } from "./cli.js";
export { openAdapters } from "./build.js";
