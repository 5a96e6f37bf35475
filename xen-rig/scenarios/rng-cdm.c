/*
 * rng-cdm: the C side of the "rng-perf" scenario. A minimal virtio-rng over virtio-mmio device model made of
 * raw syscalls only (privcmd DM_OP / MMAP_RESOURCE / MMAPBATCH_V2 ioctls, /dev/xen/evtchn, getrandom), so the
 * guest's /dev/hwrng throughput through it can be set against the TypeScript model (dm-rng.mjs) in the
 * same QEMU run. Deliberately small: one queue, VERSION_1 only (no EVENT_IDX: the driver kicks every time),
 * no config space, no indirect descriptors.
 *
 *   rng-cdm <domid> <mmio base> <spi> <ram MiB> <ready-file>
 *
 * Runs until SIGTERM (the scenario stops it once the guest has printed its figure), then prints
 * "RIG: rng-cdm served ..." with the byte and request counts.
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
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>
#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/ioreq.h>
#include <xen/memory.h>
#include <xen/evtchn.h>

#include "cdm.h"

#define RAM_BASE 0x40000000ull /* GUEST_RAM0_BASE on Arm */
#define QMAX 256

static unsigned spi;
static volatile sig_atomic_t stop;
static uint8_t *ram;
static uint64_t ram_size;

/* virtio-mmio state (virtio 1.2 section 4.2.2) */
static uint32_t dev_feat_sel, drv_feat_sel, status, isr, qnum, qready;
static uint64_t drv_feat, qdesc, qavail, qused;
static uint16_t last_avail;
static unsigned long requests, bytes, irqs, bad;

static void set_irq(int level) {
  struct xen_dm_op op;
  memset(&op, 0, sizeof op);
  op.op = XEN_DMOP_set_irq_level;
  op.u.set_irq_level.irq = spi;
  op.u.set_irq_level.level = (uint8_t)level;
  if (dm_op(&op)) die("dm_op set_irq_level");
  if (level) irqs++;
}

/* A guest-physical range as a pointer into the mapping, or NULL when it is not all RAM. */
static void *gpa(uint64_t a, uint64_t len) {
  if (a < RAM_BASE || len > ram_size || a - RAM_BASE > ram_size - len) return NULL;
  return ram + (a - RAM_BASE);
}

struct desc { uint64_t addr; uint32_t len; uint16_t flags, next; };

static void reset(void) {
  dev_feat_sel = drv_feat_sel = status = qnum = qready = 0;
  drv_feat = qdesc = qavail = qused = 0;
  last_avail = 0;
  if (isr) { isr = 0; set_irq(0); }
}

/* Fill every buffer the driver made available with random bytes and hand it back. */
static void process_queue(void) {
  if (!qready || !(status & 4) || qnum == 0) return;
  struct desc *dt = gpa(qdesc, 16ull * qnum);
  volatile uint16_t *avail = gpa(qavail, 4 + 2ull * qnum);
  volatile uint16_t *used = gpa(qused, 4 + 8ull * qnum);
  if (!dt || !avail || !used) { bad++; return; }
  int added = 0;
  for (;;) {
    uint16_t aidx = __atomic_load_n(&avail[1], __ATOMIC_ACQUIRE); /* ring entries after the index */
    if (aidx == last_avail) break;
    uint16_t head = avail[2 + last_avail % qnum];
    uint32_t written = 0;
    uint16_t i = head;
    for (unsigned hops = 0; hops < qnum && i < qnum; hops++) {
      struct desc d = dt[i];
      if (d.flags & 2) { /* VIRTQ_DESC_F_WRITE */
        uint8_t *p = gpa(d.addr, d.len);
        if (!p) { bad++; break; }
        for (uint32_t off = 0; off < d.len;) {
          ssize_t n = getrandom(p + off, d.len - off, 0);
          if (n < 0) { if (errno == EINTR) continue; die("getrandom"); }
          off += (uint32_t)n;
        }
        written += d.len;
      }
      if (!(d.flags & 1)) break; /* VIRTQ_DESC_F_NEXT */
      i = d.next;
    }
    uint16_t uidx = used[1];
    volatile uint32_t *ue = (volatile uint32_t *)(used + 2) + 2 * (uidx % qnum);
    ue[0] = head;
    ue[1] = written;
    __atomic_store_n(&used[1], (uint16_t)(uidx + 1), __ATOMIC_RELEASE); /* entry visible before the index */
    last_avail++;
    requests++;
    bytes += written;
    added = 1;
  }
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  /* The used index before the interrupt; VRING_AVAIL_F_NO_INTERRUPT honoured. */
  if (added && !(avail[0] & 1) && !(isr & 1)) { isr |= 1; set_irq(1); }
}

static uint64_t mmio_read(uint64_t off) {
  switch (off) {
  case 0x000: return 0x74726976; /* "virt" */
  case 0x004: return 2;
  case 0x008: return 4;          /* entropy source */
  case 0x00c: return 0x554d4551; /* "QEMU", as qemu's virtio-mmio says */
  case 0x010: return dev_feat_sel == 1 ? 1 : 0; /* VIRTIO_F_VERSION_1 is bit 32 */
  case 0x034: return QMAX;
  case 0x044: return qready;
  case 0x060: return isr;
  case 0x070: return status;
  default: return 0;             /* ConfigGeneration 0, no config space */
  }
}

