/* Copied from packages/ioreq-eventfd/bench/xen-relay.c (same syscalls, so the two benches share a floor).
 *
 * The floor for the Xen relay benchmark (bench/xen-relay.mjs): the same syscalls and shared-memory steps
 * in C. Event channels are eventfds here, as in xen-sim (a port firing = an eventfd write; the page is
 * a struct ioreq slot in a shared memfd, xen/include/public/hvm/ioreq.h layout).
 *   xen-relay drive-ioreq N  fds 3 page, 4 port (vCPU -> DM), 5 notify (DM -> vCPU), 6 kick:
 *       N times: fill slot 0 with a 4-byte write of 0 to QueueNotify, READY, write port, block on notify,
 *       check IORESP_READY, set NONE, read kick (must be 1). Prints {median, p99, mean} ns.
 *   xen-relay relay-ioreq    same fds: forever block on port, take the slot READY -> INPROCESS, match the
 *       doorbell, write kick, IORESP_READY, write notify (the pure-C device model relay).
 *   xen-relay drive-irq N    fds 3 call, 4 line: N times write call, block on line.
 *   xen-relay relay-irq      fds 3 call, 4 line: forever block on call, write line (set_irq_level stand-in).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_NOTIFY 0x2000050ULL

struct ioreq {
  uint64_t addr, data;
  uint32_t count, size, vp_eport;
  uint16_t pad0;
  uint8_t state_bits, type;
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void report(uint64_t *t, long n) {
  uint64_t sum = 0;
  for (long i = 0; i < n; i++) sum += t[i];
  qsort(t, (size_t)n, sizeof *t, cmp);
  printf("{\"median\":%llu,\"p99\":%llu,\"mean\":%llu}\n", (unsigned long long)t[n / 2],
         (unsigned long long)t[(n * 99) / 100], (unsigned long long)(sum / (uint64_t)n));
}

/* The relays run until SIGTERM and then print the CPU time they used (user + system, in ns) as JSON, so the
 * bench can compare the work done per event, which scheduling noise on a busy machine disturbs far less
 * than the latency figures. */
static void print_cpu(int sig) {
  struct rusage ru;
  char line[64];
  (void)sig;
  getrusage(RUSAGE_SELF, &ru);
  unsigned long long ns = ((unsigned long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000ull +
                           (unsigned long long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec)) * 1000ull;
  int len = snprintf(line, sizeof line, "{\"cpu_ns\":%llu}\n", ns);
  if (write(1, line, (size_t)len) < 0) _exit(1);
  _exit(0);
}

int main(int argc, char **argv) {
  uint64_t one = 1, v;
  if (argc < 2) return 2;
  const char *mode = argv[1];
  long n = argc > 2 ? atol(argv[2]) : 0;
  if (strncmp(mode, "relay-", 6) == 0) signal(SIGTERM, print_cpu);
  if (strcmp(mode, "relay-irq") == 0) {
    for (;;) {
      if (read(3, &v, 8) != 8) return 0;
      if (write(4, &one, 8) != 8) return 0;
    }
  }
  if (strcmp(mode, "drive-irq") == 0) {
    uint64_t *t = malloc(sizeof *t * (size_t)n);
    for (long i = -n / 10; i < n; i++) {
      uint64_t t0 = now_ns();
      if (write(3, &one, 8) != 8 || read(4, &v, 8) != 8) return 1;
      if (i >= 0) t[i] = now_ns() - t0;
    }
    report(t, n);
    return 0;
  }
  struct ioreq *r = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, 3, 0);
  if (r == MAP_FAILED) return 1;
  volatile uint8_t *state = &r->state_bits;
  if (strcmp(mode, "relay-ioreq") == 0) {
    for (;;) {
      if (read(4, &v, 8) != 8) return 0;
      uint8_t b = *state;
      if ((b & 0xf) != 1) continue;
      if (!__sync_bool_compare_and_swap(state, b, (uint8_t)((b & 0xf0) | 2))) continue;
      __sync_synchronize();
      if (r->type == 1 && !(b & 0x20) && r->addr == QUEUE_NOTIFY && r->size == 4 && (uint32_t)r->data == 0) {
        if (write(6, &one, 8) != 8) return 1;
      }
      __sync_synchronize();
      *state = (uint8_t)((*state & 0xf0) | 3);
      __sync_synchronize();
      if (write(5, &one, 8) != 8) return 0;
    }
  }
  if (strcmp(mode, "drive-ioreq") == 0) {
    uint64_t *t = malloc(sizeof *t * (size_t)n);
    for (long i = -n / 10; i < n; i++) {
      uint64_t t0 = now_ns();
      r->addr = QUEUE_NOTIFY;
      r->data = 0;
      r->count = 1;
      r->size = 4;
      r->type = 1;
      __sync_synchronize();
      *state = 1; /* READY, dir WRITE */
      if (write(4, &one, 8) != 8 || read(5, &v, 8) != 8) return 1;
      __sync_synchronize();
      if ((*state & 0xf) != 3) { fprintf(stderr, "state %u after notify\n", *state & 0xf); return 1; }
      *state = 0;
      if (read(6, &v, 8) != 8 || v != 1) { fprintf(stderr, "kick count %llu\n", (unsigned long long)v); return 1; }
      if (i >= 0) t[i] = now_ns() - t0;
    }
    report(t, n);
    return 0;
  }
  fprintf(stderr, "usage: xen-relay drive-ioreq N | relay-ioreq | drive-irq N | relay-irq\n");
  return 2;
}
