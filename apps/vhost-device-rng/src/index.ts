export { RngDevice, kernelEntropy, fileEntropy, MAX_CHAIN_BYTES, type RngOptions, type EntropySource } from "./device.js";
export { parse, help, type RngArgs } from "./cli.js";
