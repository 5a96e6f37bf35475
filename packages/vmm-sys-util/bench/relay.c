/*
 * The floor for the relay benchmark: the same syscalls in C.
 *   relay drive N  - fds 3 (A) and 4 (B): N times, write A, block on B; prints per-round-trip ns
 *                    as one JSON line {median, p99, mean}.
 *   relay echo     - fds 3 (A) and 4 (B): forever, block on A, write B (the pure-C relay).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  const int A = 3, B = 4;
  uint64_t one = 1, v;
  if (argc >= 2 && strcmp(argv[1], "echo") == 0) {
    for (;;) {
      if (read(A, &v, 8) != 8) return 0;
      if (write(B, &one, 8) != 8) return 0;
    }
  }
  if (argc < 3 || strcmp(argv[1], "drive") != 0) {
    fprintf(stderr, "usage: relay drive N | relay echo\n");
    return 2;
  }
  long n = atol(argv[2]);
  uint64_t *t = malloc(sizeof *t * (size_t)n);
  for (long i = 0; i < n / 10; i++) { /* warm-up */
    if (write(A, &one, 8) != 8 || read(B, &v, 8) != 8) return 1;
  }
  for (long i = 0; i < n; i++) {
    uint64_t t0 = now_ns();
    if (write(A, &one, 8) != 8 || read(B, &v, 8) != 8) return 1;
    t[i] = now_ns() - t0;
  }
  uint64_t sum = 0;
  for (long i = 0; i < n; i++) sum += t[i];
  qsort(t, (size_t)n, sizeof *t, cmp);
  printf("{\"median\":%llu,\"p99\":%llu,\"mean\":%llu}\n", (unsigned long long)t[n / 2],
         (unsigned long long)t[(n * 99) / 100], (unsigned long long)(sum / (uint64_t)n));
  return 0;
}
