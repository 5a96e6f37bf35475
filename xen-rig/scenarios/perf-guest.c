/*
 * perf-guest: the domU side of the "perf" scenario. Two device models serve two windows of the same
 * guest at the same time (C at <base>, TypeScript at <base> + 0x1000); the guest maps both through /dev/mem
 * and alternates between them access by access, so both are timed under the same host load. Each uncached
 * load traps to Xen, becomes an ioreq for the window's dom0 device model and returns when the model answers;
 * each store to QueueNotify is a doorbell the model relays to an eventfd. Times come from the virtual
 * counter (CNTVCT_EL0, readable at EL0 on Linux).
 *
 *   perf-guest <base> <n>       prints "DOMU: perf <reads|kicks> <c|ts> ..." lines and "DOMU: perf ratio
 *                               ..." (median of the per-pair TS/C ratios), then writes 0x1fc of each window
 *                               to end the device models' runs
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAGIC 0x74726976u

static inline uint64_t ticks(void) {
  uint64_t t;
  __asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(t)::"memory");
  return t;
}
static uint64_t freq(void) {
  uint64_t f;
  __asm__ volatile("mrs %0, cntfrq_el0" : "=r"(f));
  return f;
}
static int cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}
static void report(const char *what, const char *who, uint64_t *t, long n, long bad) {
  uint64_t f = freq(), total = 0;
  for (long i = 0; i < n; i++) total += t[i];
  qsort(t, (size_t)n, sizeof *t, cmp);
#define NS(x) ((unsigned long long)((x) * 1000000000ull / f))
  printf("DOMU: perf %s %s n=%ld median_ns=%llu p10_ns=%llu p90_ns=%llu mean_ns=%llu bad=%ld\n", what, who, n,
         NS(t[n / 2]), NS(t[n / 10]), NS(t[(n * 9) / 10]), NS(total / (uint64_t)n), bad);
  fflush(stdout);
}
/* The median of tb[i] / ta[i] in thousandths: pairs are adjacent in time, so host load cancels out. */
static void pair_ratio(const char *what, const uint64_t *ta, const uint64_t *tb, long n) {
  uint64_t *r = malloc(sizeof *r * (size_t)n);
  for (long i = 0; i < n; i++) r[i] = ta[i] ? tb[i] * 1000 / ta[i] : 0;
  qsort(r, (size_t)n, sizeof *r, cmp);
  printf("DOMU: perf ratio %s ts/c pair_median_milli=%llu\n", what, (unsigned long long)r[n / 2]);
  free(r);
}

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: perf-guest <base> <n>\n"); return 2; }
  off_t base = (off_t)strtoull(argv[1], NULL, 0);
  long n = atol(argv[2]);
  if (n < 10) n = 10;
  int fd = open("/dev/mem", O_RDWR | O_SYNC);
  if (fd < 0) { perror("DOMU: perf open /dev/mem"); return 1; }
  volatile uint32_t *map = mmap(NULL, 0x2000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, base);
  if (map == MAP_FAILED) { perror("DOMU: perf mmap /dev/mem"); return 1; }
  volatile uint32_t *c = map, *ts = map + 0x1000 / 4;
  uint64_t *tc = malloc(sizeof *tc * (size_t)n), *tt = malloc(sizeof *tt * (size_t)n);
  uint64_t *tc2 = malloc(sizeof *tc * (size_t)n), *tt2 = malloc(sizeof *tt * (size_t)n);
  long badc = 0, badt = 0;
  for (int i = 0; i < 50; i++) badc += c[0] != MAGIC, badt += ts[0] != MAGIC; /* warm-up: caches, the JIT */
  /* Which model goes first alternates, so neither always follows the other's wake-up. */
  for (long i = 0; i < n; i++) {
    volatile uint32_t *x = i & 1 ? ts : c, *y = i & 1 ? c : ts;
    uint64_t a = ticks();
    uint32_t v = x[0];
    uint64_t b = ticks();
    uint32_t u = y[0];
    uint64_t e = ticks();
    tc[i] = i & 1 ? e - b : b - a;
    tt[i] = i & 1 ? b - a : e - b;
    badc += (i & 1 ? u : v) != MAGIC;
    badt += (i & 1 ? v : u) != MAGIC;
  }
  for (long i = 0; i < n; i++) {
    volatile uint32_t *x = i & 1 ? ts : c, *y = i & 1 ? c : ts;
    uint64_t a = ticks();
    x[0x50 / 4] = 0; /* QueueNotify, queue 0: a doorbell */
    uint64_t b = ticks();
    y[0x50 / 4] = 0;
    uint64_t e = ticks();
    tc2[i] = i & 1 ? e - b : b - a;
    tt2[i] = i & 1 ? b - a : e - b;
  }
  pair_ratio("reads", tc, tt, n);
  pair_ratio("kicks", tc2, tt2, n);
  report("reads", "c", tc, n, badc);
  report("reads", "ts", tt, n, badt);
  report("kicks", "c", tc2, n, 0);
  report("kicks", "ts", tt2, n, 0);
  c[0x1fc / 4] = 1; /* the end of the run */
  ts[0x1fc / 4] = 1;
  return 0;
}
