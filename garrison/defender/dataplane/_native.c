/* Garrison defender data plane: the seccomp user-notification loop in a native thread.
 *
 * Why native: a trapped connect() decided in Python costs 150-250 us; the same work in C costs the
 * notification round trip plus the emulated syscall. The loop below never takes the GIL:
 *   receive -> read arguments (process_vm_readv, else /proc/<pid>/mem; ID_VALID after the reads,
 *   before acting) -> decide from flat tables compiled by Python (garrison/defender/dataplane/tables.py)
 *   -> reply (CONTINUE, errno, or the emulated call on a socket taken with pidfd_getfd through a
 *   pidfd kept per app thread).
 * Execs under exec controls are answered from a verdict cache Python fills with the execs it let
 * through (same path, argv and resolved file, the file unchanged); a miss is a hand-over.
 * Anything else the tables cannot decide exactly (clone under the fork guard, bind, DNS redirect,
 * pinned names, unusual address forms, port-scan bookkeeping, a host without pidfd_getfd) is handed over, still
 * pending, to Python threads that run the same handlers as the pure-Python data plane: the handoff
 * is always safe because Python re-reads and re-decides from scratch.
 * Every native decision produces a record in a lock-free bounded ring (Vyukov MPMC) that a Python
 * thread drains in batches into the audit channel / forensic ring; a full ring counts drops and
 * never blocks the app.
 * Policy pushes swap the tables with one atomic pointer exchange; the reader publishes the table it
 * uses in a hazard slot, and the writer frees the old table once no reader holds it.
 * x86_64 only (like the filter the supervisor installs).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <linux/stat.h>
#include <sys/vfs.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef SECCOMP_IOCTL_NOTIF_RECV
#error "linux/seccomp.h too old"
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* 6.9: a pidfd for one thread */
#endif
#ifndef MSG_FASTOPEN
#define MSG_FASTOPEN 0x20000000
#endif

#define MAX_SOCKADDR 128
#define MAX_PAYLOAD (1 << 20)
#define UIO_MAX 1024
#define DNS_PORT 53

/* ---- table format (must match tables.py) ------------------------------------------------------ */
#define TBL_MAGIC 0x31504447u /* "GDP1" */
enum {
    F_INERT = 1 << 0,        /* no control can object to any destination: CONTINUE, no emulation */
    F_EMULATE = 1 << 1,      /* pidfd_getfd works: emulate allowed calls (TOCTOU-safe) */
    F_HANDOFF_NET = 1 << 2,  /* every network decision goes to Python (port-scan, no rule data) */
    F_DNS_ALLOW = 1 << 3,    /* the rule has a DNS allow-list: pinned names decide, Python has them */
    F_NATIVE_VERDICT = 1 << 4, /* violations are answered natively (else handed to Python) */
    F_EXEC_FREE = 1 << 5,    /* no process control can object to an exec: CONTINUE + forensic record */
    F_FORK_FREE = 1 << 6,    /* no fork-bomb guard: forks CONTINUE natively */
    F_EXEC_CACHE = 1 << 7,   /* exec controls on: execs Python let through may be answered from the cache */
    F_EXEC_PREVENT = 1 << 8, /* exec controls prevent: a path with nothing to run gets the kernel's errno */
    F_FORK_GUARD = 1 << 9,   /* fork-bomb guard: forks clearly inside its limits CONTINUE natively */
};
enum { EFF_DISABLE = 0, EFF_ALERT = 1, EFF_PREVENT = 2 };
enum { P_ANY = 0, P_TCP = 1, P_UDP = 2 };

struct tbl_hdr {
    uint32_t magic, flags, net_effect, dns_effect;
    uint32_t n_entries, n_deny, n_ports, n_iv4, n_iv6, n_idx, n_bad4, n_bad6;
    uint32_t n_pin4, n_pin6; /* addresses an allowed DNS name resolved to (through the resolver proxy) */
};
struct tbl_entry { uint8_t proto, pad[3]; uint32_t port_off, port_cnt; };
struct tbl_port { uint16_t lo, hi; };
struct tbl_iv4 { uint32_t lo, hi, idx_off, idx_cnt; };
struct tbl_iv6 { uint8_t lo[16], hi[16]; uint32_t idx_off, idx_cnt; };
struct tbl_bad4 { uint32_t lo, hi; };
struct tbl_bad6 { uint8_t lo[16], hi[16]; };
struct tbl_pin4 { uint32_t ip, until; };   /* until: CLOCK_MONOTONIC seconds */
struct tbl_pin6 { uint8_t a[16]; uint32_t until; };

struct tables {
    struct tbl_hdr h;
    const struct tbl_entry *entries;
    const struct tbl_port *ports;
    const struct tbl_iv4 *iv4;
    const struct tbl_iv6 *iv6;
    const uint32_t *idx;
    const struct tbl_bad4 *bad4;
    const struct tbl_bad6 *bad6;
    const struct tbl_pin4 *pin4;
    const struct tbl_pin6 *pin6;
    uint64_t generation;
    char data[]; /* the blob, copied */
};

/* ---- records handed to Python ------------------------------------------------------------------ */
/* REC_EXEC: pid = thread group, err = ppid, blob = path\0argv...; REC_FORK: pid = thread group,
 * entry = tid, control = nr, err = ppid; REC_CHILD (the exec tracer): pid = parent, entry = child */
enum { REC_NET = 1, REC_AUDIT = 2, REC_EXEC = 3, REC_FORK = 4, REC_CHILD = 5 };
enum { CTL_NONE = 0, CTL_BADREP = 1, CTL_DENY = 2, CTL_ALLOW = 3 };

struct record {
    uint32_t kind, pid, family, port;
    uint32_t proto, control, entry, effect;
    int32_t blocked, err;
    uint64_t generation;
    uint8_t addr[16];
    uint32_t cfamily; /* the form that decided (for the audit's reason) */
    uint8_t caddr[16];
    char *blob; /* malloc'd: process identity (audits) or path+argv (exec); the consumer frees it */
    uint32_t blob_len;
    double t; /* wall clock when the loop decided (stamped by ring_push): forensic lines are drained
                 in batches, so the drain time would put a fork after the exec it preceded */
};

struct cell {
    _Atomic size_t seq;
    struct record rec;
};

#define HANDOFF_CAP 4096

struct pending {
    uint64_t id;
    uint32_t pid;
    int32_t nr;
    uint64_t args[6];
    double fork_rate; /* < 0: not a fork under the guard; else the loop's rate count, this fork included */
    int count_tree;   /* the loop's bound on the tree reached max_procs: count it for real */
};

/* The fork-bomb guard's state on the loop's side. The loop counts every fork notification (its rate
 * window and `seen`); Python publishes what it measured: the tree's size at its last count (`base`,
 * taken when `seen` was `base_seen`), so base + (seen - base_seen) bounds the live processes from
 * above, and the app user's task count against RLIMIT_NPROC with the time it was read. */
#define RATE_SLOTS 20 /* garrison.defender.context.RateWindow: 20 slots of 50 ms */
struct fork_guard {
    pthread_mutex_t mu;
    uint32_t max_rate, max_procs;
    int64_t base, base_seen;
    int64_t tasks, tasks_limit;
    double tasks_at;
    _Atomic int64_t seen;
    uint32_t counts[RATE_SLOTS]; /* loop thread only */
    int64_t newest;
    uint32_t total;
};

#define PIDFD_CACHE 256 /* per-thread pidfds the loop keeps open (direct-mapped by tid) */

struct pidfd_slot {
    uint32_t tid, tgid;
    int fd; /* -1: empty */
};

/* Exec verdicts Python decided "let through, nothing to audit", keyed on the exact bytes of what the
 * decision read (path, resolved path, argv -- or, at the exec stop, /proc/<pid>/exe and cmdline) and
 * on the file as the app resolved it (identity and change times: content, drift baseline and
 * copy-of-denied all follow from them). Valid until the rule changes (cleared then).
 * Lock-free: one reader thread (the loop, or the tracer) and one writer at a time (Python, under the
 * GIL). Entries are immutable; the reader publishes the entry it compares in a hazard slot, and the
 * writer frees a replaced entry only once the reader no longer holds it (as for the tables). */
#define EXEC_CACHE 512
#define EXEC_KEY_MAX 16384
#define EXEC_MAX_ARGS 256 /* execinfo.MAX_ARGS: Python reads no more */
#define EXEC_MAX_ARG 4096 /* execinfo.MAX_ARG_BYTES */
struct vfacts {
    uint64_t dev, ino, size;
    int64_t mtime_ns, ctime_ns;
    uint32_t mode;
};
struct ventry {
    uint64_t hash;
    struct vfacts f;
    uint32_t key_len;
    char key[];
};
struct vcache {
    _Atomic(struct ventry *) slot[EXEC_CACHE];
    _Atomic(struct ventry *) hazard;
};

static void vcache_retire(struct vcache *c, struct ventry *old) {
    if (!old)
        return;
    struct timespec ts = {0, 20000};
    while (atomic_load_explicit(&c->hazard, memory_order_seq_cst) == old)
        nanosleep(&ts, NULL); /* the reader holds it for one comparison */
    free(old);
}

static void vcache_put(struct vcache *c, struct ventry *e) {
    vcache_retire(c, atomic_exchange_explicit(&c->slot[e->hash % EXEC_CACHE], e, memory_order_seq_cst));
}

static void vcache_clear(struct vcache *c) {
    for (int i = 0; i < EXEC_CACHE; i++)
        vcache_retire(c, atomic_exchange_explicit(&c->slot[i], NULL, memory_order_seq_cst));
}

static int same_facts(const struct vfacts *a, const struct vfacts *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns &&
           a->ctime_ns == b->ctime_ns && a->mode == b->mode;
}

static int vcache_hit(struct vcache *c, uint64_t h, const char *key, size_t klen, const struct vfacts *f) {
    _Atomic(struct ventry *) *slot = &c->slot[h % EXEC_CACHE];
    struct ventry *e = atomic_load_explicit(slot, memory_order_acquire);
    for (;;) {
        atomic_store_explicit(&c->hazard, e, memory_order_seq_cst);
        struct ventry *again = atomic_load_explicit(slot, memory_order_seq_cst);
        if (again == e)
            break;
        e = again;
    }
    int hit = e && e->hash == h && e->key_len == klen && same_facts(&e->f, f) && !memcmp(e->key, key, klen);
    atomic_store_explicit(&c->hazard, NULL, memory_order_release);
    return hit;
}

static void facts_of(const struct stat *st, struct vfacts *f) {
    f->dev = (uint64_t)st->st_dev;
    f->ino = (uint64_t)st->st_ino;
    f->size = (uint64_t)st->st_size;
    f->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
    f->ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
    f->mode = (uint32_t)st->st_mode;
}

typedef struct {
    PyObject_HEAD
    int listener;
    _Atomic int stopping, exited;
    struct pidfd_slot pidfds[PIDFD_CACHE]; /* touched by the loop thread only */
    int stop_fd;  /* eventfd: stop the loop */
    int wake_fd;  /* eventfd: records worth draining now */
    pthread_t thread;
    int running;
    _Atomic(struct tables *) current;
    _Atomic(struct tables *) hazard;
    uint64_t generation;
    /* ring */
    struct cell *ring;
    size_t ring_mask;
    _Atomic size_t enq, deq;
    /* handoff queue (slow path only: a mutex is fine here) */
    pthread_mutex_t hmu;
    pthread_cond_t hcv, hspace;
    struct pending hq[HANDOFF_CAP];
    size_t hhead, hcount;
    int hclosed;
    struct fork_guard fg;
    struct vcache *ecache; /* exec verdicts Python let through (see remember_exec) */
    struct learned *learned; /* destinations counted while the network is learned (drain thread, GIL) */
    _Atomic uint64_t n_exec_hits, n_exec_missing;
    /* counters */
    _Atomic uint64_t n_recv, n_native, n_handoff, n_emulated, n_continued, n_refused, n_drops,
        n_waiters, n_gone, n_wake, n_exec, n_fork, n_pidfd_open, n_lines;
    _Atomic int waiters_live;
} LoopObject;

/* ---- small kernel helpers ---------------------------------------------------------------------- */
static int id_valid(int listener, uint64_t id) {
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

static int reply(int listener, uint64_t id, int64_t val, int err, int cont) {
    struct seccomp_notif_resp r;
    memset(&r, 0, sizeof r);
    r.id = id;
    r.val = val;
    r.error = err ? -err : 0;
    r.flags = cont ? SECCOMP_USER_NOTIF_FLAG_CONTINUE : 0;
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &r);
}

static _Atomic int vm_readv_ok = 1;

/* Read target memory; returns bytes read (short at unmapped pages), -1 on failure. */
static ssize_t read_mem(uint32_t tid, uint64_t addr, void *buf, size_t len) {
    if (atomic_load_explicit(&vm_readv_ok, memory_order_relaxed)) {
        struct iovec l = {buf, len}, r = {(void *)(uintptr_t)addr, len};
        ssize_t n = syscall(SYS_process_vm_readv, (long)tid, &l, 1L, &r, 1L, 0L);
        if (n >= 0)
            return n;
        if (errno == EPERM || errno == ENOSYS)
            atomic_store(&vm_readv_ok, 0); /* Garden: /proc/<pid>/mem from now on */
        else if (errno != EFAULT)
            return -1;
        else
            return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%u/mem", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = pread(fd, buf, len, (off_t)addr);
    close(fd);
    return n < 0 ? (errno == EIO ? 0 : -1) : n;
}

/* read exactly len bytes (0) or not (-1); the caller checks ID_VALID before acting on them */
static int read_exact(uint32_t tid, uint64_t addr, void *buf, size_t len) {
    return read_mem(tid, addr, buf, len) == (ssize_t)len ? 0 : -1;
}

static int tgid_of(uint32_t tid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%u/status", tid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int tgid = -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "Tgid:", 5)) {
            tgid = atoi(line + 5);
            break;
        }
    }
    fclose(f);
    return tgid;
}

static _Atomic int pidfd_thread_ok = 1;

/* A pidfd for the thread `tid` (and its thread group in *tgid), kept open across notifications: a
 * pidfd names one struct pid, never a number, so a cached one can never reach another task -- once
 * its thread is gone every call on it fails (ESRCH) and the caller reopens. A group leader gets the
 * group's pidfd, any other thread its own (PIDFD_THREAD, 6.9). *cached says whether the caller may
 * retry with a fresh one. Without PIDFD_THREAD a non-leader gets its group's pidfd opened per call,
 * as before: a group pidfd cached under a thread's number could outlive that thread. */
static int thread_pidfd(LoopObject *L, uint32_t tid, uint32_t *tgid, int *cached) {
    struct pidfd_slot *slot = &L->pidfds[tid % PIDFD_CACHE];
    *cached = 0;
    if (slot->fd >= 0 && slot->tid == tid) {
        *cached = 1;
        *tgid = slot->tgid;
        return slot->fd;
    }
    int fd = (int)syscall(SYS_pidfd_open, (long)tid, 0L);
    uint32_t group = tid;
    if (fd < 0 && errno == EINVAL && atomic_load_explicit(&pidfd_thread_ok, memory_order_relaxed)) {
        int g = tgid_of(tid);
        if (g <= 0)
            return -1;
        group = (uint32_t)g;
        fd = (int)syscall(SYS_pidfd_open, (long)tid, (long)PIDFD_THREAD);
        if (fd < 0 && errno == EINVAL)
            atomic_store(&pidfd_thread_ok, 0);
    }
    if (fd < 0) {
        if (errno != EINVAL)
            return -1;
        int g = tgid_of(tid); /* before 6.9: the group's pidfd, not kept */
        if (g <= 0)
            return -1;
        *tgid = (uint32_t)g;
        return (int)syscall(SYS_pidfd_open, (long)g, 0L);
    }
    atomic_fetch_add_explicit(&L->n_pidfd_open, 1, memory_order_relaxed);
    if (slot->fd >= 0)
        close(slot->fd);
    slot->tid = tid;
    slot->tgid = group;
    slot->fd = fd;
    *tgid = group;
    return fd;
}

