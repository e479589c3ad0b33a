/* xenstored_shim: an LD_PRELOAD library that lets Debian's C xenstored (Xen 4.17) run
 * unprivileged on a machine without a hypervisor, for tests.
 *
 * xenstored talks to Xen through libxenctrl (which domains exist), libxengnttab (to
 * map guests' xenstore rings), libxenevtchn (the VIRQ_DOM_EXC port and guests' ring
 * ports) and two /proc/xen files describing dom0's own ring. This library answers
 * those calls as a Xen host with only dom0 would, minus any guest ring:
 *   - xc_interface_open: a dummy handle; xc_domain_getinfo: dom0 only, running (plus
 *     the guests listed in $XENSTORED_SHIM_DOMIDS, e.g. "1,5": xenstored refuses to
 *     make a domain it does not know the OWNER of a node, which libxl does for the
 *     guest's device/ directories).
 *   - xengnttab_*: succeed, except mapping, which fails with ENOSYS.
 *   - xenevtchn_open: a handle whose fd is an eventfd that never fires; binds hand
 *     out increasing port numbers; pending reports none (EAGAIN).
 *   - open("/proc/xen/xsd_port") reads "1"; open("/proc/xen/xsd_kva") is a zeroed
 *     4 KiB memfd (a dom0 ring nobody writes to).
 * Clients therefore reach the daemon only through its unix socket (XENSTORED_PATH),
 * as privileged dom0 connections.
 *
 * The daemon imports versioned symbols, so this library is linked with
 * xenstored_shim.map, whose version nodes carry the same names (VERS_1.0 of
 * libxengnttab/libxenevtchn, VERS_4.17.0 of libxenctrl, GLIBC_2.2.5 for open). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xenctrl.h>
#include <xenevtchn.h>
#include <xengnttab.h>

/* ---- libxenctrl ---- */

struct shim_xc {
  int unused;
};

xc_interface *xc_interface_open(xentoollog_logger *logger, xentoollog_logger *dombuild_logger,
                                unsigned open_flags) {
  (void)logger;
  (void)dombuild_logger;
  (void)open_flags;
  return (xc_interface *)calloc(1, sizeof(struct shim_xc));
}

int xc_interface_close(xc_interface *xch) {
  free(xch);
  return 0;
}

/* Domains that "exist": dom0, plus those listed in $XENSTORED_SHIM_DOMIDS
 * (comma-separated), so that node permissions naming guests are accepted. */
static int shim_domain_exists(uint32_t domid) {
  if (domid == 0) return 1;
  const char *list = getenv("XENSTORED_SHIM_DOMIDS");
  while (list != NULL && *list != '\0') {
    char *end;
    unsigned long id = strtoul(list, &end, 10);
    if (end == list) break;
    if (id == domid) return 1;
    list = *end == ',' ? end + 1 : end;
  }
  return 0;
}

int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid, unsigned int max_doms,
                      xc_dominfo_t *info) {
  (void)xch;
  unsigned int n = 0;
  for (uint32_t id = first_domid; id < 0x7ff0 && n < max_doms; ++id) {
    if (!shim_domain_exists(id)) continue;
    memset(&info[n], 0, sizeof(info[n]));
    info[n].domid = id;
    info[n].running = 1;
    ++n;
  }
  return (int)n;
}

/* ---- libxengnttab ---- */

struct shim_gnttab {
  int unused;
};

xengnttab_handle *xengnttab_open(xentoollog_logger *logger, unsigned open_flags) {
  (void)logger;
  (void)open_flags;
  return (xengnttab_handle *)calloc(1, sizeof(struct shim_gnttab));
}

int xengnttab_close(xengnttab_handle *xgt) {
  free(xgt);
  return 0;
}

int xengnttab_set_max_grants(xengnttab_handle *xgt, uint32_t nr_grants) {
  (void)xgt;
  (void)nr_grants;
  return 0;
}

void *xengnttab_map_grant_ref(xengnttab_handle *xgt, uint32_t domid, uint32_t ref, int prot) {
  (void)xgt;
  (void)domid;
  (void)ref;
  (void)prot;
  errno = ENOSYS;
  return NULL;
}

