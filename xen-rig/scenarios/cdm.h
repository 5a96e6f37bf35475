/*
 * cdm.h: what the rig's C device models (perf-cdm.c, rng-cdm.c) share - the privcmd ioctls they need and the
 * IOREQ server bring-up, in raw syscalls as a minimal C device model makes them. It is the floor the
 * TypeScript path (xen-sys + ioreq-eventfd) is measured against, so it stays free of any library beyond libc.
 * Each program sets cdm_name, cdm_dom, cdm_privcmd and cdm_evtchn before calling cdm_server_start().
 */
#ifndef CDM_H
#define CDM_H
#include <errno.h>
#include <poll.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/ioreq.h>
#include <xen/memory.h>
#include <xen/evtchn.h>

/* Linux include/uapi/xen/privcmd.h (its header needs kernel-internal includes, so the structs used here are
 * restated; layouts as in packages/xen-sys/src/abi/privcmd.ts, checked there against the header). */
struct privcmd_dm_op_buf { void *uptr; size_t size; };
struct privcmd_dm_op { domid_t dom; uint16_t num; const struct privcmd_dm_op_buf *ubufs; };
struct privcmd_mmap_resource { domid_t dom; uint32_t type, id, idx; uint64_t num, addr; };
struct privcmd_mmapbatch_v2 { unsigned int num; domid_t dom; uint64_t addr; const xen_pfn_t *arr; int *err; };
#define IOCTL_PRIVCMD_DM_OP _IOC(_IOC_NONE, 'P', 5, sizeof(struct privcmd_dm_op))
#define IOCTL_PRIVCMD_MMAP_RESOURCE _IOC(_IOC_NONE, 'P', 7, sizeof(struct privcmd_mmap_resource))
#define IOCTL_PRIVCMD_MMAPBATCH_V2 _IOC(_IOC_NONE, 'P', 4, sizeof(struct privcmd_mmapbatch_v2))

#define SLOT_STATE(r) (((volatile uint8_t *)(r))[30]) /* state:4 data_is_ptr:1 dir:1 df:1 share a byte */
#define MAGIC 0x74726976u

static const char *cdm_name = "cdm";
static int cdm_privcmd = -1, cdm_evtchn = -1;
static domid_t cdm_dom;

static void die(const char *what) {
  printf("RIG: FAIL %s %s: %s\n", cdm_name, what, strerror(errno));
  exit(1);
}

static int dm_op(struct xen_dm_op *op) {
  struct privcmd_dm_op_buf buf = { op, sizeof *op };
  struct privcmd_dm_op arg = { cdm_dom, 1, &buf };
  return ioctl(cdm_privcmd, IOCTL_PRIVCMD_DM_OP, &arg);
}

/* An enabled IOREQ server for one MMIO window and its per-vCPU event channels bound in cdm_evtchn. */
struct cdm_server {
  ioservid_t id;
  unsigned vcpus;
  ioreq_t *slots;      /* the synchronous ioreq page(s): one slot per vCPU */
  uint32_t *port_vcpu; /* local port (< 4096) -> vCPU + 1, 0 = not ours */
  uint32_t *local;     /* vCPU -> local port */
};

static void cdm_server_start(struct cdm_server *s, uint64_t base, uint64_t size) {
  struct xen_dm_op op;
  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_nr_vcpus;
  if (dm_op(&op)) die("dm_op nr_vcpus");
  s->vcpus = op.u.nr_vcpus.vcpus;

  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_create_ioreq_server;
  op.u.create_ioreq_server.handle_bufioreq = 0; /* HVM_IOREQSRV_BUFIOREQ_OFF (hvm_op.h, tools-only) */
  if (dm_op(&op)) die("dm_op create_ioreq_server");
  s->id = op.u.create_ioreq_server.id;

  /* One privcmd VMA, then the resource's synchronous ioreq frame(s) into it (128 slots per frame). */
  unsigned frames = (s->vcpus + 127) / 128;
  void *page = mmap(NULL, (size_t)frames * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, cdm_privcmd, 0);
  if (page == MAP_FAILED) die("mmap privcmd");
  struct privcmd_mmap_resource res = { cdm_dom, XENMEM_resource_ioreq_server, s->id,
                                       XENMEM_resource_ioreq_server_frame_ioreq(0), frames, (uintptr_t)page };
  if (ioctl(cdm_privcmd, IOCTL_PRIVCMD_MMAP_RESOURCE, &res)) die("MMAP_RESOURCE ioreq frame");
  s->slots = page;

  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_map_io_range_to_ioreq_server;
  op.u.map_io_range_to_ioreq_server.id = s->id;
  op.u.map_io_range_to_ioreq_server.type = XEN_DMOP_IO_RANGE_MEMORY;
  op.u.map_io_range_to_ioreq_server.start = base;
  op.u.map_io_range_to_ioreq_server.end = base + size - 1;
  if (dm_op(&op)) die("dm_op map_io_range");

  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_set_ioreq_server_state;
  op.u.set_ioreq_server_state.id = s->id;
  op.u.set_ioreq_server_state.enabled = 1;
  if (dm_op(&op)) die("dm_op set_ioreq_server_state"); /* Xen writes vp_eport into the slots now */

  s->port_vcpu = calloc(4096, sizeof *s->port_vcpu);
  s->local = calloc(s->vcpus, sizeof *s->local);
  if (!s->port_vcpu || !s->local) die("calloc");
  for (unsigned v = 0; v < s->vcpus; v++) {
    struct ioctl_evtchn_bind_interdomain b = { cdm_dom, s->slots[v].vp_eport };
    int p = ioctl(cdm_evtchn, IOCTL_EVTCHN_BIND_INTERDOMAIN, &b);
    if (p < 0 || p >= 4096) die("bind interdomain");
    s->port_vcpu[p] = v + 1;
    s->local[v] = (uint32_t)p;
  }
}

/* Waits for pending event-channel ports (blocking in poll, with a timeout only so that signals are noticed),
 * unmasks them and returns how many were read into ports; 0 when nothing came (the caller loops). */
static int cdm_wait_ports(uint32_t ports[64]) {
  ssize_t n = read(cdm_evtchn, ports, 64 * sizeof *ports);
  if (n < 0) {
    if (errno == EINTR) return 0;
    if (errno != EAGAIN) die("read evtchn");
    struct pollfd pfd = { cdm_evtchn, POLLIN, 0 };
    if (poll(&pfd, 1, 500) < 0 && errno != EINTR) die("poll evtchn");
    return 0;
  }
  if (write(cdm_evtchn, ports, (size_t)n) != n) die("unmask");
  return (int)(n / 4);
}

/* The ioreq of the vCPU behind local `port`, claimed (READY -> INPROCESS, acquire: the request's fields are
 * read after Xen's release of the state), or NULL when the port is not ours or nothing is ready. */
static ioreq_t *cdm_claim(struct cdm_server *s, uint32_t port, unsigned *vcpu) {
  if (port >= 4096 || s->port_vcpu[port] == 0) return NULL;
  unsigned v = s->port_vcpu[port] - 1;
  ioreq_t *r = &s->slots[v];
  uint8_t b = SLOT_STATE(r);
  if ((b & 0xf) != STATE_IOREQ_READY) return NULL;
  if (!__atomic_compare_exchange_n(&SLOT_STATE(r), &b, (uint8_t)((b & 0xf0) | STATE_IOREQ_INPROCESS), 0,
                                   __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
    return NULL;
  *vcpu = v;
  return r;
}

/* Destroys the server and unmaps its ioreq page(s); 0 or -1 with errno from the destroy dm_op. */
static int cdm_server_stop(struct cdm_server *s) {
  struct xen_dm_op op;
  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_destroy_ioreq_server;
  op.u.destroy_ioreq_server.id = s->id;
  int rc = dm_op(&op);
  int saved = errno;
  munmap(s->slots, (size_t)((s->vcpus + 127) / 128) * 4096);
  errno = saved;
  return rc;
}
#endif
