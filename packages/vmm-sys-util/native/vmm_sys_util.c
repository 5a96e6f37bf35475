/*
 * vmm-sys-util native layer: syscall-thin N-API bindings.
 *
 * Policy (retries, parsing, struct layouts, error classes) lives in TypeScript. This file only turns JS
 * numbers/bigints/ArrayBufferViews into syscall arguments and syscall results into JS values. Every
 * failing syscall throws an instance of the SysError class that the TS loader registers with
 * `setErrorClass` (constructed as `new SysError(syscall, errno, detail)`).
 *
 * Invariants:
 *  - every fd created here is O_CLOEXEC (a spawned backend must never inherit our privcmd or eventfds);
 *  - a mapping returned by `mmap` is an external ArrayBuffer; `munmap` detaches it before unmapping, so a
 *    stale typed array reads as length 0 instead of touching unmapped memory; a mapping the program drops
 *    without `munmap` is unmapped by the finalizer and counted as leaked;
 *  - "would block" is not an error: read/write/recvmsg/sendmsg/accept return null on EAGAIN.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS_PER_MSG 253 /* SCM_MAX_FD in the kernel */

static napi_ref g_error_class = NULL;

/* ---------------------------------------------------------------- helpers */

#define NAPI_OK(call)                                                                           \
  do {                                                                                          \
    if ((call) != napi_ok) {                                                                    \
      const napi_extended_error_info *info_ = NULL;                                             \
      napi_get_last_error_info(env, &info_);                                                    \
      bool pending_ = false;                                                                    \
      napi_is_exception_pending(env, &pending_);                                                \
      if (!pending_)                                                                            \
        napi_throw_error(env, "ERR_NAPI", info_ && info_->error_message ? info_->error_message \
                                                                        : "N-API call failed"); \
      return NULL;                                                                              \
    }                                                                                           \
  } while (0)

static napi_value throw_sys(napi_env env, const char *syscall, int err, const char *detail) {
  napi_value ctor, argv[3], obj;
  if (g_error_class == NULL || napi_get_reference_value(env, g_error_class, &ctor) != napi_ok || ctor == NULL) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s failed: %s", syscall, strerror(err));
    napi_throw_error(env, NULL, msg);
    return NULL;
  }
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &argv[0]);
  napi_create_int32(env, err, &argv[1]);
  if (detail)
    napi_create_string_utf8(env, detail, NAPI_AUTO_LENGTH, &argv[2]);
  else
    napi_get_undefined(env, &argv[2]);
  if (napi_new_instance(env, ctor, 3, argv, &obj) == napi_ok) napi_throw(env, obj);
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static napi_value throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

static napi_value js_undefined(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

static napi_value js_null(napi_env env) {
  napi_value v;
  napi_get_null(env, &v);
  return v;
}

static napi_value js_int(napi_env env, int64_t n) {
  napi_value v;
  napi_create_int64(env, n, &v);
  return v;
}

static napi_value js_bool(napi_env env, bool b) {
  napi_value v;
  napi_get_boolean(env, b, &v);
  return v;
}

/* Reads an int32 argument; throws TypeError if it is not a number. */
static bool get_i32(napi_env env, napi_value v, int32_t *out, const char *what) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_number) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a number", what);
    throw_type(env, msg);
    return false;
  }
  napi_get_value_int32(env, v, out);
  return true;
}

static bool get_fd(napi_env env, napi_value v, int *fd) {
  int32_t n;
  if (!get_i32(env, v, &n, "fd")) return false;
  if (n < 0) {
    throw_range(env, "fd must be a non-negative integer");
    return false;
  }
  *fd = n;
  return true;
}

/* A number or bigint, as an unsigned 64-bit value (negative numbers wrap, like C casts of ioctl args). */
static bool get_u64(napi_env env, napi_value v, uint64_t *out, const char *what) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_bigint) {
    bool lossless;
    napi_get_value_bigint_uint64(env, v, out, &lossless);
    if (!lossless) {
      int64_t s;
      napi_get_value_bigint_int64(env, v, &s, &lossless);
      if (!lossless) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s does not fit in 64 bits", what);
        throw_range(env, msg);
        return false;
      }
      *out = (uint64_t)s;
    }
    return true;
  }
  if (t == napi_number) {
    double d;
    napi_get_value_double(env, v, &d);
    if (d != (double)(int64_t)d) {
      char msg[128];
      snprintf(msg, sizeof msg, "%s must be an integer", what);
      throw_range(env, msg);
      return false;
    }
    *out = (uint64_t)(int64_t)d;
    return true;
  }
  char msg[128];
  snprintf(msg, sizeof msg, "%s must be a number or bigint", what);
  throw_type(env, msg);
  return false;
}

