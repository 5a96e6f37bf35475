// The project-wide logging interface lives in vmm-sys-util (STYLE.md section 9); re-exported here.
import { noopLogger } from "@xen-vhost/vmm-sys-util";

export type { Logger } from "@xen-vhost/vmm-sys-util";

/** Discards everything: the default. */
export const nullLogger = noopLogger;
