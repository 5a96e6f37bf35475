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

#include "cdm.h"

static int kick = -1;
static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: perf-cdm <domid> <base> <size> <ready-file>\n"); return 2; }
  cdm_name = "perf-cdm";
  cdm_dom = (domid_t)strtoul(argv[1], NULL, 0);
  uint64_t base = strtoull(argv[2], NULL, 0), size = strtoull(argv[3], NULL, 0);
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);

  if ((cdm_privcmd = open("/dev/xen/privcmd", O_RDWR | O_CLOEXEC)) < 0) die("open /dev/xen/privcmd");
  if ((cdm_evtchn = open("/dev/xen/evtchn", O_RDWR | O_CLOEXEC | O_NONBLOCK)) < 0) die("open /dev/xen/evtchn");
  if ((kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) die("eventfd");

  struct cdm_server srv;
  cdm_server_start(&srv, base, size);
  ioservid_t id = srv.id;
  unsigned vcpus = srv.vcpus;
  uint32_t *local = srv.local;
  printf("RIG: perf-cdm ready: server %u for domain %u, %u vCPU(s)\n", id, cdm_dom, vcpus);
  int rf = open(argv[4], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (rf >= 0) close(rf);

  unsigned long reads = 0, writes = 0, doorbells = 0, other = 0;
  int done = 0;
  while (!done && !stop) {
    uint32_t ports[64];
    int n = cdm_wait_ports(ports);
    for (int i = 0; i < n; i++) {
      unsigned v;
      ioreq_t *r = cdm_claim(&srv, ports[i], &v);
      if (!r) continue;
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
      if (ioctl(cdm_evtchn, IOCTL_EVTCHN_NOTIFY, &nt)) die("notify");
    }
  }
  uint64_t kicks = 0;
  if (read(kick, &kicks, 8) != 8) kicks = 0;
  int drc = cdm_server_stop(&srv);
  close(cdm_evtchn); /* unbinds the ports */
  close(cdm_privcmd);
  printf("RIG: perf-cdm served reads=%lu writes=%lu doorbells=%lu kicks=%llu other=%lu destroy=%s\n", reads, writes,
         doorbells, (unsigned long long)kicks, other, drc ? strerror(errno) : "ok");
  return done ? 0 : 1;
}