/* Data pointer and length of an ArrayBufferView (typed array, DataView or Buffer) or ArrayBuffer. */
static bool get_bytes(napi_env env, napi_value v, void **data, size_t *len, const char *what) {
  /* Fast path (every read/write/ioctl with a view): Node's napi_get_buffer_info takes any ArrayBufferView
   * (node::Buffer::HasInstance is IsArrayBufferView) and returns its data pointer and byte length in one call,
   * where napi_get_typedarray_info first tests the element type one typed-array kind after another (~400
   * instructions more for a BigUint64Array). Anything it refuses takes the general path below. */
  if (napi_get_buffer_info(env, v, data, len) == napi_ok) return true;
  bool is;
  napi_is_typedarray(env, v, &is);
  if (is) {
    napi_typedarray_type type;
    size_t count;
    napi_value ab;
    size_t off;
    napi_get_typedarray_info(env, v, &type, &count, data, &ab, &off);
    size_t el = 1;
    switch (type) {
      case napi_int16_array: case napi_uint16_array: el = 2; break;
      case napi_int32_array: case napi_uint32_array: case napi_float32_array: el = 4; break;
      case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: el = 8; break;
      default: el = 1;
    }
    *len = count * el;
    return true;
  }
  napi_is_dataview(env, v, &is);
  if (is) {
    napi_value ab;
    size_t off;
    napi_get_dataview_info(env, v, len, data, &ab, &off);
    return true;
  }
  napi_is_arraybuffer(env, v, &is);
  if (is) {
    napi_get_arraybuffer_info(env, v, data, len);
    return true;
  }
  char msg[128];
  snprintf(msg, sizeof msg, "%s must be an ArrayBufferView or ArrayBuffer", what);
  throw_type(env, msg);
  return false;
}

static bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  for (size_t i = argc; i < want; i++) napi_get_undefined(env, &argv[i]);
  return true;
}

/* ---------------------------------------------------------------- errors */

/* setErrorClass(ctor): the class thrown for failed syscalls. */
static napi_value SetErrorClass(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  get_args(env, info, 1, argv);
  if (g_error_class) napi_delete_reference(env, g_error_class);
  NAPI_OK(napi_create_reference(env, argv[0], 1, &g_error_class));
  return js_undefined(env);
}

/* strerror(errno) -> string, for messages. */
static napi_value StrError(napi_env env, napi_callback_info info) {
  napi_value argv[1], s;
  int32_t e;
  get_args(env, info, 1, argv);
  if (!get_i32(env, argv[0], &e, "errno")) return NULL;
  napi_create_string_utf8(env, strerror(e), NAPI_AUTO_LENGTH, &s);
  return s;
}

/* ---------------------------------------------------------------- fd basics */

/* open(path, flags, mode) -> fd. O_CLOEXEC is always added. */
static napi_value Open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char path[4096];
  size_t n;
  int32_t flags, mode = 0;
  get_args(env, info, 3, argv);
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof path, &n) != napi_ok) return throw_type(env, "path must be a string");
  if (n >= sizeof path - 1) return throw_range(env, "path too long");
  if (!get_i32(env, argv[1], &flags, "flags")) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (t != napi_undefined && !get_i32(env, argv[2], &mode, "mode")) return NULL;
  int fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) return throw_sys(env, "open", errno, path);
  return js_int(env, fd);
}

static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  get_args(env, info, 1, argv);
  if (!get_fd(env, argv[0], &fd)) return NULL;
  /* Linux closes the fd even when close() reports EINTR: never retry. */
  if (close(fd) < 0 && errno != EINTR) return throw_sys(env, "close", errno, NULL);
  return js_undefined(env);
}

/* read(fd, view) -> bytes read, or null on EAGAIN. */
static napi_value Read(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  void *data;
  size_t len;
  get_args(env, info, 2, argv);
  if (!get_fd(env, argv[0], &fd) || !get_bytes(env, argv[1], &data, &len, "buffer")) return NULL;
  ssize_t r;
  do r = read(fd, data, len); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN) return js_null(env);
    return throw_sys(env, "read", errno, NULL);
  }
  return js_int(env, r);
}

/* write(fd, view) -> bytes written, or null on EAGAIN. */
static napi_value Write(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  void *data;
  size_t len;
  get_args(env, info, 2, argv);
  if (!get_fd(env, argv[0], &fd) || !get_bytes(env, argv[1], &data, &len, "buffer")) return NULL;
  ssize_t r;
  do r = write(fd, data, len); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN) return js_null(env);
    return throw_sys(env, "write", errno, NULL);
  }
  return js_int(env, r);
}

static napi_value SetNonblocking(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  bool on;
  get_args(env, info, 2, argv);
  if (!get_fd(env, argv[0], &fd)) return NULL;
  if (napi_get_value_bool(env, argv[1], &on) != napi_ok) return throw_type(env, "nonblocking must be a boolean");
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return throw_sys(env, "fcntl", errno, "F_GETFL");
  fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (fcntl(fd, F_SETFL, fl) < 0) return throw_sys(env, "fcntl", errno, "F_SETFL");
  return js_undefined(env);
}

