/** The logging sink packages accept (STYLE.md section 9); only the app wires a real one. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const noop = (): void => {};

/** Discards everything: the default. */
export const nullLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };
