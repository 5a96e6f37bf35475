/*
 * perf-cdm: the C side of the "perf" scenario. A device model reduced to the raw syscalls the TypeScript
 * path makes (privcmd DM_OP and MMAP_RESOURCE ioctls, /dev/xen/evtchn reads, writes and NOTIFY ioctls),
 * with no libxen* library, so the two can be timed against each other on the same guest workload.
 *
 *   perf-cdm <domid> <mmio base> <size> <ready-file>
 *
 * Serves one MMIO window: offset 0x000 reads the virtio magic 0x74726976, a 4-byte write of 0 to 0x050
 * (QueueNotify of queue 0) is a doorbell that adds 1 to an eventfd (what a userspace ioeventfd relay does),
 * a write to 0x1fc ends the run; everything else reads 0 and ignores writes. Prints "RIG: ..." lines.
 * The sequence is the one xen-sys/ioreq-eventfd use on real Xen: nr_vcpus, create_ioreq_server,
 * MMAP_RESOURCE of the ioreq frame(s), map_io_range, set_state(1), then read each vCPU's vp_eport and bind it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/ioreq.h>
#include <xen/memory.h>
#include <xen/evtchn.h>

/* Linux include/uapi/xen/privcmd.h (its header needs kernel-internal includes, so the three structs used
 * here are restated; layouts as in packages/xen-sys/src/abi/privcmd.ts, checked there against the header). */
struct privcmd_dm_op_buf { void *uptr; size_t size; };
struct privcmd_dm_op { domid_t dom; uint16_t num; const struct privcmd_dm_op_buf *ubufs; };
struct privcmd_mmap_resource { domid_t dom; uint32_t type, id, idx; uint64_t num, addr; };
#define IOCTL_PRIVCMD_DM_OP _IOC(_IOC_NONE, 'P', 5, sizeof(struct privcmd_dm_op))
#define IOCTL_PRIVCMD_MMAP_RESOURCE _IOC(_IOC_NONE, 'P', 7, sizeof(struct privcmd_mmap_resource))

#define SLOT_STATE(r) (((volatile uint8_t *)(r))[30]) /* state:4 data_is_ptr:1 dir:1 df:1 share a byte */
#define MAGIC 0x74726976u

static int privcmd = -1, evtchn = -1, kick = -1;
static domid_t dom;
static volatile sig_atomic_t stop;

static void die(const char *what) {
  printf("RIG: FAIL perf-cdm %s: %s\n", what, strerror(errno));
  exit(1);
}

static int dm_op(struct xen_dm_op *op) {
  struct privcmd_dm_op_buf buf = { op, sizeof *op };
  struct privcmd_dm_op arg = { dom, 1, &buf };
  return ioctl(privcmd, IOCTL_PRIVCMD_DM_OP, &arg);
}