/* dup(fd) -> new fd (O_CLOEXEC). */
static napi_value Dup(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  get_args(env, info, 1, argv);
  if (!get_fd(env, argv[0], &fd)) return NULL;
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r < 0) return throw_sys(env, "fcntl", errno, "F_DUPFD_CLOEXEC");
  return js_int(env, r);
}

/* ---------------------------------------------------------------- eventfd */

/* eventfd(initval, flags) -> fd; flags are EFD_NONBLOCK / EFD_SEMAPHORE (EFD_CLOEXEC is implied). */
static napi_value EventFdCreate(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t init, flags;
  get_args(env, info, 2, argv);
  if (!get_i32(env, argv[0], &init, "initval") || !get_i32(env, argv[1], &flags, "flags")) return NULL;
  int fd = eventfd((unsigned)init, flags | EFD_CLOEXEC);
  if (fd < 0) return throw_sys(env, "eventfd", errno, NULL);
  return js_int(env, fd);
}

/* One read of an eventfd's counter, retried on EINTR: 1 with *v set, 0 when the counter is zero on a
 * nonblocking fd (EAGAIN), -1 with errno set for a failed read, -2 for a short read (never from a real eventfd). */
static int eventfd_read_counter(int fd, uint64_t *v) {
  ssize_t r;
  do r = read(fd, v, sizeof *v); while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EAGAIN ? 0 : -1;
  return r == (ssize_t)sizeof *v ? 1 : -2;
}

/* eventfdRead(fd) -> bigint counter, or null on EAGAIN. */
static napi_value EventFdRead(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int fd;
  uint64_t v;
  get_args(env, info, 1, argv);
  if (!get_fd(env, argv[0], &fd)) return NULL;
  int got = eventfd_read_counter(fd, &v);
  if (got == 0) return js_null(env);
  if (got == -1) return throw_sys(env, "read", errno, "eventfd");
  if (got == -2) return throw_sys(env, "read", EIO, "eventfd: short read");
  napi_create_bigint_uint64(env, v, &out);
  return out;
}

/* eventfdWrite(fd, value) -> true, or false on EAGAIN (counter would overflow). */
static napi_value EventFdWrite(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint64_t v;
  get_args(env, info, 2, argv);
  if (!get_fd(env, argv[0], &fd) || !get_u64(env, argv[1], &v, "value")) return NULL;
  ssize_t r;
  do r = write(fd, &v, sizeof v); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN) return js_bool(env, false);
    return throw_sys(env, "write", errno, "eventfd");
  }
  return js_bool(env, true);
}

/* eventfdTake(fd) -> the counter as a number, 0 on EAGAIN (a counter read is never 0 otherwise): the hot-path
 * form of eventfdRead, without a bigint per call. A counter above 2^53 is rounded to the nearest double. */
static napi_value EventFdTake(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int fd;
  uint64_t v;
  get_args(env, info, 1, argv);
  if (!get_fd(env, argv[0], &fd)) return NULL;
  int got = eventfd_read_counter(fd, &v);
  if (got == 0) v = 0;
  if (got == -1) return throw_sys(env, "read", errno, "eventfd");
  if (got == -2) return throw_sys(env, "read", EIO, "eventfd: short read");
  napi_create_double(env, (double)v, &out);
  return out;
}

/* eventfdSignal(fd) -> true, or false on EAGAIN: adds 1, the doorbell/interrupt case of eventfdWrite without
 * converting a value argument. */
static napi_value EventFdSignal(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  const uint64_t one = 1;
  get_args(env, info, 1, argv);
  if (!get_fd(env, argv[0], &fd)) return NULL;
  ssize_t r;
  do r = write(fd, &one, sizeof one); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN) return js_bool(env, false);
    return throw_sys(env, "write", errno, "eventfd");
  }
  return js_bool(env, true);
}

/* ---------------------------------------------------------------- ioctl */

/* ioctl(fd, request, arg) -> non-negative return value. arg: number/bigint (passed by value) or a view
 * (a pointer to its bytes). SAFETY: for a view, the caller's layout guarantees it is at least as large as
 * the struct the request encodes; the TS wrapper checks the _IOC size against the view length. */
static napi_value Ioctl(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  uint64_t req, argval = 0;
  void *ptr = NULL;
  size_t len;
  get_args(env, info, 3, argv);
  if (!get_fd(env, argv[0], &fd) || !get_u64(env, argv[1], &req, "request")) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (t == napi_number || t == napi_bigint) {
    if (!get_u64(env, argv[2], &argval, "arg")) return NULL;
    ptr = (void *)(uintptr_t)argval;
  } else if (t != napi_undefined) {
    if (!get_bytes(env, argv[2], &ptr, &len, "arg")) return NULL;
  }
  int r;
  do r = ioctl(fd, (unsigned long)req, ptr); while (r < 0 && errno == EINTR);
  if (r < 0) {
    char detail[32];
    snprintf(detail, sizeof detail, "0x%llx", (unsigned long long)req);
    return throw_sys(env, "ioctl", errno, detail);
  }
  return js_int(env, r);
}