/* Also preloaded into tapdisk-map (tests/tools/tapmap_stack.h): every libxengnttab /
 * libxenevtchn call it makes on a shim handle must be answered here, never by the
 * real library (which would treat the shim's struct as its own). */
void *xengnttab_map_domain_grant_refs(xengnttab_handle *xgt, uint32_t count, uint32_t domid,
                                      uint32_t *refs, int prot) {
  (void)xgt;
  (void)count;
  (void)domid;
  (void)refs;
  (void)prot;
  errno = ENOSYS;
  return NULL;
}

int xengnttab_grant_copy(xengnttab_handle *xgt, uint32_t count, xengnttab_grant_copy_segment_t *segs) {
  (void)xgt;
  (void)count;
  (void)segs;
  errno = ENOSYS;
  return -1;
}

int xengnttab_unmap(xengnttab_handle *xgt, void *start_address, uint32_t count) {
  (void)xgt;
  (void)start_address;
  (void)count;
  return 0;
}

/* ---- libxenevtchn ---- */

struct xenevtchn_handle {
  int fd;
  evtchn_port_t next_port;
};

xenevtchn_handle *xenevtchn_open(xentoollog_logger *logger, unsigned open_flags) {
  (void)logger;
  (void)open_flags;
  xenevtchn_handle *h = calloc(1, sizeof(*h));
  if (h == NULL) return NULL;
  h->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); /* nobody ever signals it */
  h->next_port = 1;
  if (h->fd < 0) {
    free(h);
    return NULL;
  }
  return h;
}

xenevtchn_handle *xenevtchn_fdopen(xentoollog_logger *logger, int fd, unsigned open_flags) {
  (void)fd;
  return xenevtchn_open(logger, open_flags);
}

int xenevtchn_close(xenevtchn_handle *xce) {
  if (xce == NULL) return 0;
  close(xce->fd);
  free(xce);
  return 0;
}

int xenevtchn_fd(xenevtchn_handle *xce) { return xce->fd; }

xenevtchn_port_or_error_t xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq) {
  (void)virq;
  return (xenevtchn_port_or_error_t)xce->next_port++;
}

xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
                                                     evtchn_port_t remote_port) {
  (void)domid;
  (void)remote_port;
  return (xenevtchn_port_or_error_t)xce->next_port++;
}

int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port) {
  (void)xce;
  (void)port;
  return 0;
}

xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce) {
  (void)xce;
  errno = EAGAIN;
  return -1;
}

int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port) {
  (void)xce;
  (void)port;
  return 0;
}

int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port) {
  (void)xce;
  (void)port;
  return 0;
}

/* ---- /proc/xen ---- */

static int shim_proc_file(const char *path) {
  if (strcmp(path, "/proc/xen/xsd_port") == 0) {
    int fd = memfd_create("xsd_port", MFD_CLOEXEC);
    if (fd >= 0 && (write(fd, "1", 1) != 1 || lseek(fd, 0, SEEK_SET) != 0)) {
      close(fd);
      return -1;
    }
    return fd;
  }
  if (strcmp(path, "/proc/xen/xsd_kva") == 0) {
    int fd = memfd_create("xsd_kva", MFD_CLOEXEC);
    if (fd >= 0 && ftruncate(fd, 4096) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }
  return -2; /* not ours */
}

typedef int (*open_fn)(const char *, int, ...);

static int shim_open(const char *symbol, const char *path, int flags, va_list args) {
  int fd = shim_proc_file(path);
  if (fd != -2) return fd;
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) mode = (mode_t)va_arg(args, int);
  open_fn real = (open_fn)dlsym(RTLD_NEXT, symbol);
  if (real == NULL) {
    errno = ENOSYS;
    return -1;
  }
  return real(path, flags, mode);
}

int open(const char *path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  int fd = shim_open("open", path, flags, args);
  va_end(args);
  return fd;
}

int open64(const char *path, int flags, ...) {
  va_list args;
  va_start(args, flags);
  int fd = shim_open("open64", path, flags, args);
  va_end(args);
  return fd;
}
