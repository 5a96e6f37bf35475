// Linux include/uapi/xen/evtchn.h (/dev/xen/evtchn). read() yields pending local ports as u32s (each port is
// masked when delivered); write() of u32 ports unmasks them; the fd is pollable.
import { _IOC, _IOC_NONE, defineStruct, u16, u32 } from "@xen-vhost/vmm-sys-util";

export const EVTCHN_DEVICE = "/dev/xen/evtchn";

// struct ioctl_evtchn_bind_virq { unsigned int virq; };
export const IoctlEvtchnBindVirq = defineStruct("ioctl_evtchn_bind_virq", { size: 4, align: 4 }, { virq: u32(0) });
// struct ioctl_evtchn_bind_interdomain { unsigned int remote_domain, remote_port; };
export const IoctlEvtchnBindInterdomain = defineStruct("ioctl_evtchn_bind_interdomain", { size: 8, align: 4 }, {
  remote_domain: u32(0), remote_port: u32(4),
});
// struct ioctl_evtchn_bind_unbound_port { unsigned int remote_domain; };
export const IoctlEvtchnBindUnboundPort = defineStruct("ioctl_evtchn_bind_unbound_port", { size: 4, align: 4 }, {
  remote_domain: u32(0),
});
// struct ioctl_evtchn_unbind { unsigned int port; };
export const IoctlEvtchnUnbind = defineStruct("ioctl_evtchn_unbind", { size: 4, align: 4 }, { port: u32(0) });
// struct ioctl_evtchn_notify { unsigned int port; };
export const IoctlEvtchnNotify = defineStruct("ioctl_evtchn_notify", { size: 4, align: 4 }, { port: u32(0) });
// struct ioctl_evtchn_restrict_domid { domid_t domid; };
export const IoctlEvtchnRestrictDomid = defineStruct("ioctl_evtchn_restrict_domid", { size: 2, align: 2 }, {
  domid: u16(0),
});

/* #define IOCTL_EVTCHN_BIND_VIRQ _IOC(_IOC_NONE, 'E', 0, sizeof(struct ioctl_evtchn_bind_virq)) */
export const IOCTL_EVTCHN_BIND_VIRQ = _IOC(_IOC_NONE, "E", 0, IoctlEvtchnBindVirq.size);
/* #define IOCTL_EVTCHN_BIND_INTERDOMAIN _IOC(_IOC_NONE, 'E', 1, sizeof(struct ioctl_evtchn_bind_interdomain)) */
export const IOCTL_EVTCHN_BIND_INTERDOMAIN = _IOC(_IOC_NONE, "E", 1, IoctlEvtchnBindInterdomain.size);
/* #define IOCTL_EVTCHN_BIND_UNBOUND_PORT _IOC(_IOC_NONE, 'E', 2, sizeof(struct ioctl_evtchn_bind_unbound_port)) */
export const IOCTL_EVTCHN_BIND_UNBOUND_PORT = _IOC(_IOC_NONE, "E", 2, IoctlEvtchnBindUnboundPort.size);
/* #define IOCTL_EVTCHN_UNBIND _IOC(_IOC_NONE, 'E', 3, sizeof(struct ioctl_evtchn_unbind)) */
export const IOCTL_EVTCHN_UNBIND = _IOC(_IOC_NONE, "E", 3, IoctlEvtchnUnbind.size);
/* #define IOCTL_EVTCHN_NOTIFY _IOC(_IOC_NONE, 'E', 4, sizeof(struct ioctl_evtchn_notify)) */
export const IOCTL_EVTCHN_NOTIFY = _IOC(_IOC_NONE, "E", 4, IoctlEvtchnNotify.size);
/* #define IOCTL_EVTCHN_RESET _IOC(_IOC_NONE, 'E', 5, 0) */
export const IOCTL_EVTCHN_RESET = _IOC(_IOC_NONE, "E", 5, 0);
/* #define IOCTL_EVTCHN_RESTRICT_DOMID _IOC(_IOC_NONE, 'E', 6, sizeof(struct ioctl_evtchn_restrict_domid)) */
export const IOCTL_EVTCHN_RESTRICT_DOMID = _IOC(_IOC_NONE, "E", 6, IoctlEvtchnRestrictDomid.size);