static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: perf-cdm <domid> <base> <size> <ready-file>\n"); return 2; }
  dom = (domid_t)strtoul(argv[1], NULL, 0);
  uint64_t base = strtoull(argv[2], NULL, 0), size = strtoull(argv[3], NULL, 0);
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);

  if ((privcmd = open("/dev/xen/privcmd", O_RDWR | O_CLOEXEC)) < 0) die("open /dev/xen/privcmd");
  if ((evtchn = open("/dev/xen/evtchn", O_RDWR | O_CLOEXEC | O_NONBLOCK)) < 0) die("open /dev/xen/evtchn");
  if ((kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) die("eventfd");

  struct xen_dm_op op;
  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_nr_vcpus;
  if (dm_op(&op)) die("dm_op nr_vcpus");
  unsigned vcpus = op.u.nr_vcpus.vcpus;

  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_create_ioreq_server;
  op.u.create_ioreq_server.handle_bufioreq = 0; /* HVM_IOREQSRV_BUFIOREQ_OFF (hvm_op.h, tools-only) */
  if (dm_op(&op)) die("dm_op create_ioreq_server");
  ioservid_t id = op.u.create_ioreq_server.id;

  /* One privcmd VMA, then the resource's synchronous ioreq frame(s) into it (128 slots per frame). */
  unsigned frames = (vcpus + 127) / 128;
  size_t len = (size_t)frames * 4096;
  void *page = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, privcmd, 0);
  if (page == MAP_FAILED) die("mmap privcmd");
  struct privcmd_mmap_resource res = { dom, XENMEM_resource_ioreq_server, id,
                                       XENMEM_resource_ioreq_server_frame_ioreq(0), frames, (uintptr_t)page };
  if (ioctl(privcmd, IOCTL_PRIVCMD_MMAP_RESOURCE, &res)) die("MMAP_RESOURCE ioreq frame");
  ioreq_t *slots = page;

  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_map_io_range_to_ioreq_server;
  op.u.map_io_range_to_ioreq_server.id = id;
  op.u.map_io_range_to_ioreq_server.type = XEN_DMOP_IO_RANGE_MEMORY;
  op.u.map_io_range_to_ioreq_server.start = base;
  op.u.map_io_range_to_ioreq_server.end = base + size - 1;
  if (dm_op(&op)) die("dm_op map_io_range");

  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_set_ioreq_server_state;
  op.u.set_ioreq_server_state.id = id;
  op.u.set_ioreq_server_state.enabled = 1;
  if (dm_op(&op)) die("dm_op set_ioreq_server_state"); /* Xen writes vp_eport into the slots now */

  uint32_t *port_vcpu = calloc(4096, sizeof *port_vcpu); /* local port -> vCPU + 1 */
  uint32_t *local = calloc(vcpus, sizeof *local);
  for (unsigned v = 0; v < vcpus; v++) {
    struct ioctl_evtchn_bind_interdomain b = { dom, slots[v].vp_eport };
    int p = ioctl(evtchn, IOCTL_EVTCHN_BIND_INTERDOMAIN, &b);
    if (p < 0 || p >= 4096) die("bind interdomain");
    port_vcpu[p] = v + 1;
    local[v] = (uint32_t)p;
  }
  printf("RIG: perf-cdm ready: server %u for domain %u, %u vCPU(s)\n", id, dom, vcpus);
  int rf = open(argv[4], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (rf >= 0) close(rf);

  unsigned long reads = 0, writes = 0, doorbells = 0, other = 0;
  struct pollfd pfd = { evtchn, POLLIN, 0 };
  int done = 0;
  while (!done && !stop) {
    uint32_t ports[64];
    ssize_t n = read(evtchn, ports, sizeof ports);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) die("read evtchn");
      /* Nothing pending: block (a timeout only to notice signals). */
      if (poll(&pfd, 1, 500) < 0 && errno != EINTR) die("poll evtchn");
      continue;
    }
    if (write(evtchn, ports, (size_t)n) != n) die("unmask");
    for (ssize_t i = 0; i < n / 4; i++) {
      uint32_t p = ports[i];
      if (p >= 4096 || port_vcpu[p] == 0) continue;
      unsigned v = port_vcpu[p] - 1;
      ioreq_t *r = &slots[v];
      uint8_t b = SLOT_STATE(r);
      if ((b & 0xf) != STATE_IOREQ_READY) continue;
      if (!__atomic_compare_exchange_n(&SLOT_STATE(r), &b, (uint8_t)((b & 0xf0) | STATE_IOREQ_INPROCESS), 0,
                                       __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        continue;
      uint64_t off = r->addr - base;
      if (r->type != IOREQ_TYPE_COPY || r->data_is_ptr || r->count != 1) {
        other++;
        if (r->dir == IOREQ_READ) r->data = ~0ull;
      } else if (r->dir == IOREQ_READ) {
        reads++;
        r->data = off == 0 ? MAGIC : 0;
      } else {
        writes++;
        if (off == 0x50 && r->size == 4 && (uint32_t)r->data == 0) {
          uint64_t one = 1;
          if (write(kick, &one, 8) != 8) die("kick eventfd");
          doorbells++;
        } else if (off == 0x1fc) {
          done = 1;
        }
      }
      /* The answer before the state (Xen reads data after seeing IORESP_READY). */
      __atomic_store_n(&SLOT_STATE(r), (uint8_t)((SLOT_STATE(r) & 0xf0) | STATE_IORESP_READY), __ATOMIC_RELEASE);
      struct ioctl_evtchn_notify nt = { local[v] };
      if (ioctl(evtchn, IOCTL_EVTCHN_NOTIFY, &nt)) die("notify");
    }
  }
  uint64_t kicks = 0;
  if (read(kick, &kicks, 8) != 8) kicks = 0;
  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_destroy_ioreq_server;
  op.u.destroy_ioreq_server.id = id;
  int drc = dm_op(&op);
  munmap(page, len);
  close(evtchn); /* unbinds the ports */
  close(privcmd);
  printf("RIG: perf-cdm served reads=%lu writes=%lu doorbells=%lu kicks=%llu other=%lu destroy=%s\n", reads, writes,
         doorbells, (unsigned long long)kicks, other, drc ? strerror(errno) : "ok");
  return done ? 0 : 1;
}
