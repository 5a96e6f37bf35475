// The project-wide logging interface lives in vmm-sys-util; re-exported so users of this package need
// one import.
export { type Logger, noopLogger } from "@xen-vhost/vmm-sys-util";