static void mmio_write(uint64_t off, uint32_t v) {
  switch (off) {
  case 0x014: dev_feat_sel = v; break;
  case 0x020: if (drv_feat_sel < 2) drv_feat = (drv_feat & ~(0xffffffffull << (32 * drv_feat_sel))) | ((uint64_t)v << (32 * drv_feat_sel)); break;
  case 0x024: drv_feat_sel = v; break;
  case 0x030: break; /* QueueSel: one queue */
  case 0x038: qnum = v <= QMAX ? v : 0; break;
  case 0x044: qready = v & 1; break;
  case 0x050: if (v == 0) process_queue(); break;
  case 0x064: isr &= ~v; if (!isr) set_irq(0); break;
  case 0x070: if (v == 0) reset(); else { status = v; process_queue(); } break;
  case 0x080: qdesc = (qdesc & ~0xffffffffull) | v; break;
  case 0x084: qdesc = (qdesc & 0xffffffffull) | ((uint64_t)v << 32); break;
  case 0x090: qavail = (qavail & ~0xffffffffull) | v; break;
  case 0x094: qavail = (qavail & 0xffffffffull) | ((uint64_t)v << 32); break;
  case 0x0a0: qused = (qused & ~0xffffffffull) | v; break;
  case 0x0a4: qused = (qused & 0xffffffffull) | ((uint64_t)v << 32); break;
  default: break;
  }
}

static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
  if (argc != 6) { fprintf(stderr, "usage: rng-cdm <domid> <base> <spi> <ram MiB> <ready-file>\n"); return 2; }
  cdm_name = "rng-cdm";
  cdm_dom = (domid_t)strtoul(argv[1], NULL, 0);
  uint64_t base = strtoull(argv[2], NULL, 0), size = 0x200;
  spi = (unsigned)strtoul(argv[3], NULL, 0);
  ram_size = strtoull(argv[4], NULL, 0) << 20;
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: poll must return so the loop sees stop */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  if ((cdm_privcmd = open("/dev/xen/privcmd", O_RDWR | O_CLOEXEC)) < 0) die("open /dev/xen/privcmd");
  if ((cdm_evtchn = open("/dev/xen/evtchn", O_RDWR | O_CLOEXEC | O_NONBLOCK)) < 0) die("open /dev/xen/evtchn");

  /* Guest RAM: one privcmd VMA, every frame of the first bank foreign-mapped into it. */
  size_t pages = ram_size / 4096;
  ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, cdm_privcmd, 0);
  if (ram == MAP_FAILED) die("mmap privcmd (RAM)");
  xen_pfn_t *gfns = calloc(pages, sizeof *gfns);
  int *errs = calloc(pages, sizeof *errs);
  for (size_t k = 0; k < pages; k++) gfns[k] = (RAM_BASE >> 12) + k;
  struct privcmd_mmapbatch_v2 mb = { (unsigned)pages, cdm_dom, (uintptr_t)ram, gfns, errs };
  if (ioctl(cdm_privcmd, IOCTL_PRIVCMD_MMAPBATCH_V2, &mb)) die("MMAPBATCH_V2 guest RAM");

  struct cdm_server srv;
  cdm_server_start(&srv, base, size);
  ioservid_t id = srv.id;
  unsigned vcpus = srv.vcpus;
  uint32_t *local = srv.local;
  printf("RIG: rng-cdm ready: server %u for domain %u, %u vCPU(s), RAM %zu pages\n", id, cdm_dom, vcpus, pages);
  int rf = open(argv[5], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (rf >= 0) close(rf);

  unsigned long accesses = 0;
  while (!stop) {
    uint32_t ports[64];
    int n = cdm_wait_ports(ports);
    for (int i = 0; i < n; i++) {
      unsigned v;
      ioreq_t *r = cdm_claim(&srv, ports[i], &v);
      if (!r) continue;
      if (r->type == IOREQ_TYPE_COPY && !r->data_is_ptr && r->count == 1) {
        accesses++;
        uint64_t off = r->addr - base;
        if (r->dir == IOREQ_READ) r->data = mmio_read(off);
        else mmio_write(off, (uint32_t)r->data);
      } else if (r->dir == IOREQ_READ) {
        r->data = ~0ull; /* INVALIDATE and the like: acknowledged, nothing to do (no map cache) */
      }
      __atomic_store_n(&SLOT_STATE(r), (uint8_t)((SLOT_STATE(r) & 0xf0) | STATE_IORESP_READY), __ATOMIC_RELEASE);
      struct ioctl_evtchn_notify nt = { local[v] };
      if (ioctl(cdm_evtchn, IOCTL_EVTCHN_NOTIFY, &nt)) die("notify");
    }
  }
  int drc = cdm_server_stop(&srv);
  munmap(ram, ram_size);
  close(cdm_evtchn);
  close(cdm_privcmd);
  printf("RIG: rng-cdm served %lu bytes in %lu requests; %lu accesses, %lu interrupts, %lu bad; destroy=%s\n", bytes,
         requests, accesses, irqs, bad, drc ? strerror(errno) : "ok");
  return bad ? 1 : 0;
}