static void forget_pidfd(LoopObject *L, uint32_t tid) {
    struct pidfd_slot *slot = &L->pidfds[tid % PIDFD_CACHE];
    if (slot->fd >= 0 && slot->tid == tid) {
        close(slot->fd);
        slot->fd = -1;
    }
}

/* the app's descriptor target_fd, through the thread's pidfd (a stale cached pidfd is reopened once) */
static int getfd_of(LoopObject *L, uint32_t tid, int target_fd, uint32_t *tgid) {
    for (int attempt = 0; attempt < 2; attempt++) {
        int cached;
        int pfd = thread_pidfd(L, tid, tgid, &cached);
        if (pfd < 0)
            return -1;
        int fd = (int)syscall(SYS_pidfd_getfd, (long)pfd, (long)target_fd, 0L);
        int e = errno;
        if (!cached && L->pidfds[tid % PIDFD_CACHE].fd != pfd)
            close(pfd); /* not kept (old kernel) */
        if (fd >= 0 || !cached || e == EBADF) {
            errno = e;
            return fd;
        }
        forget_pidfd(L, tid); /* the thread this pidfd named is gone: the tid was reused */
    }
    return -1;
}

/* A NUL-terminated string from the target (page by page, so a string ending just before an unmapped
 * page still reads); returns its length, -1 when unreadable or longer than max-1. */
static ssize_t read_cstr(uint32_t tid, uint64_t addr, char *buf, size_t max) {
    size_t off = 0;
    while (off < max - 1) {
        size_t room = 4096 - ((addr + off) & 4095);
        if (room > max - 1 - off)
            room = max - 1 - off;
        ssize_t got = read_mem(tid, addr + off, buf + off, room);
        if (got <= 0)
            return -1;
        char *nul = memchr(buf + off, 0, (size_t)got);
        if (nul)
            return nul - buf;
        off += (size_t)got;
    }
    return -1;
}

/* An exec's path and argv pointer array in one process_vm_readv (one remote read each used to cost
 * the loop a system call that maps the app's pages: ~7 us here). The path's first chunk ends at its
 * page, so it is read whole or not at all; one that does not end there, or a host without
 * process_vm_readv, takes read_cstr and read_mem as before. Returns the path's length (as read_cstr:
 * -1 when unreadable or not shorter than max - 1) and sets *nptrs to the pointers read. */
static ssize_t read_path_and_ptrs(uint32_t tid, uint64_t path, char *buf, size_t max, uint64_t argvp, uint64_t *ptrs,
                                  size_t ptrs_size, size_t *nptrs) {
    *nptrs = 0;
    size_t first = 4096 - (path & 4095);
    if (first > max - 1)
        first = max - 1;
    if (argvp && atomic_load_explicit(&vm_readv_ok, memory_order_relaxed)) {
        struct iovec l[2] = {{buf, first}, {ptrs, ptrs_size}};
        struct iovec r[2] = {{(void *)(uintptr_t)path, first}, {(void *)(uintptr_t)argvp, ptrs_size}};
        ssize_t got = syscall(SYS_process_vm_readv, (long)tid, l, 2L, r, 2L, 0L);
        if (got >= (ssize_t)first) {
            char *nul = memchr(buf, 0, first);
            if (nul) {
                *nptrs = (size_t)(got - (ssize_t)first) / 8;
                return nul - buf;
            }
        } else if (got < 0 && errno != EFAULT && errno != EPERM && errno != ENOSYS) {
            return -1;
        }
    }
    ssize_t pl = read_cstr(tid, path, buf, max);
    if (pl >= 0 && argvp) {
        ssize_t got = read_mem(tid, argvp, ptrs, ptrs_size);
        *nptrs = got > 0 ? (size_t)got / 8 : 0;
    }
    return pl;
}

/* The strings at addrs[0..n) read back to back into out (each with its NUL) in one process_vm_readv
 * where they end within their page, exactly as a loop of read_cstr(tid, addrs[i], out + used,
 * min(cap - used, each_max)) that stops at the first failure, or once fewer than min_room bytes are
 * left, would: a string that does not end in its chunk, or does not fit, is read by read_cstr.
 * Returns how many strings were read; *used is the bytes written. */
#define CSTRS_BATCH 64
static size_t read_cstrs(uint32_t tid, const uint64_t *addrs, size_t n, char *out, size_t cap, size_t each_max,
                         size_t min_room, size_t *used) {
    size_t i = 0, u = 0;
    while (i < n && cap - u >= min_room) {
        struct iovec l[CSTRS_BATCH], r[CSTRS_BATCH];
        size_t k = 0, want = 0;
        if (atomic_load_explicit(&vm_readv_ok, memory_order_relaxed)) {
            for (size_t j = i; j < n && k < CSTRS_BATCH; j++, k++) {
                size_t len = 4096 - (addrs[j] & 4095);
                if (len > each_max - 1)
                    len = each_max - 1;
                if (want + len > cap - u)
                    break;
                l[k].iov_base = out + u + want;
                l[k].iov_len = len;
                r[k].iov_base = (void *)(uintptr_t)addrs[j];
                r[k].iov_len = len;
                want += len;
            }
        }
        ssize_t got = k ? syscall(SYS_process_vm_readv, (long)tid, l, (long)k, r, (long)k, 0L) : -1;
        size_t m = 0, seen = 0;
        for (; got > 0 && m < k && seen < (size_t)got; m++) { /* compact: strings move left over read ones */
            size_t have = (size_t)got - seen < l[m].iov_len ? (size_t)got - seen : l[m].iov_len;
            char *nul = memchr(l[m].iov_base, 0, have);
            size_t room = cap - u < each_max ? cap - u : each_max;
            if (!nul || cap - u < min_room || (size_t)(nul - (char *)l[m].iov_base) + 2 > room)
                break; /* read_cstr decides this one (it may fail: then the loop stops there) */
            size_t sl = (size_t)(nul - (char *)l[m].iov_base) + 1;
            memmove(out + u, l[m].iov_base, sl);
            u += sl;
            i++;
            seen += l[m].iov_len;
        }
        if (k && m == k)
            continue; /* every chunk of this batch held its string */
        if (i < n && cap - u >= min_room) {
            size_t room = cap - u < each_max ? cap - u : each_max;
            ssize_t al = read_cstr(tid, addrs[i], out + u, room);
            if (al < 0)
                break;
            u += (size_t)al + 1;
            i++;
        }
    }
    *used = u;
    return i;
}

static ssize_t slurp(const char *path, char *buf, size_t max) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, max);
    close(fd);
    return n;
}

/* The parent of `pid` (a thread id names its process's parent), -1 when unreadable: read while the
 * process waits for our answer, since it may exit and be reaped right after. */
static long read_ppid(uint32_t pid) {
    char stat[1024], path[64];
    long ppid = -1;
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    ssize_t n = slurp(path, stat, sizeof stat - 1);
    if (n > 0) {
        stat[n] = 0;
        char *close_paren = strrchr(stat, ')');
        if (close_paren && close_paren[1])
            sscanf(close_paren + 2, "%*c %ld", &ppid);
    }
    return ppid;
}

/* PIDFD_GET_INFO (6.13): a task's pid, thread group and parent from its pidfd -- a few microseconds,
 * where rendering /proc/<tid>/stat of a process never looked at before costs 20-30. */
struct pidfd_info_v0 {
    uint64_t mask, cgroupid;
    uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
    int32_t exit_code;
};
#define PIDFD_GET_INFO_V0 _IOWR(0xFF, 11, struct pidfd_info_v0)
static _Atomic int pidfd_info_ok = 1;

/* The thread group and parent of thread `tid` (each -1 when unknown), read while it waits for our
 * answer: a worker that forks or execs and exits at once would be gone by the time Python looked,
 * leaving its node orphaned or recorded under a thread id. pidfd first, else /proc/<tid>/status. */
static void proc_facts(LoopObject *L, uint32_t tid, long *tgid, long *ppid) {
    *tgid = *ppid = -1;
    if (atomic_load_explicit(&pidfd_info_ok, memory_order_relaxed)) {
        for (int attempt = 0; attempt < 2; attempt++) {
            uint32_t group;
            int cached;
            int pfd = thread_pidfd(L, tid, &group, &cached);
            if (pfd < 0)
                break;
            struct pidfd_info_v0 info;
            memset(&info, 0, sizeof info);
            info.mask = 1; /* PIDFD_INFO_PID */
            int r = ioctl(pfd, PIDFD_GET_INFO_V0, &info);
            int e = errno;
            if (!cached && L->pidfds[tid % PIDFD_CACHE].fd != pfd)
                close(pfd);
            if (r == 0) {
                *tgid = info.tgid;
                *ppid = info.ppid;
                return;
            }
            if (e == ENOTTY || e == EINVAL || e == EOPNOTSUPP) {
                atomic_store(&pidfd_info_ok, 0); /* before 6.13 */
                break;
            }
            if (!cached)
                break;
            forget_pidfd(L, tid); /* a stale pidfd: the tid was reused */
        }
    }
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%u/status", tid);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "Tgid:", 5))
            *tgid = atol(line + 5);
        else if (!strncmp(line, "PPid:", 5)) {
            *ppid = atol(line + 5);
            break;
        }
    }
    fclose(f);
}

/* The identity an audit carries, read while the process still waits for our answer:
 * "ppid\0exe\0cwd\0cmdline" (cmdline keeps its own NULs). */
static char *capture_proc(uint32_t pid, uint32_t *len) {
    char path[64], exe[4096], cwd[4096];
    size_t cap = 2 * 4096 + 64 + 65536;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    long ppid = read_ppid(pid);
    snprintf(path, sizeof path, "/proc/%u/exe", pid);
    ssize_t el = readlink(path, exe, sizeof exe - 1);
    exe[el > 0 ? el : 0] = 0;
    snprintf(path, sizeof path, "/proc/%u/cwd", pid);
    ssize_t cl = readlink(path, cwd, sizeof cwd - 1);
    cwd[cl > 0 ? cl : 0] = 0;
    int off = snprintf(out, cap, "%ld", ppid) + 1;
    memcpy(out + off, exe, strlen(exe) + 1);
    off += (int)strlen(exe) + 1;
    memcpy(out + off, cwd, strlen(cwd) + 1);
    off += (int)strlen(cwd) + 1;
    snprintf(path, sizeof path, "/proc/%u/cmdline", pid);
    ssize_t n = slurp(path, out + off, cap - (size_t)off);
    off += n > 0 ? (int)n : 0;
    *len = (uint32_t)off;
    return out;
}

/* ---- ring --------------------------------------------------------------------------------------- */
static void ring_push(LoopObject *L, const struct record *r, int urgent) {
    size_t pos = atomic_load_explicit(&L->enq, memory_order_relaxed);
    struct cell *c;
    for (;;) {
        c = &L->ring[pos & L->ring_mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)pos;
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&L->enq, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (dif < 0) {
            atomic_fetch_add(&L->n_drops, 1); /* full: count it, never block the app */
            free(r->blob);
            urgent = 1;
            goto wake;
        } else {
            pos = atomic_load_explicit(&L->enq, memory_order_relaxed);
        }
    }
    c->rec = *r;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now); /* vDSO: no system call */
    c->rec.t = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
    if (!urgent) {
        size_t used = pos + 1 - atomic_load_explicit(&L->deq, memory_order_relaxed);
        urgent = used > (L->ring_mask + 1) / 2;
    }
wake:
    if (urgent) {
        uint64_t one = 1;
        atomic_fetch_add(&L->n_wake, 1);
        if (write(L->wake_fd, &one, sizeof one) < 0) { /* counter saturated: a wake-up is pending */
        }
    }
}

static int ring_pop(LoopObject *L, struct record *out) {
    size_t pos = atomic_load_explicit(&L->deq, memory_order_relaxed);
    for (;;) {
        struct cell *c = &L->ring[pos & L->ring_mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t dif = (intptr_t)seq - (intptr_t)(pos + 1);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&L->deq, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                *out = c->rec;
                atomic_store_explicit(&c->seq, pos + L->ring_mask + 1, memory_order_release);
                return 1;
            }
        } else if (dif < 0) {
            return 0;
        } else {
            pos = atomic_load_explicit(&L->deq, memory_order_relaxed);
        }
    }
}

/* ---- handoff ------------------------------------------------------------------------------------ */
static void handoff_fork(LoopObject *L, const struct seccomp_notif *n, double fork_rate, int count_tree) {
    pthread_mutex_lock(&L->hmu);
    while (L->hcount == HANDOFF_CAP && !L->hclosed)
        pthread_cond_wait(&L->hspace, &L->hmu); /* Python is backlogged: the app waits anyway */
    if (!L->hclosed) {
        struct pending *p = &L->hq[(L->hhead + L->hcount) % HANDOFF_CAP];
        p->id = n->id;
        p->pid = n->pid;
        p->nr = n->data.nr;
        for (int i = 0; i < 6; i++)
            p->args[i] = n->data.args[i];
        p->fork_rate = fork_rate;
        p->count_tree = count_tree;
        L->hcount++;
        pthread_cond_signal(&L->hcv);
    }
    pthread_mutex_unlock(&L->hmu);
    atomic_fetch_add(&L->n_handoff, 1);
}

static void handoff(LoopObject *L, const struct seccomp_notif *n) { handoff_fork(L, n, -1.0, 0); }

/* ---- decisions from the tables -------------------------------------------------------------------- */
static int port_in(const struct tables *t, const struct tbl_entry *e, uint16_t port) {
    const struct tbl_port *p = t->ports + e->port_off;
    for (uint32_t i = 0; i < e->port_cnt; i++)
        if (p[i].lo <= port && port <= p[i].hi)
            return 1;
    return 0;
}

static int entry_ok(const struct tables *t, uint32_t i, uint16_t port, int proto) {
    const struct tbl_entry *e = t->entries + i;
    if (e->proto != P_ANY && e->proto != proto)
        return 0;
    return port_in(t, e, port);
}

/* indices of the entries whose CIDR holds the address (ascending), or NULL */
static const uint32_t *lookup(const struct tables *t, int v6, const uint8_t *a, uint32_t *cnt) {
    *cnt = 0;
    if (!v6) {
        uint32_t ip = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) | ((uint32_t)a[2] << 8) | a[3];
        uint32_t lo = 0, hi = t->h.n_iv4;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (t->iv4[mid].hi < ip)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < t->h.n_iv4 && t->iv4[lo].lo <= ip) {
            *cnt = t->iv4[lo].idx_cnt;
            return t->idx + t->iv4[lo].idx_off;
        }
        return NULL;
    }
    uint32_t lo = 0, hi = t->h.n_iv6;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (memcmp(t->iv6[mid].hi, a, 16) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < t->h.n_iv6 && memcmp(t->iv6[lo].lo, a, 16) <= 0) {
        *cnt = t->iv6[lo].idx_cnt;
        return t->idx + t->iv6[lo].idx_off;
    }
    return NULL;
}

static int bad_reputation(const struct tables *t, int v6, const uint8_t *a) {
    if (!v6) {
        uint32_t ip = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) | ((uint32_t)a[2] << 8) | a[3];
        uint32_t lo = 0, hi = t->h.n_bad4;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (t->bad4[mid].hi < ip)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo < t->h.n_bad4 && t->bad4[lo].lo <= ip;
    }
    uint32_t lo = 0, hi = t->h.n_bad6;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (memcmp(t->bad6[mid].hi, a, 16) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < t->h.n_bad6 && memcmp(t->bad6[lo].lo, a, 16) <= 0;
}

enum { V_ALLOW = 0, V_VIOLATION = 1, V_HANDOFF = 2 };