/* addressOf(view) -> bigint address of its first byte, for structs that carry user pointers.
 * SAFETY: valid only while the view's buffer is alive and not detached; callers keep a reference. */
static napi_value AddressOf(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  void *data;
  size_t len;
  get_args(env, info, 1, argv);
  if (!get_bytes(env, argv[0], &data, &len, "view")) return NULL;
  napi_create_bigint_uint64(env, (uint64_t)(uintptr_t)data, &out);
  return out;
}

/* ---------------------------------------------------------------- mmap */

typedef struct mapping {
  void *addr;
  size_t len;
  int unmapped;
  struct mapping *next;
} mapping_t;

/* Live mappings, so munmap(ab) can find its record and the finalizer knows not to unmap twice. Live
 * mappings never overlap, so the address identifies one record. Only touched on the JS thread. */
static mapping_t *g_mappings = NULL;
static int64_t g_leaked = 0;

static void mapping_unlink(mapping_t *m) {
  for (mapping_t **pp = &g_mappings; *pp; pp = &(*pp)->next)
    if (*pp == m) {
      *pp = m->next;
      return;
    }
}

static void mapping_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  mapping_t *m = hint;
  if (!m->unmapped) {
    /* The program dropped a mapping without munmap: release it, and say so (a leak of guest memory). */
    mapping_unlink(m);
    munmap(m->addr, m->len);
    g_leaked++;
    fprintf(stderr, "vmm-sys-util: mapping of %zu bytes at %p was garbage-collected without munmap\n", m->len, m->addr);
  }
  free(m);
}

/* mmap(length, prot, flags, fd, offset) -> external ArrayBuffer over the mapping. */
static napi_value Mmap(napi_env env, napi_callback_info info) {
  napi_value argv[5], ab;
  uint64_t length, offset;
  int32_t prot, flags, fd;
  get_args(env, info, 5, argv);
  if (!get_u64(env, argv[0], &length, "length") || !get_i32(env, argv[1], &prot, "prot") ||
      !get_i32(env, argv[2], &flags, "flags") || !get_i32(env, argv[3], &fd, "fd") ||
      !get_u64(env, argv[4], &offset, "offset"))
    return NULL;
  if (length == 0 || length > ((uint64_t)1 << 47)) return throw_range(env, "mmap length must be in (0, 2^47]");
  mapping_t *m = calloc(1, sizeof *m);
  if (!m) return throw_sys(env, "mmap", ENOMEM, "record");
  void *addr = mmap(NULL, (size_t)length, prot, flags, fd, (off_t)offset);
  if (addr == MAP_FAILED) {
    int e = errno;
    free(m);
    return throw_sys(env, "mmap", e, NULL);
  }
  m->addr = addr;
  m->len = (size_t)length;
  if (napi_create_external_arraybuffer(env, addr, (size_t)length, mapping_finalize, m, &ab) != napi_ok) {
    munmap(addr, (size_t)length);
    free(m);
    return throw_sys(env, "mmap", ENOMEM, "external arraybuffer");
  }
  m->next = g_mappings;
  g_mappings = m;
  return ab;
}

/* munmap(arraybuffer): detach first (stale views then have length 0), then unmap. Idempotent: a
 * detached or unknown buffer is a no-op returning false. */
static napi_value Munmap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  void *data;
  size_t len;
  bool is;
  get_args(env, info, 1, argv);
  napi_is_arraybuffer(env, argv[0], &is);
  if (!is) return throw_type(env, "munmap takes the ArrayBuffer returned by mmap");
  napi_is_detached_arraybuffer(env, argv[0], &is);
  if (is) return js_bool(env, false);
  napi_get_arraybuffer_info(env, argv[0], &data, &len);
  mapping_t *m = NULL;
  for (mapping_t *p = g_mappings; p; p = p->next)
    if (p->addr == data && !p->unmapped) {
      m = p;
      break;
    }
  if (!m) return throw_type(env, "ArrayBuffer is not a live mapping from mmap");
  NAPI_OK(napi_detach_arraybuffer(env, argv[0]));
  mapping_unlink(m);
  m->unmapped = 1; /* the finalizer frees the record, later */
  if (munmap(m->addr, m->len) < 0) return throw_sys(env, "munmap", errno, NULL);
  return js_bool(env, true);
}

/* mmapFixed(arraybuffer, offset, length, prot, flags, fd, fileOffset): replaces pages inside a live
 * mapping from `mmap` with a mapping of `fd` (MAP_FIXED). Lets one contiguous view be assembled from
 * several sources (e.g. non-contiguous guest frames of a memfd). SAFETY: the range is checked to lie
 * inside the live mapping, so MAP_FIXED can never clobber memory we do not own. */
