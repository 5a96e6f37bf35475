/**
 * The logging interface every package accepts as `{ logger?: Logger }` (serialport-style). Packages never
 * call console.*; only applications wire a sink (JSON lines in the bridge). The default is `noopLogger`.
 */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** A logger that drops everything. */
export const noopLogger: Logger = Object.freeze({ debug() {}, info() {}, warn() {}, error() {} });