/* An allowed DNS name resolved to this address and the pin has not expired (sorted; binary search) */
static int pinned_ok(const struct tables *t, int v6, const uint8_t *a) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint32_t now = (uint32_t)ts.tv_sec;
    if (!v6) {
        uint32_t ip = ((uint32_t)a[0] << 24) | ((uint32_t)a[1] << 16) | ((uint32_t)a[2] << 8) | a[3];
        uint32_t lo = 0, hi = t->h.n_pin4;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (t->pin4[mid].ip < ip)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo < t->h.n_pin4 && t->pin4[lo].ip == ip && t->pin4[lo].until >= now;
    }
    uint32_t lo = 0, hi = t->h.n_pin6;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (memcmp(t->pin6[mid].a, a, 16) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < t->h.n_pin6 && !memcmp(t->pin6[lo].a, a, 16) && t->pin6[lo].until >= now;
}

static const uint8_t LOOP6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
static const uint8_t LOOP4[4] = {127, 0, 0, 1};

static int is_loopback(int v6, const uint8_t *a) {
    return v6 ? !memcmp(a, LOOP6, 16) : a[0] == 127;
}

struct verdict {
    int kind, control, effect;
    uint32_t entry;
    int cand; /* which form of the destination decided (index into its candidates) */
};

/* decide_connect() of garrison/policy/evaluate.py for a canonical address (not mapped/unspecified) */
static struct verdict decide(const struct tables *t, int v6, const uint8_t *a, uint16_t port, int proto) {
    struct verdict v = {V_ALLOW, CTL_NONE, EFF_DISABLE, 0, 0};
    uint32_t cnt;
    const uint32_t *idx = lookup(t, v6, a, &cnt);
    int allow_hit = 0;
    uint32_t n_deny = t->h.n_deny;
    for (uint32_t i = 0; i < cnt; i++)
        if (idx[i] >= n_deny && entry_ok(t, idx[i], port, proto)) {
            allow_hit = 1;
            break;
        }
    if (t->h.net_effect != EFF_DISABLE) {
        v.effect = (int)t->h.net_effect;
        if (bad_reputation(t, v6, a)) {
            v.kind = V_VIOLATION;
            v.control = CTL_BADREP;
            return v;
        }
        for (uint32_t i = 0; i < cnt && idx[i] < n_deny; i++)
            if (entry_ok(t, idx[i], port, proto)) {
                v.kind = V_VIOLATION;
                v.control = CTL_DENY;
                v.entry = idx[i];
                return v;
            }
        if (t->h.n_entries > n_deny && !allow_hit) {
            if (t->h.flags & F_DNS_ALLOW) {
                if (pinned_ok(t, v6, a))
                    return v; /* an allowed name resolved to it: allowed, and the DNS check passes too */
                v.kind = V_HANDOFF; /* maybe a violation: Python has the names for its audit */
                return v;
            }
            v.kind = V_VIOLATION;
            v.control = CTL_ALLOW;
            return v;
        }
    }
    int loopback = is_loopback(v6, a);
    if (t->h.dns_effect != EFF_DISABLE && (t->h.flags & F_DNS_ALLOW) && !loopback && !allow_hit &&
        !pinned_ok(t, v6, a))
        v.kind = V_HANDOFF;
    return v;
}

/* ---- addresses ---------------------------------------------------------------------------------- */
struct dest {
    int v6;
    uint16_t port;
    uint8_t a[16];
};

struct cand {
    int v6;
    uint8_t a[16];
};

/* The forms of a canonical destination (docs/defender-network.md, normalisation table): itself, and
 * for a loopback destination also 127.0.0.1 and ::1 -- one host, so a rule naming either covers it. */
static int candidates(const struct dest *d, struct cand *c) {
    int n = 0;
    c[n].v6 = d->v6;
    memcpy(c[n].a, d->a, 16);
    n++;
    if (is_loopback(d->v6, d->a)) {
        if (d->v6 || memcmp(d->a, LOOP4, 4)) {
            c[n].v6 = 0;
            memset(c[n].a, 0, 16);
            memcpy(c[n].a, LOOP4, 4);
            n++;
        }
        if (!d->v6) {
            c[n].v6 = 1;
            memcpy(c[n].a, LOOP6, 16);
            n++;
        }
    }
    return n;
}

/* NetworkGuard._decision: a deny or bad-reputation hit on any form decides (the first one); an
 * allow-list is satisfied by any form; otherwise the first form's verdict. */
static struct verdict decide_dest(const struct tables *t, const struct dest *d, int proto, struct cand *c, int *nc) {
    struct verdict vs[3];
    int n = candidates(d, c);
    *nc = n;
    for (int i = 0; i < n; i++) {
        vs[i] = decide(t, c[i].v6, c[i].a, d->port, proto);
        vs[i].cand = i;
        if (vs[i].kind == V_HANDOFF)
            return vs[i];
    }
    for (int i = 0; i < n; i++)
        if (vs[i].kind == V_VIOLATION && (vs[i].control == CTL_DENY || vs[i].control == CTL_BADREP))
            return vs[i];
    for (int i = 0; i < n; i++)
        if (vs[i].kind == V_ALLOW)
            return vs[i];
    return vs[0];
}

enum { A_DECIDE = 0, A_PASS = 1, A_ODD = 2 };

/* Classify the sockaddr the app named. A_PASS: a family the guard leaves to the kernel (unix,
 * netlink, ...) -- still subject to the socket-domain check; A_ODD: anything whose meaning depends
 * on normalisation rules (unspecified, v4-mapped/-compatible, AF_UNSPEC, short or long) -> Python. */
static int classify(const uint8_t *raw, size_t len, struct dest *d) {
    uint16_t fam;
    memcpy(&fam, raw, 2);
    if (fam != AF_INET && fam != AF_INET6 && fam != AF_UNSPEC)
        return A_PASS;
    if (fam == AF_INET) {
        if (len < sizeof(struct sockaddr_in))
            return A_ODD;
        const struct sockaddr_in *s = (const void *)raw;
        d->v6 = 0;
        d->port = ntohs(s->sin_port);
        memcpy(d->a, &s->sin_addr, 4);
        if (!memcmp(d->a, "\0\0\0\0", 4))
            return A_ODD;
        return A_DECIDE;
    }
    if (fam == AF_INET6) {
        if (len < 24)
            return A_ODD;
        const struct sockaddr_in6 *s = (const void *)raw;
        d->v6 = 1;
        d->port = ntohs(s->sin6_port);
        memcpy(d->a, &s->sin6_addr, 16);
        static const uint8_t zero12[12] = {0};
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
        if (!memcmp(d->a, LOOP6, 16))
            return A_DECIDE;
        if (!memcmp(d->a, zero12, 12) || !memcmp(d->a, mapped, 12) || !memcmp(d->a, nat64, 12) ||
            (d->a[0] == 0x20 && d->a[1] == 0x02))
            return A_ODD; /* ::, v4-compatible, v4-mapped, NAT64, 6to4: forms that reach an IPv4 host */
        return A_DECIDE;
    }
    return A_ODD;
}

/* ---- one notification --------------------------------------------------------------------------- */
struct sock {
    int fd, type, domain, nonblocking, fl;
};

static int take_sock(const struct seccomp_notif *n, LoopObject *L, int target_fd, struct sock *s, uint32_t *pid) {
    s->fd = getfd_of(L, n->pid, target_fd, pid);
    if (s->fd < 0)
        return -1;
    if (!id_valid(L->listener, n->id)) {
        close(s->fd);
        s->fd = -1;
        return -2;
    }
    socklen_t sl = sizeof s->type;
    if (getsockopt(s->fd, SOL_SOCKET, SO_TYPE, &s->type, &sl) < 0) {
        close(s->fd);
        s->fd = -1;
        return -1; /* not a socket: the kernel's own error (ENOTSOCK) */
    }
    sl = sizeof s->domain;
    getsockopt(s->fd, SOL_SOCKET, SO_DOMAIN, &s->domain, &sl);
    s->fl = fcntl(s->fd, F_GETFL);
    s->nonblocking = s->fl >= 0 && (s->fl & O_NONBLOCK);
    return 0;
}

/* Our copy of the app's socket is closed before the answer: closed after it, it could be the last
 * reference (the app closes at once) and the connection's teardown would run on the loop thread
 * while the app's next notification waits. */
static void drop_sock(struct sock *s) {
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static void record_net(LoopObject *L, uint32_t pid, const struct dest *d, int proto, const struct verdict *v,
                       uint64_t gen, const struct cand *c) {
    struct record r;
    memset(&r, 0, sizeof r);
    r.kind = v->kind == V_VIOLATION ? REC_AUDIT : REC_NET;
    r.pid = pid;
    r.family = d->v6 ? 6 : 4;
    r.port = d->port;
    memcpy(r.addr, d->a, 16);
    r.proto = (uint32_t)proto;
    r.control = (uint32_t)v->control;
    r.entry = v->entry;
    r.effect = (uint32_t)v->effect;
    r.blocked = v->kind == V_VIOLATION && v->effect == EFF_PREVENT;
    r.generation = gen;
    if (c) {
        r.cfamily = c[v->cand].v6 ? 6 : 4;
        memcpy(r.caddr, c[v->cand].a, 16);
    }
    if (r.kind == REC_AUDIT)
        r.blob = capture_proc(pid, &r.blob_len);
    ring_push(L, &r, r.kind == REC_AUDIT);
}

struct waiter {
    LoopObject *L;
    uint64_t id;
    int fd;
    long timeout_ms;
};

static int so_error(int fd) {
    int e = 0;
    socklen_t sl = sizeof e;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &sl);
    return e;
}

/* A blocking connect still in progress: wait for it here as the kernel would (SO_SNDTIMEO ->
 * EINPROGRESS), waking every second to notice an app thread that went away. */
static void *wait_connect(void *arg) {
    struct waiter *w = arg;
    struct pollfd p = {w->fd, POLLOUT, 0};
    long left = w->timeout_ms;
    int err = 0;
    for (;;) {
        int step = left > 0 && left < 1000 ? (int)left : 1000;
        int r = poll(&p, 1, step);
        if (r > 0) {
            err = so_error(w->fd);
            break;
        }
        if (left > 0) {
            left -= step;
            if (left <= 0) {
                err = EINPROGRESS;
                break;
            }
        }
        if (!id_valid(w->L->listener, w->id)) {
            err = -1;
            break;
        }
    }
    if (err >= 0)
        reply(w->L->listener, w->id, 0, err, 0);
    close(w->fd);
    atomic_fetch_sub(&w->L->waiters_live, 1);
    free(w);
    return NULL;
}

static long sndtimeo_ms(int fd) {
    struct timeval tv = {0, 0};
    socklen_t sl = sizeof tv;
    getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &sl);
    return tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* emulated connect on the checked bytes; returns 1 when answered, 0 to hand over */
static int emulate_connect(LoopObject *L, const struct seccomp_notif *n, struct sock *s, const uint8_t *raw,
                           size_t len) {
    int err = 0;
    if (s->type == SOCK_STREAM && !s->nonblocking) {
        fcntl(s->fd, F_SETFL, s->fl | O_NONBLOCK);
        err = connect(s->fd, (const struct sockaddr *)raw, (socklen_t)len) < 0 ? errno : 0;
        fcntl(s->fd, F_SETFL, s->fl);
        if (err == EINPROGRESS) {
            struct pollfd p = {s->fd, POLLOUT, 0};
            if (poll(&p, 1, 0) > 0) {
                err = so_error(s->fd);
            } else {
                struct waiter *w = malloc(sizeof *w);
                pthread_t th;
                pthread_attr_t at;
                if (!w) {
                    drop_sock(s);
                    reply(L->listener, n->id, 0, ENOMEM, 0);
                    return 1;
                }
                w->L = L;
                w->id = n->id;
                w->fd = s->fd;
                w->timeout_ms = sndtimeo_ms(s->fd);
                pthread_attr_init(&at);
                pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
                pthread_attr_setstacksize(&at, 64 * 1024);
                atomic_fetch_add(&L->waiters_live, 1);
                atomic_fetch_add(&L->n_waiters, 1);
                if (pthread_create(&th, &at, wait_connect, w) != 0) {
                    atomic_fetch_sub(&L->waiters_live, 1);
                    free(w);
                    pthread_attr_destroy(&at);
                    drop_sock(s);
                    reply(L->listener, n->id, 0, EAGAIN, 0);
                    return 1;
                }
                pthread_attr_destroy(&at);
                s->fd = -1; /* the waiter owns it */
                atomic_fetch_add(&L->n_emulated, 1);
                return 1;
            }
        }
    } else {
        err = connect(s->fd, (const struct sockaddr *)raw, (socklen_t)len) < 0 ? errno : 0;
    }
    atomic_fetch_add(&L->n_emulated, 1);
    drop_sock(s);
    reply(L->listener, n->id, 0, err, 0);
    return 1;
}

/* gather a payload from the app (iovecs), at most MAX_PAYLOAD bytes; NULL on failure */
static uint8_t *gather(LoopObject *L, const struct seccomp_notif *n, const struct iovec *iov, size_t cnt,
                       size_t *total, int *gone) {
    size_t want = 0;
    for (size_t i = 0; i < cnt; i++) {
        size_t take = iov[i].iov_len;
        if (take > MAX_PAYLOAD - want)
            take = MAX_PAYLOAD - want;
        want += take;
        if (want >= MAX_PAYLOAD)
            break;
    }
    uint8_t *buf = malloc(want ? want : 1);
    if (!buf)
        return NULL;
    size_t off = 0;
    for (size_t i = 0; i < cnt && off < want; i++) {
        size_t take = iov[i].iov_len;
        if (take > want - off)
            take = want - off;
        if (!take)
            continue;
        if (!iov[i].iov_base) {
            memset(buf + off, 0, take);
        } else {
            ssize_t got = read_mem(n->pid, (uint64_t)(uintptr_t)iov[i].iov_base, buf + off, take);
            if (got != (ssize_t)take) {
                free(buf);
                *gone = !id_valid(L->listener, n->id);
                return NULL;
            }
        }
        off += take;
    }
    if (!id_valid(L->listener, n->id)) {
        free(buf);
        *gone = 1;
        return NULL;
    }
    *total = want;
    return buf;
}

static int proto_of(const struct sock *s) {
    return s->type == SOCK_STREAM ? P_TCP : s->type == SOCK_DGRAM ? P_UDP : -1;
}

/* Decide a canonical destination with the socket in hand.
 * Returns 1 when the notification was answered (violation), 0 when the call may go ahead, -1 to hand over. */
static int verdict_for(LoopObject *L, const struct tables *t, uint32_t pid, const struct dest *d,
                       const struct sock *s, int refuse_errno) {
    int proto = proto_of(s);
    if (proto < 0)
        return -1; /* raw/seqpacket: Python's stricter-of-both rule */
    if (s->domain != (d->v6 ? AF_INET6 : AF_INET))
        return -1; /* v4 address on a v6 socket or the reverse: the normalisation table's EAFNOSUPPORT rows */
    struct cand c[3];
    int nc;
    struct verdict v = decide_dest(t, d, proto, c, &nc);
    if (v.kind == V_HANDOFF)
        return -1;
    if (v.kind == V_VIOLATION && !(t->h.flags & F_NATIVE_VERDICT))
        return -1;
    record_net(L, pid, d, proto, &v, t->generation, c);
    if (v.kind == V_VIOLATION && v.effect == EFF_PREVENT) {
        atomic_fetch_add(&L->n_refused, 1);
        return refuse_errno ? refuse_errno : (proto == P_UDP ? EPERM : ECONNREFUSED);
    }
    return 0;
}