static napi_value MmapFixed(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  void *data;
  size_t len;
  uint64_t off, n, foff;
  int32_t prot, flags, fd;
  bool is;
  get_args(env, info, 7, argv);
  napi_is_arraybuffer(env, argv[0], &is);
  if (!is) return throw_type(env, "mmapFixed takes an ArrayBuffer returned by mmap");
  napi_get_arraybuffer_info(env, argv[0], &data, &len);
  if (!get_u64(env, argv[1], &off, "offset") || !get_u64(env, argv[2], &n, "length") ||
      !get_i32(env, argv[3], &prot, "prot") || !get_i32(env, argv[4], &flags, "flags") ||
      !get_i32(env, argv[5], &fd, "fd") || !get_u64(env, argv[6], &foff, "fileOffset"))
    return NULL;
  mapping_t *m = NULL;
  for (mapping_t *p = g_mappings; p; p = p->next)
    if (p->addr == data && !p->unmapped) m = p;
  if (!m) return throw_type(env, "ArrayBuffer is not a live mapping from mmap");
  long page = sysconf(_SC_PAGESIZE);
  if (n == 0 || off % page || off > m->len || n > m->len - off) return throw_range(env, "mmapFixed range must be page-aligned and inside the mapping");
  void *want = (char *)m->addr + off;
  void *got = mmap(want, (size_t)n, prot, flags | MAP_FIXED, fd, (off_t)foff);
  if (got == MAP_FAILED) return throw_sys(env, "mmap", errno, "MAP_FIXED");
  return js_undefined(env);
}

/* leakedMappings() -> how many mappings the finalizer had to unmap. */
static napi_value LeakedMappings(napi_env env, napi_callback_info info) {
  (void)info;
  return js_int(env, g_leaked);
}

/* msync(arraybuffer, offset, length, flags) */
static napi_value Msync(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  void *data;
  size_t len;
  uint64_t off, n;
  int32_t flags;
  get_args(env, info, 4, argv);
  if (!get_bytes(env, argv[0], &data, &len, "mapping") || !get_u64(env, argv[1], &off, "offset") ||
      !get_u64(env, argv[2], &n, "length") || !get_i32(env, argv[3], &flags, "flags"))
    return NULL;
  if (off > len || n > len - off) return throw_range(env, "msync range outside the mapping");
  if (msync((char *)data + off, n, flags) < 0) return throw_sys(env, "msync", errno, NULL);
  return js_undefined(env);
}

/* memfdCreate(name, flags) -> fd; MFD_CLOEXEC is implied. */
static napi_value MemfdCreate(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[250];
  size_t n;
  int32_t flags;
  get_args(env, info, 2, argv);
  if (napi_get_value_string_utf8(env, argv[0], name, sizeof name, &n) != napi_ok) return throw_type(env, "name must be a string");
  if (!get_i32(env, argv[1], &flags, "flags")) return NULL;
  int fd = memfd_create(name, (unsigned)flags | MFD_CLOEXEC);
  if (fd < 0) return throw_sys(env, "memfd_create", errno, name);
  return js_int(env, fd);
}

static napi_value Ftruncate(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint64_t len;
  get_args(env, info, 2, argv);
  if (!get_fd(env, argv[0], &fd) || !get_u64(env, argv[1], &len, "length")) return NULL;
  if (ftruncate(fd, (off_t)len) < 0) return throw_sys(env, "ftruncate", errno, NULL);
  return js_undefined(env);
}

/* ---------------------------------------------------------------- fences and single-instruction access */

/* fence(): a full (sequentially consistent) memory barrier, for ring and ioreq state hand-offs. */
static napi_value Fence(napi_env env, napi_callback_info info) {
  (void)info;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return js_undefined(env);
}

/* ---------------------------------------------------------------- unix sockets */

static bool get_sun(napi_env env, napi_value v, struct sockaddr_un *sun, socklen_t *slen) {
  size_t n;
  memset(sun, 0, sizeof *sun);
  sun->sun_family = AF_UNIX;
  if (napi_get_value_string_utf8(env, v, sun->sun_path, sizeof sun->sun_path, &n) != napi_ok) {
    throw_type(env, "socket path must be a string");
    return false;
  }
  if (n == 0 || n >= sizeof sun->sun_path - 1) {
    throw_range(env, "socket path must be 1..107 bytes");
    return false;
  }
  *slen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return true;
}

/* socketpair() -> [fd, fd] (AF_UNIX, SOCK_STREAM, close-on-exec). */
static napi_value SocketPair(napi_env env, napi_callback_info info) {
  (void)info;
  int sv[2];
  napi_value arr;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return throw_sys(env, "socketpair", errno, NULL);
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, js_int(env, sv[0]));
  napi_set_element(env, arr, 1, js_int(env, sv[1]));
  return arr;
}

/* unixConnect(path) -> connected fd (blocking connect; unix connects complete at once or fail). */
static napi_value UnixConnect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct sockaddr_un sun;
  socklen_t slen;
  get_args(env, info, 1, argv);
  if (!get_sun(env, argv[0], &sun, &slen)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_sys(env, "socket", errno, NULL);
  int r;
  do r = connect(fd, (struct sockaddr *)&sun, slen); while (r < 0 && errno == EINTR);
  if (r < 0) {
    int e = errno;
    close(fd);
    return throw_sys(env, "connect", e, sun.sun_path);
  }
  return js_int(env, fd);
}

