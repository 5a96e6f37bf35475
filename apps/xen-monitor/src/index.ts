// xen-monitor as a library: the pieces the CLI is made of, for tests and for embedding the monitor.
export { Monitor, type MonitorOptions } from "./monitor.js";
export { diffViews, initialEvents, carryNames, type MonitorEvent, type MonitorEventType, type DiffOptions, type DomainViews } from "./diff.js";
export { viewOf, activityOf, memMiB, shutdownReasonName, SHUTDOWN_REASONS, type DomainView, type Activity, type ShutdownReasonName } from "./view.js";
export { formatEvent, consoleLine, jsonEvent, formatTable, stateLetters, CONSOLE_PREFIX } from "./format.js";
export { parseCommandLine, USAGE, type MonitorConfig } from "./cli.js";
export { MonitorError, EXIT_CODES, type MonitorErrorKind } from "./error.js";
export { XenStoreNames, noNames, type NameSource } from "./names.js";
export { openTransport, SIM_ENV, type OpenedTransport } from "./transport.js";
export { main, type MainIo } from "./main.js";