/* returns 1 when answered, 0 to hand over */
static int on_connect(LoopObject *L, const struct tables *t, const struct seccomp_notif *n) {
    uint64_t ptr = n->data.args[1], len = n->data.args[2];
    uint8_t raw[MAX_SOCKADDR];
    struct dest d;
    if (!ptr || len < 2 || len > MAX_SOCKADDR)
        return 0;
    /* No ID_VALID yet: every path that acts on these bytes checks it once, later (the socket's
     * take_sock, or just below before a CONTINUE) -- a notification still pending then means the
     * thread read here was the one waiting. A failed read goes to Python, which re-reads. */
    if (read_exact(n->pid, ptr, raw, len) < 0)
        return 0;
    int cls = classify(raw, len, &d);
    if (cls == A_ODD)
        return 0;
    if (cls == A_DECIDE && d.port == DNS_PORT)
        return 0; /* DNS redirect to the defender's resolver: Python */
    if (cls == A_DECIDE && (t->h.flags & F_INERT) && !(t->h.flags & F_HANDOFF_NET)) {
        struct verdict v = {V_ALLOW, CTL_NONE, EFF_DISABLE, 0, 0};
        if (!id_valid(L->listener, n->id))
            return atomic_fetch_add(&L->n_gone, 1), 1;
        record_net(L, n->pid, &d, 0, &v, t->generation, NULL);
        atomic_fetch_add(&L->n_continued, 1);
        reply(L->listener, n->id, 0, 0, 1);
        return 1;
    }
    if (!(t->h.flags & F_EMULATE))
        return 0; /* Garden-style hosts: Python's fallback */
    if (cls == A_DECIDE && (t->h.flags & F_HANDOFF_NET))
        return 0;
    struct sock s = {-1, 0, 0, 0, 0};
    uint32_t pid = n->pid;
    int r = take_sock(n, L, (int)n->data.args[0], &s, &pid);
    if (r == -2)
        return atomic_fetch_add(&L->n_gone, 1), 1;
    if (r < 0)
        return 0;
    int done = 0;
    if (cls == A_PASS) {
        /* A unix/netlink/... socket can never be connected to an IP address, whatever a racing
         * thread writes meanwhile: CONTINUE is safe. An IP socket with a non-IP family goes to Python. */
        if (s.domain != AF_INET && s.domain != AF_INET6) {
            atomic_fetch_add(&L->n_continued, 1);
            drop_sock(&s);
            reply(L->listener, n->id, 0, 0, 1);
            done = 1;
        }
    } else {
        int v = verdict_for(L, t, pid, &d, &s, 0);
        if (v > 0) {
            drop_sock(&s);
            reply(L->listener, n->id, 0, v, 0);
            done = 1;
        } else if (v == 0) {
            done = emulate_connect(L, n, &s, raw, len);
        }
    }
    if (s.fd >= 0)
        close(s.fd);
    return done;
}

/* sendto / sendmsg with an address: decided, then sent by us on the checked bytes */
static int send_common(LoopObject *L, const struct tables *t, const struct seccomp_notif *n, int fd,
                       const uint8_t *raw, size_t len, int flags, const struct iovec *iov, size_t iovcnt,
                       const void *control, size_t controllen, uint64_t size_hint) {
    struct dest d;
    int cls = classify(raw, len, &d);
    if (cls == A_ODD)
        return 0;
    if (cls == A_DECIDE && d.port == DNS_PORT)
        return 0;
    if (cls == A_DECIDE && (t->h.flags & F_INERT) && !(t->h.flags & F_HANDOFF_NET)) {
        struct verdict v = {V_ALLOW, CTL_NONE, EFF_DISABLE, 0, 0};
        if (!id_valid(L->listener, n->id))
            return atomic_fetch_add(&L->n_gone, 1), 1;
        record_net(L, n->pid, &d, 0, &v, t->generation, NULL);
        atomic_fetch_add(&L->n_continued, 1);
        reply(L->listener, n->id, 0, 0, 1);
        return 1;
    }
    if (!(t->h.flags & F_EMULATE) || (cls == A_DECIDE && (t->h.flags & F_HANDOFF_NET)))
        return 0;
    struct sock s = {-1, 0, 0, 0, 0};
    uint32_t pid = n->pid;
    int r = take_sock(n, L, fd, &s, &pid);
    if (r == -2)
        return atomic_fetch_add(&L->n_gone, 1), 1;
    if (r < 0)
        return 0;
    int done = 0;
    uint8_t *data = NULL;
    if (cls == A_PASS) {
        if (s.domain != AF_INET && s.domain != AF_INET6) {
            atomic_fetch_add(&L->n_continued, 1);
            drop_sock(&s);
            reply(L->listener, n->id, 0, 0, 1);
            done = 1;
        }
        goto out;
    }
    if (s.type == SOCK_STREAM && !(flags & MSG_FASTOPEN)) {
        /* a connected stream socket ignores the address: its peer was decided at connect */
        atomic_fetch_add(&L->n_continued, 1);
        drop_sock(&s);
        reply(L->listener, n->id, 0, 0, 1);
        done = 1;
        goto out;
    }
    int blocking = !s.nonblocking && !(flags & MSG_DONTWAIT);
    if (blocking && (flags & MSG_FASTOPEN))
        goto out; /* a blocking Fast Open connect waits: Python's worker path */
    if (size_hint > MAX_PAYLOAD && s.type != SOCK_STREAM)
        goto out; /* EMSGSIZE and its audit: Python */
    int v = verdict_for(L, t, pid, &d, &s, 0);
    if (v < 0)
        goto out;
    if (v > 0) {
        drop_sock(&s);
        reply(L->listener, n->id, 0, v, 0);
        done = 1;
        goto out;
    }
    size_t total = 0;
    int gone = 0;
    data = gather(L, n, iov, iovcnt, &total, &gone);
    if (!data) {
        if (gone)
            done = 1;
        goto out;
    }
    struct iovec one = {data, total};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_name = (void *)raw;
    mh.msg_namelen = (socklen_t)len;
    mh.msg_iov = &one;
    mh.msg_iovlen = 1;
    mh.msg_control = (void *)control;
    mh.msg_controllen = controllen;
    ssize_t sent = sendmsg(s.fd, &mh, flags | MSG_DONTWAIT | MSG_NOSIGNAL);
    int err = sent < 0 ? errno : 0;
    if (blocking && (err == EAGAIN || err == EWOULDBLOCK))
        goto out; /* nothing was sent: Python's worker waits for buffer space */
    atomic_fetch_add(&L->n_emulated, 1);
    drop_sock(&s);
    if (err)
        reply(L->listener, n->id, 0, err, 0);
    else
        reply(L->listener, n->id, sent, 0, 0);
    done = 1;
out:
    free(data);
    if (s.fd >= 0)
        close(s.fd);
    return done;
}

static int on_sendto(LoopObject *L, const struct tables *t, const struct seccomp_notif *n) {
    uint64_t buf = n->data.args[1], size = n->data.args[2], ptr = n->data.args[4], len = n->data.args[5];
    int flags = (int)n->data.args[3];
    if (!ptr) {
        /* send(): no address, the socket's peer was decided at connect time; the pointer is a
         * by-value argument, so no racing thread can add one */
        atomic_fetch_add(&L->n_continued, 1);
        reply(L->listener, n->id, 0, 0, 1);
        return 1;
    }
    if (len < 2 || len > MAX_SOCKADDR)
        return 0;
    uint8_t raw[MAX_SOCKADDR];
    if (read_exact(n->pid, ptr, raw, len) < 0) /* ID_VALID: send_common, before acting */
        return 0;
    struct iovec iov = {(void *)(uintptr_t)buf, size > MAX_PAYLOAD ? MAX_PAYLOAD : size};
    return send_common(L, t, n, (int)n->data.args[0], raw, len, flags, &iov, size ? 1 : 0, NULL, 0, size);
}

struct app_msghdr { /* x86_64 struct msghdr as the app laid it out */
    uint64_t name, namelen, iov, iovlen, control, controllen;
    int32_t flags, pad;
};

static int on_sendmsg(LoopObject *L, const struct tables *t, const struct seccomp_notif *n) {
    uint64_t mptr = n->data.args[1];
    int flags = (int)n->data.args[2];
    if (!mptr)
        return 0;
    struct app_msghdr h; /* these reads are checked (ID_VALID) by send_common before it acts */
    if (read_exact(n->pid, mptr, &h, sizeof h) < 0)
        return 0;
    uint32_t namelen = (uint32_t)h.namelen;
    if (!h.name) {
        /* no address: the msghdr is in the app's memory, so a racing thread could add one before the
         * kernel reads it; only a socket that cannot carry an IP address may CONTINUE natively */
        return 0;
    }
    if (namelen < 2 || h.iovlen > UIO_MAX || h.controllen > 65536)
        return 0;
    if (namelen > MAX_SOCKADDR)
        return 0; /* the kernel clamps to 128: Python's normalisation decides */
    uint8_t raw[MAX_SOCKADDR];
    if (read_exact(n->pid, h.name, raw, namelen) < 0)
        return 0;
    struct iovec iov[UIO_MAX];
    size_t cnt = (size_t)h.iovlen;
    uint64_t hint = 0;
    if (cnt) {
        if (read_exact(n->pid, h.iov, iov, cnt * sizeof(struct iovec)) < 0)
            return 0;
        for (size_t i = 0; i < cnt; i++)
            hint += iov[i].iov_len;
    }
    uint8_t *control = NULL;
    if (h.control && h.controllen) {
        control = malloc(h.controllen);
        if (!control)
            return 0;
        if (read_exact(n->pid, h.control, control, h.controllen) < 0) {
            free(control);
            return 0;
        }
    }
    int done = send_common(L, t, n, (int)n->data.args[0], raw, namelen, flags, iov, cnt, control,
                           control ? h.controllen : 0, hint);
    free(control);
    return done;
}

static int on_execve_cached(LoopObject *L, const struct tables *t, const struct seccomp_notif *n);

/* CONTINUE an exec and hand its forensic line to Python: `blob` (malloc'd, "path\0argv0\0...", owned
 * from here on). The parent is read before the reply: once the program runs it may exit and be reaped
 * at once, and the forensic tree needs the edge (as the Python handler does). */
static void exec_reply_record(LoopObject *L, const struct tables *t, const struct seccomp_notif *n, char *blob,
                              size_t blob_len) {
    long tgid, ppid;
    proc_facts(L, n->pid, &tgid, &ppid);
    atomic_fetch_add(&L->n_exec, 1);
    reply(L->listener, n->id, 0, 0, 1);
    struct record r;
    memset(&r, 0, sizeof r);
    r.kind = REC_EXEC;
    r.pid = tgid > 0 ? (uint32_t)tgid : n->pid; /* after the exec the thread is its group's leader */
    r.err = (int32_t)ppid;
    r.generation = t->generation;
    r.blob = blob;
    r.blob_len = blob ? (uint32_t)blob_len : 0;
    ring_push(L, &r, 0);
}


/* execve under a rule whose process controls cannot object: CONTINUE, and hand the forensic line
 * (path as named, argv) to Python. Returns 1 when answered. */
static int on_execve(LoopObject *L, const struct tables *t, const struct seccomp_notif *n) {
    if (!(t->h.flags & F_EXEC_FREE))
        return (t->h.flags & F_EXEC_CACHE) ? on_execve_cached(L, t, n) : 0;
    enum { MAXARGS = 32, MAXBLOB = 16384 };
    char *blob = malloc(MAXBLOB);
    if (!blob)
        return 0;
    uint64_t ptrs[MAXARGS];
    size_t cnt = 0, used = 0, argc = 0;
    ssize_t pl = read_path_and_ptrs(n->pid, n->data.args[0], blob, 4096, n->data.args[1], ptrs, sizeof ptrs, &cnt);
    if (pl < 0) {
        free(blob);
        return 0; /* unreadable: Python's path decides what the kernel would say */
    }
    size_t off = (size_t)pl + 1;
    while (argc < cnt && ptrs[argc])
        argc++;
    read_cstrs(n->pid, ptrs, argc, blob + off, MAXBLOB - off, 4096, 3, &used); /* stops where one fails */
    off += used;
    if (!id_valid(L->listener, n->id)) { /* ID_VALID after the reads, before answering */
        free(blob);
        atomic_fetch_add(&L->n_gone, 1);
        return 1;
    }
    char *fit = realloc(blob, off); /* what the ring holds until the drain: the bytes read, not 16 KiB */
    if (fit)
        blob = fit;
    exec_reply_record(L, t, n, blob, off);
    return 1;
}

/* ---- execs under exec controls: the verdict cache ----------------------------------------------- */
#ifndef PROC_SUPER_MAGIC
#define PROC_SUPER_MAGIC 0x9fa0
#endif