/* unixListen(path, backlog) -> listening fd. The socket file is created mode 0600 (umask 0177 around
 * bind): a vhost-user socket hands out guest memory and must not be reachable by other users. */
static napi_value UnixListen(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct sockaddr_un sun;
  socklen_t slen;
  int32_t backlog = 16;
  get_args(env, info, 2, argv);
  if (!get_sun(env, argv[0], &sun, &slen)) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t != napi_undefined && !get_i32(env, argv[1], &backlog, "backlog")) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_sys(env, "socket", errno, NULL);
  mode_t old = umask(0177);
  int r = bind(fd, (struct sockaddr *)&sun, slen);
  int e = errno;
  umask(old);
  if (r < 0) {
    close(fd);
    return throw_sys(env, "bind", e, sun.sun_path);
  }
  if (listen(fd, backlog) < 0) {
    e = errno;
    close(fd);
    return throw_sys(env, "listen", e, sun.sun_path);
  }
  return js_int(env, fd);
}

/* accept(fd) -> new fd, or null on EAGAIN. */
static napi_value Accept(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  get_args(env, info, 1, argv);
  if (!get_fd(env, argv[0], &fd)) return NULL;
  int r;
  do r = accept4(fd, NULL, NULL, SOCK_CLOEXEC); while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN) return js_null(env);
    return throw_sys(env, "accept4", errno, NULL);
  }
  return js_int(env, r);
}

/* sendmsg(fd, view, fds[]) -> bytes sent, or null on EAGAIN. MSG_NOSIGNAL: a dead peer is EPIPE, not a
 * process-killing SIGPIPE. */
static napi_value SendMsg(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  void *data;
  size_t len;
  uint32_t nfds = 0;
  get_args(env, info, 3, argv);
  if (!get_fd(env, argv[0], &fd) || !get_bytes(env, argv[1], &data, &len, "data")) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  bool is_arr = false;
  if (t != napi_undefined) {
    napi_is_array(env, argv[2], &is_arr);
    if (!is_arr) return throw_type(env, "fds must be an array of numbers");
    napi_get_array_length(env, argv[2], &nfds);
  }
  if (nfds > MAX_FDS_PER_MSG) return throw_range(env, "too many fds for one message (max 253)");
  int fds[MAX_FDS_PER_MSG];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value e;
    napi_get_element(env, argv[2], i, &e);
    if (!get_fd(env, e, &fds[i])) return NULL;
  }
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  char *cbuf = NULL;
  if (nfds > 0) {
    size_t clen = CMSG_SPACE(sizeof(int) * nfds);
    cbuf = calloc(1, clen);
    if (!cbuf) return throw_sys(env, "sendmsg", ENOMEM, NULL);
    msg.msg_control = cbuf;
    msg.msg_controllen = clen;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t r;
  do r = sendmsg(fd, &msg, MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
  int e = errno;
  free(cbuf);
  if (r < 0) {
    if (e == EAGAIN) return js_null(env);
    return throw_sys(env, "sendmsg", e, NULL);
  }
  return js_int(env, r);
}

/* recvmsg(fd, view, maxFds) -> { bytes, fds, truncated, ctruncated } or null on EAGAIN. bytes === 0
 * means the peer closed. Fds arrive close-on-exec (MSG_CMSG_CLOEXEC); when the control data was
 * truncated the fds that did arrive are still returned, so the caller can close them. */
static napi_value RecvMsg(napi_env env, napi_callback_info info) {
  napi_value argv[3], out, arr;
  int fd;
  void *data;
  size_t len;
  int32_t maxfds = 0;
  get_args(env, info, 3, argv);
  if (!get_fd(env, argv[0], &fd) || !get_bytes(env, argv[1], &data, &len, "buffer")) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (t != napi_undefined && !get_i32(env, argv[2], &maxfds, "maxFds")) return NULL;
  if (maxfds < 0 || maxfds > MAX_FDS_PER_MSG) return throw_range(env, "maxFds must be 0..253");
  size_t clen = CMSG_SPACE(sizeof(int) * (maxfds > 0 ? maxfds : 1));
  char *cbuf = calloc(1, clen);
  if (!cbuf) return throw_sys(env, "recvmsg", ENOMEM, NULL);
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = clen};
  ssize_t r;
  do r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); while (r < 0 && errno == EINTR);
  if (r < 0) {
    int e = errno;
    free(cbuf);
    if (e == EAGAIN) return js_null(env);
    return throw_sys(env, "recvmsg", e, NULL);
  }
  napi_create_array(env, &arr);
  uint32_t n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int *p = (int *)CMSG_DATA(c);
    for (size_t i = 0; i < cnt; i++) {
      int v;
      memcpy(&v, p + i, sizeof v);
      napi_set_element(env, arr, n++, js_int(env, v));
    }
  }
  free(cbuf);
  napi_create_object(env, &out);
  napi_set_named_property(env, out, "bytes", js_int(env, r));
  napi_set_named_property(env, out, "fds", arr);
  napi_set_named_property(env, out, "truncated", js_bool(env, (msg.msg_flags & MSG_TRUNC) != 0));
  napi_set_named_property(env, out, "ctruncated", js_bool(env, (msg.msg_flags & MSG_CTRUNC) != 0));
  return out;
}

