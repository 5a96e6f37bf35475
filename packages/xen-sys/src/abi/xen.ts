// xen/include/public/xen.h: hypercall numbers, console_io commands and reserved domain ids.

/** `#define __HYPERVISOR_*`: the hypercalls a dom0 device model issues (dm_op goes through IOCTL_PRIVCMD_DM_OP). */
export const __HYPERVISOR = {
  memory_op: 12,
  xen_version: 17,
  console_io: 18,
  grant_table_op: 20,
  event_channel_op: 32,
  hvm_op: 34,
  sysctl: 35,
  domctl: 36,
  dm_op: 41,
} as const;

/* #define CONSOLEIO_write 0, CONSOLEIO_read 1 */
export const CONSOLEIO_write = 0;
export const CONSOLEIO_read = 1;

/* DOMID_FIRST_RESERVED 0x7FF0 ... DOMID_IDLE 0x7FFF; domid_t is uint16_t. */
export const DOMID_FIRST_RESERVED = 0x7ff0;
export const DOMID_SELF = 0x7ff0;
export const DOMID_IO = 0x7ff1;
export const DOMID_XEN = 0x7ff2;
export const DOMID_COW = 0x7ff3;
export const DOMID_INVALID = 0x7ff4;
export const DOMID_IDLE = 0x7fff;