static uint64_t fnv1a(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int openat2_path(int dirfd, const char *path, uint64_t flags) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_PATH | O_CLOEXEC | flags;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

static int on_procfs(int fd) {
    struct statfs sf;
    return fstatfs(fd, &sf) < 0 || sf.f_type == PROC_SUPER_MAGIC;
}

static uint64_t our_mnt_ns, our_root_mnt, our_root_dev, our_root_ino;
static int our_root_fd = -1; /* our root directory: where an app in our view resolves from */

/* The app sees the file system as we do: the drift baseline compares system files with our view of
 * them, so a verdict is only reused where both views are one. Its root is our root directory on the
 * very mount we have as root (a mount belongs to one namespace, and lookups from it follow that
 * namespace's mount tree) -- one statx of the root fd we hold anyway, where stat()ing
 * /proc/<tid>/ns/mnt of a process never looked at before cost ~40 % of the loop's exec time; kernels
 * without STATX_MNT_ID compare the mount namespaces. */
static int same_view(uint32_t tid, int rootfd) {
    struct statx sx;
    if (our_root_mnt && syscall(SYS_statx, rootfd, "", AT_EMPTY_PATH, STATX_INO | STATX_MNT_ID, &sx) == 0 &&
        (sx.stx_mask & STATX_MNT_ID))
        return sx.stx_mnt_id == our_root_mnt && makedev(sx.stx_dev_major, sx.stx_dev_minor) == our_root_dev &&
               sx.stx_ino == our_root_ino;
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%u/ns/mnt", tid);
    return our_mnt_ns && stat(path, &st) == 0 && (uint64_t)st.st_ino == our_mnt_ns;
}

/* execve of an absolute path that does not exist, in a directory that does (libc's PATH search
 * trying each directory): the exec controls have nothing to decide (decide_unidentified_exec: no
 * violation) and Python would answer ENOENT under prevent, CONTINUE otherwise. 1: it is that case.
 * Only when the directory resolved without procfs or magic links -- then Python's walk, which
 * resolves /proc/self as the app, would find the same nothing. */
static int nothing_to_run(int rootfd, const char *raw) {
    const char *slash = strrchr(raw, '/');
    const char *base = slash + 1;
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return 0;
    char dir[4096];
    size_t dl = (size_t)(slash - raw);
    if (dl >= sizeof dir)
        return 0;
    memcpy(dir, raw, dl);
    dir[dl] = 0;
    int dfd = openat2_path(rootfd, dl ? dir : "/", O_DIRECTORY);
    if (dfd < 0)
        return 0;
    struct stat st;
    int missing = !on_procfs(dfd) && fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT;
    close(dfd);
    return missing;
}

/* Returns 1 when answered natively, 0 to hand over (Python decides, and may teach the cache). */
static int on_execve_cached(LoopObject *L, const struct tables *t, const struct seccomp_notif *n) {
    if (n->data.nr != SYS_execve)
        return 0;
    char *key = malloc(EXEC_KEY_MAX), *args = malloc(EXEC_KEY_MAX);
    int done = 0, rootfd = -1, fd = -1, from = -1;
    if (!key || !args)
        goto out;
    uint64_t argvp = n->data.args[1], ptrs[EXEC_MAX_ARGS];
    size_t cnt = 0, argc = 0, alen = 0;
    ssize_t rl = read_path_and_ptrs(n->pid, n->data.args[0], key, EXEC_MAX_ARG, argvp, ptrs, sizeof ptrs, &cnt);
    if (rl <= 0 || key[0] != '/')
        goto out; /* relative (resolved from the cwd), empty or unreadable: Python */
    if (argvp) {
        while (argc < cnt && ptrs[argc])
            argc++;
        if (argc == cnt)
            goto out; /* no NULL within what Python would read (or a fault): Python */
        if (read_cstrs(n->pid, ptrs, argc, args, EXEC_KEY_MAX, EXEC_MAX_ARG, 2, &alen) != argc)
            goto out; /* unreadable or longer than Python reads: Python */
    }
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/%u/root", n->pid);
    struct statx rx;
    if (our_root_fd >= 0 && our_root_mnt &&
        syscall(SYS_statx, AT_FDCWD, proc, 0, STATX_INO | STATX_MNT_ID, &rx) == 0 && (rx.stx_mask & STATX_MNT_ID)) {
        /* one statx through the app's root link instead of open + statx + close: the very directory
         * (mount, device, inode) we have as root, so resolving from our own root fd is the same walk */
        if (rx.stx_mnt_id != our_root_mnt || makedev(rx.stx_dev_major, rx.stx_dev_minor) != our_root_dev ||
            rx.stx_ino != our_root_ino)
            goto out;
        from = our_root_fd;
    } else {
        rootfd = open(proc, O_PATH | O_CLOEXEC);
        if (rootfd < 0 || !same_view(n->pid, rootfd))
            goto out;
        from = rootfd;
    }
    fd = openat2_path(from, key, 0);
    if (fd < 0) {
        if (errno != ENOENT || !nothing_to_run(from, key))
            goto out;
        if (!id_valid(L->listener, n->id)) {
            atomic_fetch_add(&L->n_gone, 1);
            done = 1;
            goto out;
        }
        atomic_fetch_add(&L->n_exec_missing, 1);
        if (t->h.flags & F_EXEC_PREVENT)
            reply(L->listener, n->id, 0, ENOENT, 0);
        else
            reply(L->listener, n->id, 0, 0, 1);
        done = 1;
        goto out;
    }
    struct stat st;
    if (on_procfs(fd) || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        goto out;
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    size_t off = (size_t)rl + 1;
    ssize_t el = readlink(self, key + off, EXEC_KEY_MAX - off - 1);
    if (el <= 0 || (size_t)el >= EXEC_KEY_MAX - off - 1 || off + (size_t)el + 1 + alen > EXEC_KEY_MAX)
        goto out;
    key[off + (size_t)el] = 0;
    size_t exe_off = off;
    off += (size_t)el + 1;
    memcpy(key + off, args, alen);
    size_t klen = off + alen;
    uint64_t h = fnv1a(key, klen);
    struct vfacts f;
    facts_of(&st, &f);
    int hit = vcache_hit(L->ecache, h, key, klen, &f);
    if (!hit)
        goto out;
    if (!id_valid(L->listener, n->id)) { /* ID_VALID after the reads, before answering */
        atomic_fetch_add(&L->n_gone, 1);
        done = 1;
        goto out;
    }
    atomic_fetch_add(&L->n_exec_hits, 1);
    char *line = malloc(klen - exe_off);
    if (line)
        memcpy(line, key + exe_off, klen - exe_off);
    exec_reply_record(L, t, n, line, klen - exe_off);
    done = 1;
out:
    if (fd >= 0)
        close(fd);
    if (rootfd >= 0)
        close(rootfd);
    free(key);
    free(args);
    return done;
}

#define CLONE_UNTRACED_FLAG 0x00800000ULL

static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* RateWindow.hit: forks in the last second, this one included, in 20 slots of 50 ms */
static uint32_t rate_hit(struct fork_guard *g, double now) {
    int64_t slot = (int64_t)(now * RATE_SLOTS);
    int64_t gap = slot - g->newest;
    if (gap >= RATE_SLOTS) {
        memset(g->counts, 0, sizeof g->counts);
        g->total = 0;
    } else {
        for (int64_t s = g->newest + 1; s <= slot; s++) {
            g->total -= g->counts[s % RATE_SLOTS];
            g->counts[s % RATE_SLOTS] = 0;
        }
    }
    if (slot > g->newest)
        g->newest = slot;
    g->counts[slot % RATE_SLOTS]++;
    g->total++;
    return g->total;
}

static int on_fork(LoopObject *L, const struct tables *t, const struct seccomp_notif *n) {
    if (n->data.nr == SYS_clone && (n->data.args[0] & CLONE_UNTRACED_FLAG))
        return 0; /* a way out of the exec tracer: the Python controls decide */
    struct fork_guard *g = &L->fg;
    double now = monotonic_now();
    uint32_t rate = rate_hit(g, now); /* every fork counts, whoever answers it */
    int64_t seen = atomic_fetch_add(&g->seen, 1);
    if (!(t->h.flags & F_FORK_FREE)) {
        if (!(t->h.flags & F_FORK_GUARD))
            return 0;
        /* decide_fork's three limits, each shown clearly inside (else Python decides, with this count) */
        pthread_mutex_lock(&g->mu);
        int64_t bound = g->base + (seen - g->base_seen); /* live processes before this fork, at most */
        int tree_ok = g->max_procs && bound < (int64_t)g->max_procs;
        int tasks_ok = !g->tasks_limit || (g->tasks < g->tasks_limit && now - g->tasks_at < 0.1);
        int rate_ok = g->max_rate && rate <= g->max_rate;
        pthread_mutex_unlock(&g->mu);
        if (!(tree_ok && tasks_ok && rate_ok)) {
            handoff_fork(L, n, (double)rate, !tree_ok);
            return -1; /* handed over */
        }
    }
    atomic_fetch_add(&L->n_fork, 1);
    struct record r; /* the forensic fork line */
    memset(&r, 0, sizeof r);
    long tgid, ppid;
    proc_facts(L, n->pid, &tgid, &ppid); /* before the reply (see proc_facts) */
    reply(L->listener, n->id, 0, 0, 1);
    r.kind = REC_FORK;
    r.pid = tgid > 0 ? (uint32_t)tgid : n->pid;
    r.entry = n->pid;
    r.err = (int32_t)ppid;
    r.control = (uint32_t)n->data.nr;
    r.generation = t->generation;
    ring_push(L, &r, 0);
    return 1;
}

/* ---- the loop ---------------------------------------------------------------------------------------- */
static void handle(LoopObject *L, const struct seccomp_notif *n) {
    int nr = n->data.nr;
    if (nr != SYS_connect && nr != SYS_sendto && nr != SYS_sendmsg && nr != SYS_execve && nr != SYS_clone &&
        nr != SYS_fork && nr != SYS_vfork) {
        handoff(L, n);
        return;
    }
    struct tables *t = atomic_load_explicit(&L->current, memory_order_acquire);
    for (;;) { /* publish the table in use; the writer frees it only when no reader holds it */
        atomic_store_explicit(&L->hazard, t, memory_order_seq_cst);
        struct tables *again = atomic_load_explicit(&L->current, memory_order_seq_cst);
        if (again == t)
            break;
        t = again;
    }
    int done = 0;
    if (t) {
        if (nr == SYS_connect)
            done = on_connect(L, t, n);
        else if (nr == SYS_sendto)
            done = on_sendto(L, t, n);
        else if (nr == SYS_sendmsg)
            done = on_sendmsg(L, t, n);
        else if (nr == SYS_execve)
            done = on_execve(L, t, n);
        else
            done = on_fork(L, t, n);
    }
    atomic_store_explicit(&L->hazard, NULL, memory_order_release);
    if (done > 0)
        atomic_fetch_add(&L->n_native, 1);
    else if (done == 0)
        handoff(L, n); /* (-1: already handed over, with what the loop counted) */
}

/* The loop waits in SECCOMP_IOCTL_NOTIF_RECV itself (no poll first: one syscall less per
 * notification, and with SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP the kernel switches straight from the
 * app's thread to this one on the same CPU). The receive returns ENOENT once no task uses the filter
 * (the app tree is gone), and stop() interrupts it with WAKE_SIGNAL, which only this thread takes. */
#define WAKE_SIGNAL (SIGRTMIN + 6)

static void wake_handler(int sig) { (void)sig; }

/* Since 6.6 a blocked receive returns (ENOENT) once no task uses the filter; before, it would wait
 * for ever, so older kernels keep a poll() first, which sees the hang-up. */
static int recv_sees_hangup(void) {
    struct utsname u;
    int major = 0, minor = 0;
    if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
        return 0;
    return major > 6 || (major == 6 && minor >= 6);
}

static int listener_hung_up(int listener) {
    struct pollfd p = {listener, POLLIN, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL)) && !(p.revents & POLLIN);
}

static void *loop_main(void *arg) {
    LoopObject *L = arg;
    sigset_t only_wake;
    sigfillset(&only_wake);
    sigdelset(&only_wake, WAKE_SIGNAL);
    pthread_sigmask(SIG_SETMASK, &only_wake, NULL); /* the app's and the operator's signals go to Python */
    struct seccomp_notif n;
    pthread_setname_np(pthread_self(), "garrison-dp-c"); /* for top/perf: the loop's own CPU */
    int use_poll = !recv_sees_hangup();
    while (!atomic_load_explicit(&L->stopping, memory_order_acquire)) {
        if (use_poll) {
            struct pollfd p = {L->listener, POLLIN, 0};
            int pr = poll(&p, 1, -1);
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr > 0 && !(p.revents & POLLIN))
                break; /* every task of the filter is gone */
        }
        memset(&n, 0, sizeof n);
        if (ioctl(L->listener, SECCOMP_IOCTL_NOTIF_RECV, &n) < 0) {
            if (errno == EINTR)
                continue;
            if (errno == ENOENT) { /* the waiting task died, or no task uses the filter any more */
                if (listener_hung_up(L->listener))
                    break;
                continue;
            }
            break;
        }
        atomic_fetch_add(&L->n_recv, 1);
        handle(L, &n);
    }
    pthread_mutex_lock(&L->hmu);
    L->hclosed = 1;
    pthread_cond_broadcast(&L->hcv);
    pthread_cond_broadcast(&L->hspace);
    pthread_mutex_unlock(&L->hmu);
    atomic_store_explicit(&L->exited, 1, memory_order_release);
    return NULL;
}

/* ---- Python object ---------------------------------------------------------------------------------- */
static struct tables *parse_tables(const char *blob, Py_ssize_t len, uint64_t gen) {
    if ((size_t)len < sizeof(struct tbl_hdr)) {
        PyErr_SetString(PyExc_ValueError, "table blob too short");
        return NULL;
    }
    struct tbl_hdr h;
    memcpy(&h, blob, sizeof h);
    if (h.magic != TBL_MAGIC) {
        PyErr_SetString(PyExc_ValueError, "bad table magic");
        return NULL;
    }
    uint64_t need = sizeof h + (uint64_t)h.n_entries * sizeof(struct tbl_entry) +
                    (uint64_t)h.n_ports * sizeof(struct tbl_port) + (uint64_t)h.n_iv4 * sizeof(struct tbl_iv4) +
                    (uint64_t)h.n_iv6 * sizeof(struct tbl_iv6) + (uint64_t)h.n_idx * 4 +
                    (uint64_t)h.n_bad4 * sizeof(struct tbl_bad4) + (uint64_t)h.n_bad6 * sizeof(struct tbl_bad6) +
                    (uint64_t)h.n_pin4 * sizeof(struct tbl_pin4) + (uint64_t)h.n_pin6 * sizeof(struct tbl_pin6);
    if (need != (uint64_t)len || h.n_deny > h.n_entries) {
        PyErr_SetString(PyExc_ValueError, "table blob size mismatch");
        return NULL;
    }
    struct tables *t = malloc(sizeof *t + (size_t)len);
    if (!t) {
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(t->data, blob, (size_t)len);
    t->h = h;
    t->generation = gen;
    const char *p = t->data + sizeof h;
    t->entries = (const void *)p; p += h.n_entries * sizeof(struct tbl_entry);
    t->ports = (const void *)p; p += h.n_ports * sizeof(struct tbl_port);
    t->iv4 = (const void *)p; p += h.n_iv4 * sizeof(struct tbl_iv4);
    t->iv6 = (const void *)p; p += h.n_iv6 * sizeof(struct tbl_iv6);
    t->idx = (const void *)p; p += (size_t)h.n_idx * 4;
    t->bad4 = (const void *)p; p += h.n_bad4 * sizeof(struct tbl_bad4);
    t->bad6 = (const void *)p; p += h.n_bad6 * sizeof(struct tbl_bad6);
    t->pin4 = (const void *)p; p += h.n_pin4 * sizeof(struct tbl_pin4);
    t->pin6 = (const void *)p;
    /* bounds of every reference, so a bad blob can never make the loop read outside it */
    for (uint32_t i = 0; i < h.n_entries; i++)
        if ((uint64_t)t->entries[i].port_off + t->entries[i].port_cnt > h.n_ports) goto bad;
    for (uint32_t i = 0; i < h.n_iv4; i++)
        if ((uint64_t)t->iv4[i].idx_off + t->iv4[i].idx_cnt > h.n_idx) goto bad;
    for (uint32_t i = 0; i < h.n_iv6; i++)
        if ((uint64_t)t->iv6[i].idx_off + t->iv6[i].idx_cnt > h.n_idx) goto bad;
    for (uint32_t i = 0; i < h.n_idx; i++)
        if (t->idx[i] >= h.n_entries) goto bad;
    return t;
bad:
    free(t);
    PyErr_SetString(PyExc_ValueError, "table blob references out of range");
    return NULL;
}

static int Loop_init(LoopObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"listener", "ring_slots", NULL};
    int listener;
    Py_ssize_t slots = 8192;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|n", kwlist, &listener, &slots))
        return -1;
    if (slots < 64 || (slots & (slots - 1))) {
        PyErr_SetString(PyExc_ValueError, "ring_slots must be a power of two >= 64");
        return -1;
    }
    for (int i = 0; i < PIDFD_CACHE; i++)
        self->pidfds[i].fd = -1;
    self->listener = listener;
    self->stop_fd = eventfd(0, EFD_CLOEXEC);
    self->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (self->stop_fd < 0 || self->wake_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->ring = calloc((size_t)slots, sizeof(struct cell));
    if (!self->ring) {
        PyErr_NoMemory();
        return -1;
    }
    self->ring_mask = (size_t)slots - 1;
    for (size_t i = 0; i < (size_t)slots; i++)
        atomic_init(&self->ring[i].seq, i);
    self->ecache = calloc(1, sizeof(struct vcache));
    if (!self->ecache) {
        PyErr_NoMemory();
        return -1;
    }
    pthread_mutex_init(&self->fg.mu, NULL);
    self->fg.base = 1; /* the app itself, started with no notification (AppTree starts the same) */
    self->fg.tasks_limit = 1; /* unknown until Python says: every guarded fork goes to Python */
    self->fg.tasks = 1;
    struct stat ns;
    if (!our_mnt_ns && stat("/proc/self/ns/mnt", &ns) == 0)
        our_mnt_ns = (uint64_t)ns.st_ino;
    struct statx rx;
    if (!our_root_mnt && syscall(SYS_statx, AT_FDCWD, "/", 0, STATX_INO | STATX_MNT_ID, &rx) == 0 &&
        (rx.stx_mask & STATX_MNT_ID)) {
        our_root_dev = makedev(rx.stx_dev_major, rx.stx_dev_minor);
        our_root_ino = rx.stx_ino;
        our_root_mnt = rx.stx_mnt_id;
    }
    if (our_root_fd < 0)
        our_root_fd = open("/", O_PATH | O_CLOEXEC | O_DIRECTORY);
    pthread_mutex_init(&self->hmu, NULL);
    pthread_cond_init(&self->hcv, NULL);
    pthread_cond_init(&self->hspace, NULL);
    return 0;
}

static PyObject *Loop_set_tables(LoopObject *self, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    struct tables *t = parse_tables(b.buf, b.len, ++self->generation);
    PyBuffer_Release(&b);
    if (!t)
        return NULL;
    struct tables *old = atomic_exchange_explicit(&self->current, t, memory_order_seq_cst);
    if (old) {
        Py_BEGIN_ALLOW_THREADS
        struct timespec ts = {0, 20000};
        while (atomic_load_explicit(&self->hazard, memory_order_seq_cst) == old)
            nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS
        free(old);
    }
    return PyLong_FromUnsignedLongLong(self->generation);
}

static PyObject *Loop_start(LoopObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->running)
        Py_RETURN_NONE;
    if (!atomic_load(&self->current)) {
        PyErr_SetString(PyExc_RuntimeError, "set_tables() before start()");
        return NULL;
    }
    struct sigaction cur;
    if (sigaction(WAKE_SIGNAL, NULL, &cur) == 0 && cur.sa_handler != wake_handler) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = wake_handler; /* no SA_RESTART: the blocked receive returns EINTR */
        sigemptyset(&sa.sa_mask);
        if (sigaction(WAKE_SIGNAL, &sa, NULL) < 0)
            return PyErr_SetFromErrno(PyExc_OSError);
    }
    atomic_store(&self->stopping, 0);
    atomic_store(&self->exited, 0);
    int e = pthread_create(&self->thread, NULL, loop_main, self);
    if (e) {
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->running = 1;
    Py_INCREF(self); /* the thread holds a reference until join */
    Py_RETURN_NONE;
}