/* ---------------------------------------------------------------- FdWatcher (uv_poll) */

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int fd;
  int drain;      /* the fd is an eventfd: read its counter here and pass it to the callback */
  int closing;    /* uv_close requested: no more callbacks */
  int uv_closed;  /* libuv is done with the handle */
  int finalized;  /* the JS external is gone */
} watcher_t;

/* The record is freed once both libuv and the JS external have let go of it. */
static void watcher_closed(uv_handle_t *h) {
  watcher_t *w = (watcher_t *)h->data;
  w->uv_closed = 1;
  if (w->finalized) free(w);
}

static void watcher_release_js(napi_env env, watcher_t *w) {
  if (w->callback) {
    napi_delete_reference(env, w->callback);
    w->callback = NULL;
  }
  if (w->async) {
    napi_async_destroy(env, w->async);
    w->async = NULL;
  }
}

static void watcher_cb(uv_poll_t *h, int status, int events) {
  watcher_t *w = (watcher_t *)h->data;
  if (w->closing) return;
  /* Eventfd mode: the read the callback would make first, done here (one N-API call less per event). Only
   * after poll said readable, as the JS path does: a blocking eventfd then has a non-zero counter unless
   * another reader took it, which EAGAIN reports on a nonblocking one. Nothing to report: no callback. */
  double count = 0;
  if (w->drain && status == 0 && (events & UV_READABLE)) {
    uint64_t v;
    int got = eventfd_read_counter(w->fd, &v);
    if (got == 1) count = (double)v;
    else if (got == 0) {
      if ((events & ~UV_READABLE) == 0) return;
    } else status = -(got == -1 ? errno : EIO);
  }
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, global, argv[3], result;
  napi_get_reference_value(env, w->callback, &cb);
  /* The receiver must be an object: napi_make_callback with `undefined` silently never runs. */
  napi_get_global(env, &global);
  napi_create_int32(env, events, &argv[0]);
  napi_create_int32(env, status < 0 ? -status : 0, &argv[1]);
  napi_create_double(env, count, &argv[2]);
  if (cb) napi_make_callback(env, w->async, global, cb, 3, argv, &result);
  napi_close_handle_scope(env, scope);
}

static void watcher_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  watcher_t *w = data;
  watcher_release_js(env, w);
  w->finalized = 1;
  if (!w->closing) {
    w->closing = 1;
    uv_close((uv_handle_t *)&w->poll, watcher_closed);
  } else if (w->uv_closed) {
    free(w);
  }
}

/* watcherCreate(fd, callback(events, errno, count), drainEventfd?) -> external handle. Not started. With
 * drainEventfd, the fd is an eventfd whose counter the watcher reads before each callback (`count`). */
static napi_value WatcherCreate(napi_env env, napi_callback_info info) {
  napi_value argv[3], ext, name;
  int fd;
  bool drain = false;
  get_args(env, info, 3, argv);
  napi_valuetype dt;
  napi_typeof(env, argv[2], &dt);
  if (dt == napi_boolean) napi_get_value_bool(env, argv[2], &drain);
  if (!get_fd(env, argv[0], &fd)) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t != napi_function) return throw_type(env, "callback must be a function");
  uv_loop_t *loop;
  NAPI_OK(napi_get_uv_event_loop(env, &loop));
  watcher_t *w = calloc(1, sizeof *w);
  if (!w) return throw_sys(env, "uv_poll_init", ENOMEM, NULL);
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r < 0) {
    free(w);
    return throw_sys(env, "uv_poll_init", -r, NULL);
  }
  w->poll.data = w;
  w->env = env;
  w->fd = fd;
  w->drain = drain ? 1 : 0;
  napi_create_reference(env, argv[1], 1, &w->callback);
  napi_create_string_utf8(env, "FdWatcher", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->async);
  if (napi_create_external(env, w, watcher_finalize, NULL, &ext) != napi_ok) {
    watcher_finalize(env, w, NULL);
    return throw_sys(env, "napi_create_external", ENOMEM, NULL);
  }
  return ext;
}

static watcher_t *get_watcher(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    throw_type(env, "not a watcher handle");
    return NULL;
  }
  watcher_t *w = p;
  if (w->closing) {
    throw_sys(env, "uv_poll", EBADF, "watcher closed");
    return NULL;
  }
  return w;
}