static PyObject *Loop_stop(LoopObject *self, PyObject *Py_UNUSED(ignored)) {
    if (!self->running)
        Py_RETURN_NONE;
    uint64_t one = 1;
    if (write(self->stop_fd, &one, sizeof one) < 0) { /* wakes drain() */
    }
    atomic_store_explicit(&self->stopping, 1, memory_order_release);
    Py_BEGIN_ALLOW_THREADS
    /* the signal may land just before the thread enters the receive: repeat until it has left */
    struct timespec tick = {0, 2000000};
    while (!atomic_load_explicit(&self->exited, memory_order_acquire)) {
        pthread_kill(self->thread, WAKE_SIGNAL);
        nanosleep(&tick, NULL);
    }
    pthread_join(self->thread, NULL);
    struct timespec ts = {0, 1000000};
    for (int i = 0; i < 10000 && atomic_load(&self->waiters_live) > 0; i++)
        nanosleep(&ts, NULL); /* waiters reply within a second once the app is gone */
    Py_END_ALLOW_THREADS
    self->running = 0;
    Py_DECREF(self);
    Py_RETURN_NONE;
}

/* take(timeout_ms) -> (id, tid, nr, (args...)) | None: the next notification Python must decide */
static PyObject *Loop_take(LoopObject *self, PyObject *args) {
    int timeout_ms = -1;
    if (!PyArg_ParseTuple(args, "|i", &timeout_ms))
        return NULL;
    struct pending p;
    int got = 0, closed = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->hmu);
    struct timespec dl;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    while (!self->hcount && !self->hclosed) {
        if (timeout_ms < 0)
            pthread_cond_wait(&self->hcv, &self->hmu);
        else if (pthread_cond_timedwait(&self->hcv, &self->hmu, &dl) == ETIMEDOUT)
            break;
    }
    if (self->hcount) {
        p = self->hq[self->hhead];
        self->hhead = (self->hhead + 1) % HANDOFF_CAP;
        self->hcount--;
        pthread_cond_signal(&self->hspace);
        got = 1;
    } else {
        closed = self->hclosed;
    }
    pthread_mutex_unlock(&self->hmu);
    Py_END_ALLOW_THREADS
    if (!got) {
        if (closed)
            return PyErr_Format(PyExc_EOFError, "data plane stopped");
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(KIi(KKKKKK)di)", (unsigned long long)p.id, p.pid, p.nr, p.args[0], p.args[1],
                         p.args[2], p.args[3], p.args[4], p.args[5], p.fork_rate, p.count_tree);
}

/* An address as Python's ipaddress writes it (str(IPv4Address) / str(IPv6Address): lowercase hex,
 * the longest run of two or more zero groups -- the first of equal runs -- written "::"). */
static int fmt_ip(char *out, size_t cap, int v6, const uint8_t *a) {
    if (!v6)
        return snprintf(out, cap, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
    uint16_t w[8];
    for (int i = 0; i < 8; i++)
        w[i] = (uint16_t)((a[2 * i] << 8) | a[2 * i + 1]);
    int best = -1, best_len = 0;
    for (int i = 0; i < 8;) {
        if (w[i]) {
            i++;
            continue;
        }
        int j = i;
        while (j < 8 && !w[j])
            j++;
        if (j - i > best_len) {
            best = i;
            best_len = j - i;
        }
        i = j;
    }
    if (best_len < 2)
        best = -1;
    int off = 0;
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            off += snprintf(out + off, cap - (size_t)off, i == 0 ? "::" : ":");
            i += best_len - 1;
            continue;
        }
        off += snprintf(out + off, cap - (size_t)off, "%x%s", w[i], i < 7 ? ":" : "");
    }
    return off;
}

/* round(t, 6) as Python's repr writes it (the forensic lines' "t") */
static int fmt_time(char *t, size_t cap, double when) {
    long long us = (long long)(when * 1e6 + 0.5);
    int tl = snprintf(t, cap, "%lld.%06lld", us / 1000000LL, us % 1000000LL);
    while (tl > 2 && t[tl - 1] == '0' && t[tl - 2] != '.')
        t[--tl] = 0;
    return tl;
}

/* The forensic "net" line the network guard writes for an allowed destination (same keys, same
 * order as json.dumps of its record() call), stamped with the time of the decision. */
static int fmt_net_line(char *out, size_t cap, const struct record *r) {
    char ip[64], t[48];
    fmt_ip(ip, sizeof ip, r->family == 6, r->addr);
    fmt_time(t, sizeof t, r->t);
    const char *proto = r->proto == 1 ? "tcp" : r->proto == 2 ? "udp" : NULL;
    if (!proto)
        return snprintf(out, cap, "{\"t\": %s, \"kind\": \"net\", \"pid\": %u, \"dest_ip\": \"%s\", \"dest_port\": %u}\n",
                        t, r->pid, ip, r->port);
    return snprintf(out, cap,
                    "{\"t\": %s, \"kind\": \"net\", \"pid\": %u, \"dest_ip\": \"%s\", \"dest_port\": %u, "
                    "\"protocol\": \"%s\", \"names\": []}\n",
                    t, r->pid, ip, r->port, proto);
}

/* A string as json.dumps writes it (ensure_ascii); -1 when it holds a byte above 0x7f (Python decodes
 * those with errors="replace": it formats that line) or does not fit. */
static int json_str(char *out, size_t cap, const char *s, size_t n) {
    size_t o = 0;
    if (cap < 3)
        return -1;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (cap - o < 8)
            return -1;
        if (c >= 0x80)
            return -1;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            out[o++] = (char)c;
        } else {
            const char *short_esc = c == '\n' ? "n" : c == '\r' ? "r" : c == '\t' ? "t" : c == '\b' ? "b" : c == '\f' ? "f" : NULL;
            if (short_esc) {
                out[o++] = '\\';
                out[o++] = *short_esc;
            } else {
                o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
            }
        }
    }
    out[o++] = '"';
    return (int)o;
}

#define FORENSIC_ARGS 32 /* the exec line's argv[:32] */

/* The forensic "exec" line of an exec the loop let through: ProcessControls.on_exec's record() call
 * (as NativeDataplane._exec_line wrote it): path and argv from the blob. -1: Python formats it. */
static int fmt_exec_line(char *out, size_t cap, const struct record *r) {
    char t[48], pp[24];
    fmt_time(t, sizeof t, r->t);
    if (r->err >= 0)
        snprintf(pp, sizeof pp, "%d", r->err);
    else
        strcpy(pp, "null");
    int o = snprintf(out, cap, "{\"t\": %s, \"kind\": \"exec\", \"pid\": %u, \"ppid\": %s, \"exe\": ", t, r->pid, pp);
    const char *b = r->blob ? r->blob : "", *end = b + (r->blob ? r->blob_len : 0);
    const char *nul = r->blob ? memchr(b, 0, (size_t)(end - b)) : NULL;
    int w = json_str(out + o, cap - (size_t)o, b, nul ? (size_t)(nul - b) : 0);
    if (w < 0)
        return -1;
    o += w;
    o += snprintf(out + o, cap - (size_t)o, ", \"argv\": [");
    const char *a = nul ? nul + 1 : end;
    for (int i = 0; a < end && i < FORENSIC_ARGS; i++) {
        const char *z = memchr(a, 0, (size_t)(end - a));
        if (!z)
            break; /* an unterminated tail is not an argument (split(b"\0")[:-1]) */
        if ((size_t)o + 2 >= cap)
            return -1;
        if (i) {
            out[o++] = ',';
            out[o++] = ' ';
        }
        w = json_str(out + o, cap - (size_t)o, a, (size_t)(z - a));
        if (w < 0)
            return -1;
        o += w;
        a = z + 1;
    }
    int tail = snprintf(out + o, cap - (size_t)o, "], \"loader\": null, \"script\": null, \"verdict\": \"allow\"}\n");
    if (tail < 0 || (size_t)(o + tail) >= cap)
        return -1;
    return o + tail;
}

static const char *fork_syscall(uint32_t nr) {
    return nr == SYS_clone ? "clone" : nr == SYS_fork ? "fork" : nr == SYS_vfork ? "vfork" : NULL;
}

/* The forensic "fork" line of a fork the loop let through (ProcessControls._record_fork's keys). */
static int fmt_fork_line(char *out, size_t cap, const struct record *r) {
    char t[48], pp[24];
    const char *sc = fork_syscall(r->control);
    if (!sc)
        return -1;
    fmt_time(t, sizeof t, r->t);
    if (r->err >= 0)
        snprintf(pp, sizeof pp, "%d", r->err);
    else
        strcpy(pp, "null");
    return snprintf(out, cap,
                    "{\"t\": %s, \"kind\": \"fork\", \"pid\": %u, \"tid\": %u, \"ppid\": %s, \"syscall\": \"%s\", "
                    "\"verdict\": \"allow\"}\n",
                    t, r->pid, r->entry, pp, sc);
}

/* The forensic "child" line of a fork the exec tracer saw (ProcessControls.record_child's keys). */
static int fmt_child_line(char *out, size_t cap, const struct record *r) {
    char t[48];
    fmt_time(t, sizeof t, r->t);
    return snprintf(out, cap, "{\"t\": %s, \"kind\": \"child\", \"pid\": %u, \"child\": %u}\n", t, r->pid, r->entry);
}

static int flush_lines(PyObject *out, char *buf, size_t *len) {
    if (!*len)
        return 0;
    PyObject *s = PyUnicode_DecodeASCII(buf, (Py_ssize_t)*len, NULL);
    *len = 0;
    if (!s || PyList_Append(out, s) < 0) {
        Py_XDECREF(s);
        return -1;
    }
    Py_DECREF(s);
    return 0;
}

enum { LINES_NET = 1, LINES_PROC = 2, LINES_LEARN_NET = 4 };

/* One record as a forensic line into buf (flushed first when it might not fit); 0 when it is not a
 * line of a kind asked for (or Python must format it): then it becomes a tuple. */
static int record_line(LoopObject *L, PyObject *out, char *buf, size_t *blen, size_t cap, const struct record *r,
                       int lines) {
    enum { SHORT_LINE = 256 };
    if (r->kind == REC_NET && (lines & LINES_NET)) {
        if (*blen + SHORT_LINE > cap && flush_lines(out, buf, blen) < 0)
            return -1;
        *blen += (size_t)fmt_net_line(buf + *blen, cap - *blen, r);
        return 1;
    }
    if (!(lines & LINES_PROC) || (r->kind != REC_EXEC && r->kind != REC_FORK && r->kind != REC_CHILD))
        return 0;
    size_t need = r->kind == REC_EXEC ? SHORT_LINE + 6 * (size_t)r->blob_len : SHORT_LINE;
    if (need > cap)
        return 0;
    if (*blen + need > cap && flush_lines(out, buf, blen) < 0)
        return -1;
    int w = r->kind == REC_EXEC ? fmt_exec_line(buf + *blen, cap - *blen, r)
            : r->kind == REC_FORK ? fmt_fork_line(buf + *blen, cap - *blen, r)
                                  : fmt_child_line(buf + *blen, cap - *blen, r);
    if (w < 0 || (size_t)w >= cap - *blen)
        return 0;
    *blen += (size_t)w;
    free(r->blob);
    atomic_fetch_add_explicit(&L->n_lines, 1, memory_order_relaxed);
    return 1;
}

/* ---- learning: allowed destinations counted here, sent to Python as counts ------------------------
 * While the network is learned, every allowed connect's record is counted per destination (address,
 * port, protocol) as the drain reads it, and Python takes the counts now and then (take_learned): one
 * Python item per destination and drain, never one per connect. The app's path is untouched (the
 * drain runs off it, the table is touched with the GIL held only). */
#define LEARN_SLOTS 8192 /* open addressing, at most half full: the recorder keeps 4,096 per kind */

struct learned_dest {
    uint8_t used, v6, proto;
    uint16_t port;
    uint8_t addr[16];
    uint64_t count;
    double first, last;
};

struct learned {
    struct learned_dest slot[LEARN_SLOTS];
    uint16_t order[LEARN_SLOTS / 2]; /* the used slots, in the order they were filled */
    size_t used;
    uint64_t dropped; /* distinct destinations beyond the table's bound (reported, then zeroed) */
};

static void learn_count(LoopObject *L, const struct record *r) {
    if (!L->learned && !(L->learned = calloc(1, sizeof(struct learned))))
        return;
    struct learned *t = L->learned;
    uint8_t v6 = r->family == 6;
    size_t alen = v6 ? 16 : 4;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < alen; i++)
        h = (h ^ r->addr[i]) * 1099511628211ULL;
    h = (h ^ (r->port | (uint64_t)r->proto << 16 | (uint64_t)v6 << 24)) * 1099511628211ULL;
    for (size_t i = (size_t)h & (LEARN_SLOTS - 1);; i = (i + 1) & (LEARN_SLOTS - 1)) {
        struct learned_dest *d = &t->slot[i];
        if (!d->used) {
            if (t->used >= LEARN_SLOTS / 2) {
                t->dropped++;
                return;
            }
            *d = (struct learned_dest){.used = 1, .v6 = v6, .proto = (uint8_t)r->proto, .port = (uint16_t)r->port,
                                       .count = 1, .first = r->t, .last = r->t};
            memcpy(d->addr, r->addr, alen);
            t->order[t->used++] = (uint16_t)i;
            return;
        }
        if (d->v6 == v6 && d->port == r->port && d->proto == r->proto && !memcmp(d->addr, r->addr, alen)) {
            d->count++;
            if (r->t > d->last)
                d->last = r->t;
            if (r->t < d->first)
                d->first = r->t;
            return;
        }
    }
}

/* take_learned() -> ([(ip, port, proto, count, first, last)], dropped): the counts since the last take */
static PyObject *Loop_take_learned(LoopObject *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(0);
    struct learned *t = self->learned;
    if (!out || !t)
        return out ? Py_BuildValue("(NK)", out, 0ULL) : NULL;
    for (size_t i = 0; i < t->used; i++) {
        struct learned_dest *d = &t->slot[t->order[i]];
        char ip[64];
        fmt_ip(ip, sizeof ip, d->v6, d->addr);
        PyObject *row = Py_BuildValue("(sIIKdd)", ip, (unsigned)d->port, (unsigned)d->proto,
                                      (unsigned long long)d->count, d->first, d->last);
        if (!row || PyList_Append(out, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(out);
            return NULL; /* the counts stay: the next take reports them */
        }
        Py_DECREF(row);
    }
    for (size_t i = 0; i < t->used; i++) /* only what was used: a take costs per destination, not per slot */
        t->slot[t->order[i]].used = 0;
    t->used = 0;
    unsigned long long dropped = t->dropped;
    t->dropped = 0;
    return Py_BuildValue("(NK)", out, dropped);
}

/* drain(max, timeout_ms, lines=0) -> list of record tuples (waits until something is urgent or the
 * timeout). `lines` (LINES_NET | LINES_PROC): records of those kinds -- allowed destinations; execs,
 * forks and the tracer's children the loop let through -- come as runs of forensic lines (one str
 * each) instead, formatted here in the keys and order of Python's json.dumps: the common record
 * never becomes Python objects. LINES_LEARN_NET: allowed destinations are also counted for
 * take_learned(). */
static PyObject *Loop_drain(LoopObject *self, PyObject *args) {
    int max = 4096, timeout_ms = 100, lines = 0;
    if (!PyArg_ParseTuple(args, "|iii", &max, &timeout_ms, &lines))
        return NULL;
    if (timeout_ms > 0) {
        Py_BEGIN_ALLOW_THREADS
        struct pollfd p[2] = {{self->wake_fd, POLLIN, 0}, {self->stop_fd, POLLIN, 0}};
        if (poll(p, 2, timeout_ms) > 0 && p[0].revents) {
            uint64_t v;
            if (read(self->wake_fd, &v, sizeof v) < 0) {
            }
        }
        Py_END_ALLOW_THREADS
    }
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    enum { LINES_CAP = 1 << 18 };
    char *buf = lines ? malloc(LINES_CAP) : NULL;
    size_t blen = 0;
    if (lines && !buf) {
        Py_DECREF(out);
        return PyErr_NoMemory();
    }
    struct record r;
    for (int i = 0; i < max && ring_pop(self, &r); i++) {
        if ((lines & LINES_LEARN_NET) && r.kind == REC_NET)
            learn_count(self, &r);
        int done = lines ? record_line(self, out, buf, &blen, LINES_CAP, &r, lines) : 0;
        if (done < 0) {
            free(r.blob);
            goto fail;
        }
        if (done)
            continue;
        if (flush_lines(out, buf, &blen) < 0) {
            free(r.blob);
            goto fail;
        }
        PyObject *t = Py_BuildValue("(IIIIIIIIiiKy#y#y#d)", r.kind, r.pid, r.family, r.port, r.proto, r.control,
                                    r.entry, r.effect, r.blocked, r.err, (unsigned long long)r.generation,
                                    (const char *)r.addr, (Py_ssize_t)(r.family == 6 ? 16 : 4),
                                    (const char *)r.caddr, (Py_ssize_t)(r.cfamily == 6 ? 16 : r.cfamily == 4 ? 4 : 0),
                                    r.blob ? r.blob : "", (Py_ssize_t)(r.blob ? r.blob_len : 0), r.t);
        free(r.blob);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    if (flush_lines(out, buf, &blen) < 0)
        goto fail;
    free(buf);
    return out;
fail:
    free(buf);
    Py_DECREF(out);
    return NULL;
}

/* format_ip(addr) -> str: the loop's address formatting (tests compare it with ipaddress) */
static PyObject *mod_format_ip(PyObject *m, PyObject *args) {
    const char *a;
    Py_ssize_t alen;
    if (!PyArg_ParseTuple(args, "y#", &a, &alen))
        return NULL;
    if (alen != 4 && alen != 16) {
        PyErr_SetString(PyExc_ValueError, "address must be 4 or 16 bytes");
        return NULL;
    }
    char out[64];
    fmt_ip(out, sizeof out, alen == 16, (const uint8_t *)a);
    return PyUnicode_FromString(out);
}

/* remember_exec(raw, exe, argv0\0argv1\0..., dev, ino, size, mtime_ns, ctime_ns, mode): Python let
 * this exec through with nothing to audit; the same exec of the same unchanged file may be answered
 * natively until clear_execs() (every rule change). */
static PyObject *Loop_remember_exec(LoopObject *self, PyObject *args) {
    const char *raw, *exe, *argv;
    Py_ssize_t rl, el, al;
    unsigned long long dev, ino, size;
    long long mtime, ctime;
    unsigned int mode;
    if (!PyArg_ParseTuple(args, "y#y#y#KKKLLI", &raw, &rl, &exe, &el, &argv, &al, &dev, &ino, &size, &mtime,
                          &ctime, &mode))
        return NULL;
    size_t klen = (size_t)rl + 1 + (size_t)el + 1 + (size_t)al;
    if (klen > EXEC_KEY_MAX || memchr(raw, 0, (size_t)rl) || memchr(exe, 0, (size_t)el) ||
        (al && argv[al - 1] != 0))
        Py_RETURN_FALSE;
    struct ventry *e = malloc(sizeof *e + klen);
    if (!e)
        return PyErr_NoMemory();
    char *key = e->key;
    memcpy(key, raw, (size_t)rl);
    key[rl] = 0;
    memcpy(key + rl + 1, exe, (size_t)el);
    key[rl + 1 + el] = 0;
    memcpy(key + rl + el + 2, argv, (size_t)al);
    e->hash = fnv1a(key, klen);
    e->key_len = (uint32_t)klen;
    e->f = (struct vfacts){dev, ino, size, mtime, ctime, mode};
    vcache_put(self->ecache, e);
    Py_RETURN_TRUE;
}

/* set_fork_guard(max_forks_per_s, max_procs): the rule's limits (0, 0: no guard) */
static PyObject *Loop_set_fork_guard(LoopObject *self, PyObject *args) {
    unsigned int rate, procs;
    if (!PyArg_ParseTuple(args, "II", &rate, &procs))
        return NULL;
    pthread_mutex_lock(&self->fg.mu);
    self->fg.max_rate = rate;
    self->fg.max_procs = procs;
    pthread_mutex_unlock(&self->fg.mu);
    Py_RETURN_NONE;
}

static PyObject *Loop_forks_seen(LoopObject *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromLongLong(atomic_load(&self->fg.seen));
}

/* fork_tree(live, seen_then): Python counted `live` processes in the tree when forks_seen() was
 * `seen_then` */
static PyObject *Loop_fork_tree(LoopObject *self, PyObject *args) {
    long long live, seen_then;
    if (!PyArg_ParseTuple(args, "LL", &live, &seen_then))
        return NULL;
    pthread_mutex_lock(&self->fg.mu);
    self->fg.base = live;
    self->fg.base_seen = seen_then;
    pthread_mutex_unlock(&self->fg.mu);
    Py_RETURN_NONE;
}

/* fork_tasks(tasks, read_at_monotonic, limit): the app user's tasks against RLIMIT_NPROC (limit 0: none) */
static PyObject *Loop_fork_tasks(LoopObject *self, PyObject *args) {
    long long tasks, limit;
    double at;
    if (!PyArg_ParseTuple(args, "LdL", &tasks, &at, &limit))
        return NULL;
    pthread_mutex_lock(&self->fg.mu);
    self->fg.tasks = tasks;
    self->fg.tasks_at = at;
    self->fg.tasks_limit = limit;
    pthread_mutex_unlock(&self->fg.mu);
    Py_RETURN_NONE;
}

static PyObject *Loop_clear_execs(LoopObject *self, PyObject *Py_UNUSED(ignored)) {
    vcache_clear(self->ecache);
    Py_RETURN_NONE;
}

static PyObject *Loop_stats(LoopObject *self, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:n}", "received", (unsigned long long)atomic_load(&self->n_recv),
        "native", (unsigned long long)atomic_load(&self->n_native), "handed_over",
        (unsigned long long)atomic_load(&self->n_handoff), "emulated", (unsigned long long)atomic_load(&self->n_emulated),
        "continued", (unsigned long long)atomic_load(&self->n_continued), "refused",
        (unsigned long long)atomic_load(&self->n_refused), "dropped", (unsigned long long)atomic_load(&self->n_drops),
        "waiters", (unsigned long long)atomic_load(&self->n_waiters), "gone", (unsigned long long)atomic_load(&self->n_gone),
        "wakeups", (unsigned long long)atomic_load(&self->n_wake), "pidfds_opened",
        (unsigned long long)atomic_load(&self->n_pidfd_open), "exec_hits", (unsigned long long)atomic_load(&self->n_exec_hits),
        "exec_missing", (unsigned long long)atomic_load(&self->n_exec_missing), "execs",
        (unsigned long long)atomic_load(&self->n_exec), "forks", (unsigned long long)atomic_load(&self->n_fork),
        "proc_lines", (unsigned long long)atomic_load(&self->n_lines),
        "ring_slots", (Py_ssize_t)(self->ring_mask + 1));
}

static void Loop_dealloc(LoopObject *self) {
    /* running loops hold a reference, so here the thread is joined (or was never started) */
    struct tables *t = atomic_load(&self->current);
    free(t);
    if (self->ring) {
        struct record r;
        while (ring_pop(self, &r))
            free(r.blob);
    }
    if (self->ring) /* set after the pidfd slots were emptied */
        for (int i = 0; i < PIDFD_CACHE; i++)
            if (self->pidfds[i].fd >= 0)
                close(self->pidfds[i].fd);
    free(self->ring);
    if (self->stop_fd > 0)
        close(self->stop_fd);
    if (self->wake_fd > 0)
        close(self->wake_fd);
    free(self->learned);
    if (self->ecache) {
        vcache_clear(self->ecache);
        free(self->ecache);
        pthread_mutex_destroy(&self->fg.mu);
    }
    pthread_mutex_destroy(&self->hmu);
    pthread_cond_destroy(&self->hcv);
    pthread_cond_destroy(&self->hspace);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Loop_methods[] = {
    {"set_tables", (PyCFunction)Loop_set_tables, METH_O, "Swap in compiled tables (atomic); returns the generation."},
    {"start", (PyCFunction)Loop_start, METH_NOARGS, "Start the native notification thread."},
    {"stop", (PyCFunction)Loop_stop, METH_NOARGS, "Stop the native thread and wait for it."},
    {"take", (PyCFunction)Loop_take, METH_VARARGS, "Next notification handed over to Python (GIL released while waiting)."},
    {"drain", (PyCFunction)Loop_drain, METH_VARARGS, "Records of native decisions (batch)."},
    {"take_learned", (PyCFunction)Loop_take_learned, METH_NOARGS, "Destinations counted while learning (and cleared)."},
    {"stats", (PyCFunction)Loop_stats, METH_NOARGS, "Counters."},
    {"remember_exec", (PyCFunction)Loop_remember_exec, METH_VARARGS, "An exec Python let through, to answer natively."},
    {"clear_execs", (PyCFunction)Loop_clear_execs, METH_NOARGS, "Forget every remembered exec (rule change)."},
    {"set_fork_guard", (PyCFunction)Loop_set_fork_guard, METH_VARARGS, "The fork-bomb guard's limits."},
    {"forks_seen", (PyCFunction)Loop_forks_seen, METH_NOARGS, "Fork notifications the loop has seen."},
    {"fork_tree", (PyCFunction)Loop_fork_tree, METH_VARARGS, "The tree's size as Python last counted it."},
    {"fork_tasks", (PyCFunction)Loop_fork_tasks, METH_VARARGS, "The app user's task count and limit."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LoopType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "garrison.defender.dataplane._native.Loop",
    .tp_basicsize = sizeof(LoopObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Native seccomp notification loop deciding from compiled tables.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Loop_init,
    .tp_dealloc = (destructor)Loop_dealloc,
    .tp_methods = Loop_methods,
};


/* ---- the exec tracer ------------------------------------------------------------------------------ */
/* Where the ptrace exec stop runs (a deny/allow list under prevent, or no Landlock), this thread is the
 * tracer: it seizes the app (fork, vfork, clone and exec events; EXITKILL), and is the only waiter of
 * the defender. At each exec stop the new image is loaded but has not run an instruction: the loop
 * reads /proc/<pid>/exe and cmdline and lets the process go on when the process controls already let
 * this very exec through (the verdict cache Python teaches, keyed on the exe path, the cmdline bytes
 * and the file's identity and change times, the path naming that same file in our view). Anything
 * else -- a first exec, the dynamic loader, memfd, a changed file -- is handed to Python's
 * ProcessControls.check_exec_stop, and the loop waits for its verdict (kill or go on), as the Python
 * tracer did. Fork events become "child" forensic lines through the loop's ring. */
#define STOP_CMDLINE_MAX 65536 /* check_exec_stop reads this much of cmdline */

/* The app's threads (tid -> thread group), from the tracer's clone events: a fork by a thread is
 * recorded under its process. Open addressing; a full probe run forgets (that thread's forks are then
 * recorded under its own id, as before). */
#define THREAD_SLOTS 4096
#define THREAD_PROBES 8
struct thread_slot {
    uint32_t tid, tgid; /* tid 0: empty */
};

static uint32_t group_of(const struct thread_slot *m, uint32_t tid) {
    for (int i = 0; i < THREAD_PROBES; i++) {
        const struct thread_slot *e = &m[(tid + (uint32_t)i) % THREAD_SLOTS];
        if (e->tid == tid)
            return e->tgid;
    }
    return tid; /* not a thread we saw created: a process (its own group) */
}

static void thread_put(struct thread_slot *m, uint32_t tid, uint32_t tgid) {
    struct thread_slot *free_slot = NULL;
    for (int i = 0; i < THREAD_PROBES; i++) { /* lookups scan every probe: a slot may be empty mid-run */
        struct thread_slot *e = &m[(tid + (uint32_t)i) % THREAD_SLOTS];
        if (e->tid == tid) {
            e->tgid = tgid;
            return;
        }
        if (!e->tid && !free_slot)
            free_slot = e;
    }
    if (free_slot) {
        free_slot->tid = tid;
        free_slot->tgid = tgid;
    }
}

static void thread_gone(struct thread_slot *m, uint32_t tid) {
    for (int i = 0; i < THREAD_PROBES; i++) {
        struct thread_slot *e = &m[(tid + (uint32_t)i) % THREAD_SLOTS];
        if (e->tid == tid) {
            e->tid = 0;
            return;
        }
    }
}

typedef struct {
    PyObject_HEAD
    LoopObject *loop; /* its ring carries the child lines */
    struct thread_slot *threads; /* tracer thread only */
    pthread_t thread;
    int running;
    pid_t app;
    unsigned long options;
    int release_fd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int attached, attach_errno, finished, have_status, app_status;
    int ask_pid, asked, verdict; /* one exec stop at a time waits for Python */
    _Atomic int mode;            /* 0: the rule cannot kill at the exec stop; 1: check */
    struct vcache *cache;
    char *buf; /* exe\0cmdline of the stop being checked (tracer thread only) */
    _Atomic uint64_t n_execs, n_hits, n_handed, n_children, n_stops;
} TracerObject;

/* 1 when this exec stop is one Python already let through (same exe, cmdline and file) */
static int stop_known(TracerObject *T, pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    int dfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC), known = 0, cfd = -1;
    if (dfd < 0)
        return 0;
    char *key = T->buf;
    ssize_t el = readlinkat(dfd, "exe", key, EXEC_MAX_ARG);
    if (el <= 0 || el >= EXEC_MAX_ARG || key[0] != '/')
        goto out;
    key[el] = 0;
    cfd = openat(dfd, "cmdline", O_RDONLY | O_CLOEXEC);
    if (cfd < 0)
        goto out;
    ssize_t cl = read(cfd, key + el + 1, STOP_CMDLINE_MAX);
    if (cl < 0 || cl >= STOP_CMDLINE_MAX)
        goto out; /* what Python reads would be cut: it decides */
    struct stat st, ours;
    /* the very file mapped: stat through the exe link (one call where open + fstat + close were three) */
    if (fstatat(dfd, "exe", &st, 0) < 0 || !S_ISREG(st.st_mode))
        goto out;
    /* the path names this very file for us too (the baseline compares the path in our view; a
     * deleted or replaced file, or another mount namespace's, goes to Python) */
    if (stat(key, &ours) < 0 || ours.st_dev != st.st_dev || ours.st_ino != st.st_ino)
        goto out;
    size_t klen = (size_t)el + 1 + (size_t)cl;
    struct vfacts f;
    facts_of(&st, &f);
    known = vcache_hit(T->cache, fnv1a(key, klen), key, klen, &f);
out:
    if (cfd >= 0)
        close(cfd);
    close(dfd);
    return known;
}

/* Python's verdict on an exec stop (1 = kill); the tracer waits for it (fail-closed: kill when the
 * Python side is gone) */
static int ask_python(TracerObject *T, pid_t pid) {
    atomic_fetch_add(&T->n_handed, 1);
    pthread_mutex_lock(&T->mu);
    T->ask_pid = (int)pid;
    T->asked = 0;
    T->verdict = -1;
    pthread_cond_broadcast(&T->cv);
    while (T->verdict < 0)
        pthread_cond_wait(&T->cv, &T->mu);
    int v = T->verdict;
    T->ask_pid = 0;
    pthread_mutex_unlock(&T->mu);
    return v;
}

static int exec_stop(TracerObject *T, pid_t pid) {
    atomic_fetch_add(&T->n_execs, 1);
    if (!atomic_load_explicit(&T->mode, memory_order_acquire))
        return 0; /* no rule, or one that does not prevent: check_exec_stop never kills */
    if (stop_known(T, pid)) {
        atomic_fetch_add(&T->n_hits, 1);
        return 0;
    }
    return ask_python(T, pid);
}

static void record_child(TracerObject *T, pid_t parent, unsigned long child) {
    struct record r;
    memset(&r, 0, sizeof r);
    r.kind = REC_CHILD;
    r.pid = (uint32_t)parent;
    r.entry = (uint32_t)child;
    atomic_fetch_add(&T->n_children, 1);
    ring_push(T->loop, &r, 0);
}

static void tracer_loop(TracerObject *T) {
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, __WALL);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            return; /* ECHILD: nothing left */
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            thread_gone(T->threads, (uint32_t)pid);
            if (pid == T->app) {
                pthread_mutex_lock(&T->mu);
                T->app_status = status;
                T->have_status = 1;
                pthread_mutex_unlock(&T->mu);
                return;
            }
            continue;
        }
        if (!WIFSTOPPED(status))
            continue;
        atomic_fetch_add(&T->n_stops, 1); /* every stop costs the app a round trip through this thread */
        int sig = WSTOPSIG(status), event = (int)((unsigned)status >> 16);
        if (event == PTRACE_EVENT_EXEC) {
            if (exec_stop(T, pid))
                kill(pid, SIGKILL);
            ptrace(PTRACE_CONT, pid, 0, 0);
        } else if (event == PTRACE_EVENT_STOP) {
            if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
                ptrace(PTRACE_LISTEN, pid, 0, 0); /* a real group-stop: stay stopped until SIGCONT */
            else
                ptrace(PTRACE_CONT, pid, 0, 0);
        } else if (event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK) {
            unsigned long child = 0;
            if (ptrace(PTRACE_GETEVENTMSG, pid, 0, &child) == 0)
                record_child(T, (pid_t)group_of(T->threads, (uint32_t)pid), child);
            ptrace(PTRACE_CONT, pid, 0, 0);
        } else if (event == PTRACE_EVENT_CLONE) {
            unsigned long tid = 0;
            struct user_regs_struct regs;
            if (ptrace(PTRACE_GETEVENTMSG, pid, 0, &tid) == 0 && ptrace(PTRACE_GETREGS, pid, 0, &regs) == 0 &&
                regs.orig_rax == SYS_clone && (regs.rdi & CLONE_THREAD))
                thread_put(T->threads, (uint32_t)tid, group_of(T->threads, (uint32_t)pid));
            ptrace(PTRACE_CONT, pid, 0, 0);
        } else if (event) {
            ptrace(PTRACE_CONT, pid, 0, 0);
        } else {
            ptrace(PTRACE_CONT, pid, 0, (void *)(long)sig); /* signal-delivery-stop: deliver it */
        }
    }
}