/* watcherStart(handle, events): events is a UV_READABLE|UV_WRITABLE|UV_DISCONNECT|UV_PRIORITIZED mask. */
static napi_value WatcherStart(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t events;
  get_args(env, info, 2, argv);
  watcher_t *w = get_watcher(env, argv[0]);
  if (!w || !get_i32(env, argv[1], &events, "events")) return NULL;
  int r = uv_poll_start(&w->poll, events, watcher_cb);
  if (r < 0) return throw_sys(env, "uv_poll_start", -r, NULL);
  return js_undefined(env);
}

static napi_value WatcherStop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  get_args(env, info, 1, argv);
  watcher_t *w = get_watcher(env, argv[0]);
  if (!w) return NULL;
  uv_poll_stop(&w->poll);
  return js_undefined(env);
}

static napi_value WatcherRef(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  bool on;
  get_args(env, info, 2, argv);
  watcher_t *w = get_watcher(env, argv[0]);
  if (!w) return NULL;
  napi_get_value_bool(env, argv[1], &on);
  if (on)
    uv_ref((uv_handle_t *)&w->poll);
  else
    uv_unref((uv_handle_t *)&w->poll);
  return js_undefined(env);
}

/* watcherClose(handle): stops and releases the uv handle; idempotent. The fd itself is not closed. */
static napi_value WatcherClose(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  void *p = NULL;
  get_args(env, info, 1, argv);
  if (napi_get_value_external(env, argv[0], &p) != napi_ok || !p) return throw_type(env, "not a watcher handle");
  watcher_t *w = p;
  if (w->closing) return js_undefined(env);
  w->closing = 1;
  watcher_release_js(env, w);
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, watcher_closed);
  return js_undefined(env);
}

/* ---------------------------------------------------------------- constants and init */

static void set_const(napi_env env, napi_value obj, const char *name, int64_t v) {
  napi_set_named_property(env, obj, name, js_int(env, v));
}

#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor fns[] = {
      FN("setErrorClass", SetErrorClass), FN("strerror", StrError),
      FN("open", Open), FN("close", Close), FN("read", Read), FN("write", Write),
      FN("setNonblocking", SetNonblocking), FN("dup", Dup),
      FN("eventfd", EventFdCreate), FN("eventfdRead", EventFdRead), FN("eventfdWrite", EventFdWrite),
      FN("eventfdTake", EventFdTake), FN("eventfdSignal", EventFdSignal),
      FN("ioctl", Ioctl), FN("addressOf", AddressOf),
      FN("mmap", Mmap), FN("munmap", Munmap), FN("mmapFixed", MmapFixed), FN("msync", Msync), FN("leakedMappings", LeakedMappings),
      FN("memfdCreate", MemfdCreate), FN("ftruncate", Ftruncate), FN("fence", Fence),
      FN("socketpair", SocketPair), FN("unixConnect", UnixConnect), FN("unixListen", UnixListen),
      FN("accept", Accept), FN("sendmsg", SendMsg), FN("recvmsg", RecvMsg),
      FN("watcherCreate", WatcherCreate), FN("watcherStart", WatcherStart), FN("watcherStop", WatcherStop),
      FN("watcherRef", WatcherRef), FN("watcherClose", WatcherClose),
  };
  napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns);

  napi_value c;
  napi_create_object(env, &c);
  set_const(env, c, "O_RDONLY", O_RDONLY);
  set_const(env, c, "O_WRONLY", O_WRONLY);
  set_const(env, c, "O_RDWR", O_RDWR);
  set_const(env, c, "O_NONBLOCK", O_NONBLOCK);
  set_const(env, c, "O_CREAT", O_CREAT);
  set_const(env, c, "O_TRUNC", O_TRUNC);
  set_const(env, c, "EFD_NONBLOCK", EFD_NONBLOCK);
  set_const(env, c, "EFD_SEMAPHORE", EFD_SEMAPHORE);
  set_const(env, c, "PROT_NONE", PROT_NONE);
  set_const(env, c, "PROT_READ", PROT_READ);
  set_const(env, c, "PROT_WRITE", PROT_WRITE);
  set_const(env, c, "MAP_SHARED", MAP_SHARED);
  set_const(env, c, "MAP_PRIVATE", MAP_PRIVATE);
  set_const(env, c, "MAP_ANONYMOUS", MAP_ANONYMOUS);
  set_const(env, c, "MAP_POPULATE", MAP_POPULATE);
  set_const(env, c, "MAP_NORESERVE", MAP_NORESERVE);
  set_const(env, c, "MS_SYNC", MS_SYNC);
  set_const(env, c, "MS_ASYNC", MS_ASYNC);
  set_const(env, c, "MFD_ALLOW_SEALING", MFD_ALLOW_SEALING);
  set_const(env, c, "UV_READABLE", UV_READABLE);
  set_const(env, c, "UV_WRITABLE", UV_WRITABLE);
  set_const(env, c, "UV_DISCONNECT", UV_DISCONNECT);
  set_const(env, c, "UV_PRIORITIZED", UV_PRIORITIZED);
  set_const(env, c, "PAGE_SIZE", sysconf(_SC_PAGESIZE));
  napi_set_named_property(env, exports, "constants", c);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