static void *tracer_main(void *arg) {
    TracerObject *T = arg;
    sigset_t all;
    sigfillset(&all);
    /* The app's and the operator's signals go to Python -- except SIGCHLD: every ptrace stop sends
     * one to the tracer, and a blocked signal is never dropped as ignored: it would be queued for the
     * process and wake a Python thread (the main one) three or four times per fork+exec for nothing.
     * Unblocked here, the kernel drops it at once (SIGCHLD's default is to ignore it). */
    sigdelset(&all, SIGCHLD);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    pthread_setname_np(pthread_self(), "garrison-trace");
    pthread_mutex_lock(&T->mu);
    while (!T->app) /* attach() names the app */
        pthread_cond_wait(&T->cv, &T->mu);
    pthread_mutex_unlock(&T->mu);
    int err = ptrace(PTRACE_SEIZE, T->app, NULL, (void *)T->options) < 0 ? errno : 0;
    if (write(T->release_fd, "g", 1) < 0) { /* the child goes on to exec (or fails and exits) */
    }
    close(T->release_fd);
    pthread_mutex_lock(&T->mu);
    T->attach_errno = err;
    T->attached = 1;
    pthread_cond_broadcast(&T->cv);
    pthread_mutex_unlock(&T->mu);
    tracer_loop(T);
    pthread_mutex_lock(&T->mu);
    T->finished = 1;
    pthread_cond_broadcast(&T->cv);
    pthread_mutex_unlock(&T->mu);
    return NULL;
}

static int Tracer_init(TracerObject *self, PyObject *args, PyObject *kw) {
    PyObject *loop;
    if (!PyArg_ParseTuple(args, "O!", &LoopType, &loop))
        return -1;
    Py_INCREF(loop);
    self->loop = (LoopObject *)loop;
    self->cache = calloc(1, sizeof(struct vcache));
    self->buf = malloc(EXEC_MAX_ARG + STOP_CMDLINE_MAX + 2);
    self->threads = calloc(THREAD_SLOTS, sizeof(struct thread_slot));
    if (!self->cache || !self->buf || !self->threads) {
        PyErr_NoMemory();
        return -1;
    }
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->cv, NULL);
    return 0;
}

/* start(): the tracer thread, created here (from an unrestricted thread: a thread inherits the seccomp
 * filter and Landlock domain of the thread that creates it, and the spawn helper that attaches is
 * restricted); it waits for attach() */
static PyObject *Tracer_start(TracerObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->running)
        Py_RETURN_NONE;
    int e = pthread_create(&self->thread, NULL, tracer_main, self);
    if (e) {
        errno = e;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->running = 1;
    Py_INCREF(self); /* the thread's reference, dropped once it is joined */
    Py_RETURN_NONE;
}

/* attach(pid, release_fd, options): the tracer thread seizes `pid`, then writes to release_fd so the
 * child goes on to exec; raises OSError when the seize failed (the thread still waits for the app,
 * as the Python tracer did) */
static PyObject *Tracer_attach(TracerObject *self, PyObject *args) {
    int pid, fd;
    unsigned long options;
    if (!PyArg_ParseTuple(args, "iik", &pid, &fd, &options))
        return NULL;
    if (!self->running || self->app || pid <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "start() first, and attach once");
        return NULL;
    }
    int err;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->mu);
    self->release_fd = fd;
    self->options = options;
    self->app = pid;
    pthread_cond_broadcast(&self->cv);
    while (!self->attached)
        pthread_cond_wait(&self->cv, &self->mu);
    err = self->attach_errno;
    pthread_mutex_unlock(&self->mu);
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* take(timeout_ms) -> pid of an exec stop Python must check | None; EOFError once the app is gone */
static PyObject *Tracer_take(TracerObject *self, PyObject *args) {
    int timeout_ms = -1;
    if (!PyArg_ParseTuple(args, "|i", &timeout_ms))
        return NULL;
    int pid = 0, finished = 0;
    Py_BEGIN_ALLOW_THREADS
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000 + 1;
    pthread_mutex_lock(&self->mu);
    while (!(self->ask_pid && !self->asked) && !self->finished) {
        if (timeout_ms < 0)
            pthread_cond_wait(&self->cv, &self->mu);
        else if (pthread_cond_timedwait(&self->cv, &self->mu, &dl) == ETIMEDOUT)
            break;
    }
    if (self->ask_pid && !self->asked) {
        pid = self->ask_pid;
        self->asked = 1;
    }
    finished = self->finished;
    pthread_mutex_unlock(&self->mu);
    Py_END_ALLOW_THREADS
    if (pid)
        return PyLong_FromLong(pid);
    if (finished) {
        if (self->running) {
            Py_BEGIN_ALLOW_THREADS
            pthread_join(self->thread, NULL);
            Py_END_ALLOW_THREADS
            self->running = 0;
            Py_DECREF(self);
        }
        return PyErr_Format(PyExc_EOFError, "the app is gone");
    }
    Py_RETURN_NONE;
}

/* answer(pid, kill): Python's verdict on the exec stop it took */
static PyObject *Tracer_answer(TracerObject *self, PyObject *args) {
    int pid, kill_it;
    if (!PyArg_ParseTuple(args, "ip", &pid, &kill_it))
        return NULL;
    pthread_mutex_lock(&self->mu);
    if (self->ask_pid == pid && self->verdict < 0) {
        self->verdict = kill_it;
        pthread_cond_broadcast(&self->cv);
    }
    pthread_mutex_unlock(&self->mu);
    Py_RETURN_NONE;
}

/* remember(exe, cmdline, dev, ino, size, mtime_ns, ctime_ns, mode): check_exec_stop let this exec
 * go on; the same stop of the same unchanged file is let go on natively until clear() */
static PyObject *Tracer_remember(TracerObject *self, PyObject *args) {
    const char *exe, *cmd;
    Py_ssize_t el, cl;
    unsigned long long dev, ino, size;
    long long mtime, ctime;
    unsigned int mode;
    if (!PyArg_ParseTuple(args, "y#y#KKKLLI", &exe, &el, &cmd, &cl, &dev, &ino, &size, &mtime, &ctime, &mode))
        return NULL;
    if (el <= 0 || el >= EXEC_MAX_ARG || cl >= STOP_CMDLINE_MAX || memchr(exe, 0, (size_t)el))
        Py_RETURN_FALSE;
    size_t klen = (size_t)el + 1 + (size_t)cl;
    struct ventry *e = malloc(sizeof *e + klen);
    if (!e)
        return PyErr_NoMemory();
    memcpy(e->key, exe, (size_t)el);
    e->key[el] = 0;
    memcpy(e->key + el + 1, cmd, (size_t)cl);
    e->hash = fnv1a(e->key, klen);
    e->key_len = (uint32_t)klen;
    e->f = (struct vfacts){dev, ino, size, mtime, ctime, mode};
    vcache_put(self->cache, e);
    Py_RETURN_TRUE;
}

static PyObject *Tracer_clear(TracerObject *self, PyObject *Py_UNUSED(ignored)) {
    vcache_clear(self->cache);
    Py_RETURN_NONE;
}

/* set_mode(check): whether the current rule can kill at the exec stop (prevent) */
static PyObject *Tracer_set_mode(TracerObject *self, PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    atomic_store_explicit(&self->mode, on, memory_order_release);
    Py_RETURN_NONE;
}

static PyObject *Tracer_app_status(TracerObject *self, PyObject *Py_UNUSED(ignored)) {
    pthread_mutex_lock(&self->mu);
    int have = self->have_status, st = self->app_status;
    pthread_mutex_unlock(&self->mu);
    if (!have)
        Py_RETURN_NONE;
    return PyLong_FromLong(st);
}

static PyObject *Tracer_stats(TracerObject *self, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K}", "stop_execs", (unsigned long long)atomic_load(&self->n_execs),
                         "stop_hits", (unsigned long long)atomic_load(&self->n_hits), "stop_handed_over",
                         (unsigned long long)atomic_load(&self->n_handed), "children",
                         (unsigned long long)atomic_load(&self->n_children), "stops",
                         (unsigned long long)atomic_load(&self->n_stops));
}

static void Tracer_dealloc(TracerObject *self) {
    /* a running tracer holds a reference: here its thread is joined (or was never started) */
    if (self->cache) {
        vcache_clear(self->cache);
        free(self->cache);
    }
    free(self->buf);
    free(self->threads);
    pthread_mutex_destroy(&self->mu);
    pthread_cond_destroy(&self->cv);
    Py_XDECREF(self->loop);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Tracer_methods[] = {
    {"start", (PyCFunction)Tracer_start, METH_NOARGS, "Start the tracer thread (it waits for attach)."},
    {"attach", (PyCFunction)Tracer_attach, METH_VARARGS, "The tracer thread seizes the app, then releases it."},
    {"take", (PyCFunction)Tracer_take, METH_VARARGS, "Next exec stop Python must check (GIL released while waiting)."},
    {"answer", (PyCFunction)Tracer_answer, METH_VARARGS, "Python's verdict on an exec stop: kill or go on."},
    {"remember", (PyCFunction)Tracer_remember, METH_VARARGS, "An exec stop Python let go on, to answer natively."},
    {"clear", (PyCFunction)Tracer_clear, METH_NOARGS, "Forget every remembered exec stop (rule change)."},
    {"set_mode", (PyCFunction)Tracer_set_mode, METH_O, "Whether the rule can kill at the exec stop."},
    {"app_status", (PyCFunction)Tracer_app_status, METH_NOARGS, "The app's wait status once it exited, else None."},
    {"stats", (PyCFunction)Tracer_stats, METH_NOARGS, "Counters."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TracerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "garrison.defender.dataplane._native.Tracer",
    .tp_basicsize = sizeof(TracerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Native ptrace exec-stop tracer deciding repeats from a verdict cache.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Tracer_init,
    .tp_dealloc = (destructor)Tracer_dealloc,
    .tp_methods = Tracer_methods,
};

/* decide(blob, addr, port, proto) -> (kind, control, entry, effect): the loop's decision for one
 * canonical destination, without a notification (tests compare it with the Python evaluator) */
static PyObject *mod_decide(PyObject *m, PyObject *args) {
    Py_buffer b;
    const char *addr;
    Py_ssize_t alen;
    int port, proto;
    if (!PyArg_ParseTuple(args, "y*y#ii", &b, &addr, &alen, &port, &proto))
        return NULL;
    struct tables *t = parse_tables(b.buf, b.len, 0);
    PyBuffer_Release(&b);
    if (!t)
        return NULL;
    if (alen != 4 && alen != 16) {
        free(t);
        PyErr_SetString(PyExc_ValueError, "address must be 4 or 16 bytes");
        return NULL;
    }
    struct dest d;
    memset(&d, 0, sizeof d);
    d.v6 = alen == 16;
    d.port = (uint16_t)port;
    memcpy(d.a, addr, (size_t)alen);
    struct cand c[3];
    int nc;
    struct verdict v = decide_dest(t, &d, proto, c, &nc);
    free(t);
    return Py_BuildValue("(iiIiy#)", v.kind, v.control, v.entry, v.effect, (const char *)c[v.cand].a,
                         (Py_ssize_t)(c[v.cand].v6 ? 16 : 4));
}

static PyMethodDef mod_methods[] = {
    {"decide", mod_decide, METH_VARARGS, "Decide one destination from a table blob (for tests)."},
    {"format_ip", mod_format_ip, METH_VARARGS, "An address as the forensic lines write it (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_native", "Garrison native data plane.", -1, mod_methods};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&LoopType) < 0 || PyType_Ready(&TracerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    Py_INCREF(&LoopType);
    if (PyModule_AddObject(m, "Loop", (PyObject *)&LoopType) < 0) {
        Py_DECREF(&LoopType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&TracerType);
    if (PyModule_AddObject(m, "Tracer", (PyObject *)&TracerType) < 0) {
        Py_DECREF(&TracerType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "TABLE_MAGIC", TBL_MAGIC);
    PyModule_AddIntConstant(m, "ABI", 1);
    return m;
}
