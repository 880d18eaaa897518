/* The cell defender's exec gate answered in a native thread: fanotify FAN_OPEN_EXEC_PERM events read
 * and answered without the GIL from a verdict cache Python compiles; only files the cache does not
 * know (or an ELF interpreter opened without a program exec before it) are handed to Python, still
 * held by the kernel.
 *
 * Why native: each exec the kernel holds is one round trip to the defender; answered in Python it
 * costs ~100 us of CPU (fstat, readlink, lstat of the layers, the evaluator, /proc reads) on a
 * machine where every microsecond of the responder's CPU is taken from the apps.
 *
 * Cache key: (st_dev, st_ino) of the event's fd, valid only while ctime, mtime and size are the ones
 * Python decided on (ctime cannot be set from user space: any write, copy-up, chmod, link or rename
 * moves it) and while the fd's path is the one Python decided on (hard links and renames change the
 * path a deny pattern matches, not the inode). Python only caches files of a container's overlay
 * root, whose device belongs to that one container; a cache generation drops puts that raced a
 * clear (policy push, container gone).
 *
 * Interpreter pairing (see garrison/cell/exec_gate.py): a program with a PT_INTERP allowed here
 * records its thread's syscall registers before the answer; an interpreter event from the same
 * thread with identical registers is the kernel loading that program's interpreter. One table,
 * shared with Python's path (program_exec / is_interpreter), so mixed hits and misses pair.
 *
 * Records for audits and forensics (flag F_RECORD) go to a bounded ring drained by Python in
 * batches; a full ring counts drops and never delays an answer.
 *
 * Learning (flag F_LEARN, while a container's processes are learnt): a cached allowed exec is still
 * answered here, after its argv (from the waiting thread's registers and memory) and its parent's
 * executable are read and counted per (cookie, argv, parent) in a bounded table Python drains
 * (learned()); when the table is full the exec goes to Python instead, so nothing is lost. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { F_ALLOW = 1, F_LOADER = 2, F_INTERP = 4, F_RECORD = 8, F_LEARN = 16 };

#define CACHE_MAX_SLOTS (1u << 19)
#define PAIR_SLOTS 16384u
#define PAIR_LIVE_MAX 8192u
#define PAIR_STATE 256
#define RING_CAP 16384u

struct entry {
    uint64_t dev, ino, cookie;
    int64_t ctime_ns, mtime_ns, size;
    uint32_t flags, used;
    char *path;
};

struct pair {
    int32_t tid; /* 0 free, -1 deleted */
    uint16_t len;
    char state[PAIR_STATE];
};

struct miss { int fd; int32_t tid; uint64_t mask; int paired; };

#define LEARN_MAX 4096u             /* distinct (cookie, argv, parent) between two drains */
#define LEARN_BYTES_MAX (8u << 20)  /* argv and parent bytes kept between two drains */
#define LEARN_ARGS 17               /* argv[0..16]: what the profile's argv shape looks at */
#define LEARN_ARG_BYTES 4096        /* per argument, as Python reads it (execinfo.MAX_ARG_BYTES) */
struct learnt { uint64_t cookie, hash, count; uint32_t argv_len, parent_len; char *argv, *parent; };
struct rec { uint64_t cookie; int32_t tid; int32_t allowed; };

typedef struct {
    PyObject_HEAD
    int fan_fd, wake_fd, notify_fd;
    pthread_t thread;
    int running, error;
    pthread_mutex_t mu; /* cache, misses, ring */
    struct entry *slots;
    uint32_t cap, count;
    uint64_t gen;
    struct miss *misses;
    size_t nmiss, miss_cap;
    struct rec ring[RING_CAP];
    uint32_t head, tail;
    uint64_t dropped, hits, handed;
    _Atomic int64_t cpu_ns; /* the native thread's CPU time, when it ended */
    pthread_mutex_t pmu; /* interpreter pairing */
    struct pair *pairs;
    uint32_t plive, pused;
    pthread_mutex_t lmu; /* learning counts */
    struct learnt *learnt; /* LEARN_MAX * 2 slots, open addressing by hash */
    uint32_t nlearnt;
    size_t learnt_bytes;
} Responder;

static uint64_t mix(uint64_t dev, uint64_t ino) {
    uint64_t h = ino * 0x9E3779B97F4A7C15ull ^ (dev + 0x632BE59BD9B4E019ull + (ino << 6) + (ino >> 2));
    h ^= h >> 33;
    return h * 0xff51afd7ed558ccdull;
}

static struct entry *find(Responder *R, uint64_t dev, uint64_t ino) {
    if (!R->cap) return NULL;
    for (uint32_t i = mix(dev, ino) & (R->cap - 1);; i = (i + 1) & (R->cap - 1)) {
        struct entry *e = &R->slots[i];
        if (!e->used) return NULL;
        if (e->dev == dev && e->ino == ino) return e;
    }
}

static void free_slots(struct entry *s, uint32_t cap) {
    for (uint32_t i = 0; i < cap; i++) free(s[i].path);
    free(s);
}

/* rebuild with `cap` slots, keeping entries not on `drop_dev` (0: keep all) */
static int rebuild(Responder *R, uint32_t cap, uint64_t drop_dev, int drop) {
    struct entry *n = calloc(cap, sizeof *n), *old = R->slots;
    if (!n) return -1;
    uint32_t oldcap = R->cap;
    R->slots = n;
    R->cap = cap;
    R->count = 0;
    for (uint32_t i = 0; i < oldcap; i++) {
        struct entry *e = &old[i];
        if (!e->used) continue;
        if (drop && e->dev == drop_dev) { free(e->path); continue; }
        uint32_t j = mix(e->dev, e->ino) & (cap - 1);
        while (n[j].used) j = (j + 1) & (cap - 1);
        n[j] = *e;
        R->count++;
    }
    free(old);
    return 0;
}

static void wake_python(Responder *R) {
    uint64_t one = 1;
    ssize_t w = write(R->notify_fd, &one, sizeof one);
    (void)w;
}

/* ---- interpreter pairing ---------------------------------------------------------------------- */
static int syscall_state(int32_t tid, char *out, size_t cap) {
    char p[48];
    snprintf(p, sizeof p, "/proc/%d/syscall", tid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, out, cap);
    close(fd);
    if (n <= 0 || (size_t)n >= cap) return -1; /* "running" or truncated: no comparable state */
    if (n >= 7 && !memcmp(out, "running", 7)) return -1;
    return (int)n;
}

static struct pair *pair_slot(Responder *R, int32_t tid, int insert) {
    struct pair *free_slot = NULL;
    for (uint32_t i = ((uint32_t)tid * 2654435761u) & (PAIR_SLOTS - 1), k = 0; k < PAIR_SLOTS;
         i = (i + 1) & (PAIR_SLOTS - 1), k++) {
        struct pair *p = &R->pairs[i];
        if (p->tid == tid) return p;
        if (p->tid == -1 && !free_slot) free_slot = p;
        if (p->tid == 0) return insert ? (free_slot ? free_slot : p) : NULL;
    }
    return insert ? free_slot : NULL;
}

static void pair_record(Responder *R, int32_t tid) {
    char st[PAIR_STATE];
    int n = syscall_state(tid, st, sizeof st);
    pthread_mutex_lock(&R->pmu);
    if (n < 0) {
        struct pair *p = pair_slot(R, tid, 0);
        if (p) { p->tid = -1; R->plive--; }
    } else {
        if (R->plive >= PAIR_LIVE_MAX || R->pused >= PAIR_SLOTS - PAIR_SLOTS / 8) {
            /* threads whose exec failed after the program's open never come back for their entry */
            memset(R->pairs, 0, PAIR_SLOTS * sizeof *R->pairs);
            R->plive = R->pused = 0;
        }
        struct pair *p = pair_slot(R, tid, 1);
        if (p) {
            if (p->tid != tid) { R->plive++; if (p->tid == 0) R->pused++; }
            p->tid = tid;
            p->len = (uint16_t)n;
            memcpy(p->state, st, (size_t)n);
        }
    }
    pthread_mutex_unlock(&R->pmu);
}

/* 1 when tid's last recorded program exec is the very execve now opening an interpreter */
static int pair_check(Responder *R, int32_t tid) {
    char before[PAIR_STATE];
    int len = -1;
    pthread_mutex_lock(&R->pmu);
    struct pair *p = pair_slot(R, tid, 0);
    if (p) {
        len = p->len;
        memcpy(before, p->state, p->len);
        p->tid = -1;
        R->plive--;
    }
    pthread_mutex_unlock(&R->pmu);
    if (len < 0) return 0;
    char now[PAIR_STATE];
    int n = syscall_state(tid, now, sizeof now);
    return n == len && !memcmp(before, now, (size_t)n);
}

/* ---- the loop --------------------------------------------------------------------------------- */
/* ---- learning ---------------------------------------------------------------------------------- */
/* `len` bytes of the thread's memory at `addr` into out, page by page (a read crossing into an unmapped
 * page still returns what lies before it); the number of bytes read */
static size_t mem_read(int32_t tid, uint64_t addr, char *out, size_t len) {
    size_t done = 0;
    while (done < len) {
        size_t chunk = 4096 - ((addr + done) & 4095);
        if (chunk > len - done) chunk = len - done;
        struct iovec l = {out + done, chunk}, r = {(void *)(uintptr_t)(addr + done), chunk};
        ssize_t n = process_vm_readv(tid, &l, 1, &r, 1, 0);
        if (n <= 0) break;
        done += (size_t)n;
        if ((size_t)n < chunk) break;
    }
    return done;
}

/* argv[0..LEARN_ARGS-1] of the thread's held execve/execveat, NUL-terminated each, into out; -1 if
 * unreadable (then Python reads it) */
static int held_argv(int32_t tid, char *out, size_t cap, size_t *len) {
    char st[PAIR_STATE + 1];
    int n = syscall_state(tid, st, PAIR_STATE);
    if (n < 0) return -1;
    st[n] = 0;
    long nr;
    unsigned long long a0, a1, a2;
    if (sscanf(st, "%ld %llx %llx %llx", &nr, &a0, &a1, &a2) != 4 || (nr != 59 && nr != 322)) return -1;
    uint64_t ptrs[LEARN_ARGS], argv_ptr = nr == 322 ? a2 : a1;
    size_t got = argv_ptr ? mem_read(tid, argv_ptr, (char *)ptrs, sizeof ptrs) / 8 : 0;
    *len = 0;
    for (size_t i = 0; i < got && ptrs[i]; i++) {
        if (cap - *len < LEARN_ARG_BYTES + 1) return -1;
        size_t r = mem_read(tid, ptrs[i], out + *len, LEARN_ARG_BYTES);
        size_t sl = strnlen(out + *len, r);
        if (sl == r && r < LEARN_ARG_BYTES) return -1; /* no NUL and not at the limit: unreadable */
        *len += sl;
        out[(*len)++] = 0;
    }
    return 0;
}

/* the executable of tid's parent ("" when gone), as Python's cell.learning.parent_exe reads it */
static size_t parent_exe(int32_t tid, char *out, size_t cap) {
    char p[64], buf[512];
    snprintf(p, sizeof p, "/proc/%d/stat", tid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *end = strrchr(buf, ')');
    int ppid = 0;
    if (!end || sscanf(end + 1, " %*c %d", &ppid) != 1 || ppid <= 0) return 0;
    snprintf(p, sizeof p, "/proc/%d/exe", ppid);
    ssize_t l = readlink(p, out, cap);
    return l > 0 ? (size_t)l : 0;
}

static uint64_t fnv(uint64_t h, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)b[i]) * 1099511628211ULL;
    return h;
}

/* count one exec of cookie's file; 0 when it could not be counted (the caller hands it to Python) */
static int learn_exec(Responder *R, uint64_t cookie, int32_t tid) {
    static __thread char argv[LEARN_ARGS * (LEARN_ARG_BYTES + 1)];
    char parent[4096];
    size_t alen;
    if (held_argv(tid, argv, sizeof argv, &alen) < 0) return 0;
    size_t plen = parent_exe(tid, parent, sizeof parent);
    uint64_t h = fnv(fnv(fnv(1469598103934665603ULL, (const char *)&cookie, sizeof cookie), argv, alen), "\1", 1);
    h = fnv(h, parent, plen);
    int ok = 0;
    pthread_mutex_lock(&R->lmu);
    if (!R->learnt) R->learnt = calloc(LEARN_MAX * 2, sizeof *R->learnt);
    for (uint32_t i = (uint32_t)h & (LEARN_MAX * 2 - 1); R->learnt; i = (i + 1) & (LEARN_MAX * 2 - 1)) {
        struct learnt *e = &R->learnt[i];
        if (!e->count) {
            if (R->nlearnt >= LEARN_MAX || R->learnt_bytes + alen + plen > LEARN_BYTES_MAX) break;
            e->argv = malloc(alen + 1);
            e->parent = malloc(plen + 1);
            if (!e->argv || !e->parent) { free(e->argv); free(e->parent); e->argv = e->parent = NULL; break; }
            memcpy(e->argv, argv, alen);
            memcpy(e->parent, parent, plen);
            *e = (struct learnt){cookie, h, 1, (uint32_t)alen, (uint32_t)plen, e->argv, e->parent};
            R->nlearnt++;
            R->learnt_bytes += alen + plen;
            ok = 1;
            break;
        }
        if (e->hash == h && e->cookie == cookie && e->argv_len == alen && e->parent_len == plen &&
            !memcmp(e->argv, argv, alen) && !memcmp(e->parent, parent, plen)) {
            e->count++;
            ok = 1;
            break;
        }
    }
    pthread_mutex_unlock(&R->lmu);
    return ok;
}

static void respond(Responder *R, int fd, int allow) {
    struct fanotify_response r = {.fd = fd, .response = allow ? FAN_ALLOW : FAN_DENY};
    ssize_t w = write(R->fan_fd, &r, sizeof r);
    (void)w;
    close(fd);
}

static void hand_over(Responder *R, const struct fanotify_event_metadata *m, int paired) {
    pthread_mutex_lock(&R->mu);
    if (R->nmiss == R->miss_cap) {
        size_t cap = R->miss_cap ? R->miss_cap * 2 : 64;
        struct miss *n = realloc(R->misses, cap * sizeof *n);
        if (!n) { /* cannot queue it: answer as the fanotify group does when its reader is gone */
            pthread_mutex_unlock(&R->mu);
            respond(R, m->fd, 1);
            return;
        }
        R->misses = n;
        R->miss_cap = cap;
    }
    R->misses[R->nmiss++] = (struct miss){m->fd, m->pid, m->mask, paired};
    R->handed++;
    pthread_mutex_unlock(&R->mu);
    wake_python(R);
}

static void push_record(Responder *R, uint64_t cookie, int32_t tid, int allowed) {
    int was_empty;
    pthread_mutex_lock(&R->mu);
    was_empty = R->head == R->tail;
    if (R->tail - R->head >= RING_CAP) {
        R->dropped++;
        was_empty = 0;
    } else {
        R->ring[R->tail++ % RING_CAP] = (struct rec){cookie, tid, allowed};
    }
    pthread_mutex_unlock(&R->mu);
    if (was_empty) wake_python(R);
}

static void handle(Responder *R, const struct fanotify_event_metadata *m) {
    struct stat st;
    if (!(m->mask & FAN_OPEN_EXEC_PERM) || fstat(m->fd, &st) < 0) { hand_over(R, m, -1); return; }
    uint32_t flags = 0;
    uint64_t cookie = 0;
    char want[PATH_MAX];
    int hit = 0;
    pthread_mutex_lock(&R->mu);
    struct entry *e = find(R, st.st_dev, st.st_ino);
    if (e && e->ctime_ns == (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec &&
        e->mtime_ns == (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec && e->size == st.st_size) {
        hit = 1;
        flags = e->flags;
        cookie = e->cookie;
        snprintf(want, sizeof want, "%s", e->path);
    }
    pthread_mutex_unlock(&R->mu);
    if (hit) {
        char link[48], path[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", m->fd);
        ssize_t n = readlink(link, path, sizeof path - 1);
        hit = n >= 0 && (size_t)n == strlen(want) && !memcmp(path, want, (size_t)n);
    }
    if (!hit) { hand_over(R, m, -1); return; }
    if ((flags & F_LOADER) && !pair_check(R, m->pid)) {
        hand_over(R, m, 0); /* the loader run directly: Python reads what it was asked to load */
        return;
    }
    int allow = flags & F_ALLOW;
    if (allow && (flags & F_LEARN) && !learn_exec(R, cookie, m->pid)) {
        hand_over(R, m, -1); /* not countable here (table full, argv unreadable): Python records it */
        return;
    }
    if (allow && (flags & F_INTERP)) pair_record(R, m->pid); /* its interpreter is opened next */
    respond(R, m->fd, allow);
    pthread_mutex_lock(&R->mu);
    R->hits++;
    pthread_mutex_unlock(&R->mu);
    if (flags & F_RECORD) push_record(R, cookie, m->pid, allow);
}

static void *run(void *arg) {
    Responder *R = arg;
    _Alignas(struct fanotify_event_metadata) char buf[16384];
    struct pollfd p[2] = {{.fd = R->fan_fd, .events = POLLIN}, {.fd = R->wake_fd, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            R->error = errno;
            break;
        }
        if (p[1].revents) break;
        ssize_t n = read(R->fan_fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            R->error = errno;
            break;
        }
        struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
        for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
            if (m->vers != FANOTIFY_METADATA_VERSION) { R->error = EPROTO; break; }
            if (m->fd >= 0) handle(R, m);
        }
        if (R->error) break;
    }
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    R->cpu_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    wake_python(R); /* Python sees the error (or the stop) and takes over */
    return NULL;
}

/* ---- Python API ------------------------------------------------------------------------------- */
static int Responder_init(Responder *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"fan_fd", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i", kwlist, &self->fan_fd)) return -1;
    self->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    self->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    self->pairs = calloc(PAIR_SLOTS, sizeof *self->pairs);
    if (self->wake_fd < 0 || self->notify_fd < 0 || !self->pairs) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    pthread_mutex_init(&self->mu, NULL);
    pthread_mutex_init(&self->pmu, NULL);
    pthread_mutex_init(&self->lmu, NULL);
    self->gen = 1;
    return 0;
}

static PyObject *Responder_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Responder *self = (Responder *)type->tp_alloc(type, 0);
    if (self) self->fan_fd = self->wake_fd = self->notify_fd = -1;
    return (PyObject *)self;
}

static PyObject *Responder_start(Responder *self, PyObject *Py_UNUSED(x)) {
    if (self->running) Py_RETURN_NONE;
    self->error = 0;
    int rc = pthread_create(&self->thread, NULL, run, self);
    if (rc) { errno = rc; return PyErr_SetFromErrno(PyExc_OSError); }
    self->running = 1;
    Py_RETURN_NONE;
}

static void stop_thread(Responder *self) {
    if (!self->running) return;
    uint64_t one = 1;
    ssize_t w = write(self->wake_fd, &one, sizeof one);
    (void)w;
    Py_BEGIN_ALLOW_THREADS
    pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS
    self->running = 0;
    uint64_t v;
    ssize_t r = read(self->wake_fd, &v, sizeof v);
    (void)r;
}

static PyObject *Responder_stop(Responder *self, PyObject *Py_UNUSED(x)) {
    stop_thread(self);
    Py_RETURN_NONE;
}

static void Responder_dealloc(Responder *self) {
    if (self->running) {
        uint64_t one = 1;
        ssize_t w = write(self->wake_fd, &one, sizeof one);
        (void)w;
        pthread_join(self->thread, NULL);
    }
    for (size_t i = 0; i < self->nmiss; i++) close(self->misses[i].fd);
    free(self->misses);
    free_slots(self->slots, self->cap);
    free(self->pairs);
    if (self->learnt)
        for (uint32_t i = 0; i < LEARN_MAX * 2; i++) { free(self->learnt[i].argv); free(self->learnt[i].parent); }
    free(self->learnt);
    if (self->wake_fd >= 0) close(self->wake_fd);
    if (self->notify_fd >= 0) close(self->notify_fd);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* put(dev, ino, ctime_ns, mtime_ns, size, path: bytes, flags, cookie, gen) -> bool */
static PyObject *Responder_put(Responder *self, PyObject *args) {
    unsigned long long dev, ino, cookie, gen;
    long long ctime_ns, mtime_ns, size;
    const char *path;
    Py_ssize_t plen;
    unsigned int flags;
    if (!PyArg_ParseTuple(args, "KKLLLy#IKK", &dev, &ino, &ctime_ns, &mtime_ns, &size, &path, &plen, &flags,
                          &cookie, &gen))
        return NULL;
    if (plen <= 0 || plen >= PATH_MAX || memchr(path, 0, (size_t)plen)) Py_RETURN_FALSE;
    char *copy = strndup(path, (size_t)plen);
    if (!copy) return PyErr_NoMemory();
    int ok = 0;
    pthread_mutex_lock(&self->mu);
    if (gen == self->gen) {
        if (!self->cap || (self->count + 1) * 2 > self->cap) {
            uint32_t cap = self->cap ? self->cap * 2 : 1024;
            if (cap > CACHE_MAX_SLOTS) { /* full: start over (Python re-fills what is still used) */
                free_slots(self->slots, self->cap);
                self->slots = NULL;
                self->cap = self->count = 0;
                cap = 1024;
            }
            if (rebuild(self, cap, 0, 0) < 0) goto out;
        }
        struct entry *e = find(self, dev, ino);
        if (!e) {
            uint32_t i = mix(dev, ino) & (self->cap - 1);
            while (self->slots[i].used) i = (i + 1) & (self->cap - 1);
            e = &self->slots[i];
            self->count++;
        } else {
            free(e->path);
        }
        *e = (struct entry){.dev = dev, .ino = ino, .cookie = cookie, .ctime_ns = ctime_ns, .mtime_ns = mtime_ns,
                            .size = size, .flags = flags, .used = 1, .path = copy};
        copy = NULL;
        ok = 1;
    }
out:
    pthread_mutex_unlock(&self->mu);
    free(copy);
    return PyBool_FromLong(ok);
}

/* clear(dev=None) -> the new generation: drops every entry (or those of one device) */
static PyObject *Responder_clear(Responder *self, PyObject *args) {
    PyObject *devobj = Py_None;
    if (!PyArg_ParseTuple(args, "|O", &devobj)) return NULL;
    unsigned long long dev = 0;
    if (devobj != Py_None) {
        dev = PyLong_AsUnsignedLongLong(devobj);
        if (PyErr_Occurred()) return NULL;
    }
    pthread_mutex_lock(&self->mu);
    if (devobj == Py_None) {
        free_slots(self->slots, self->cap);
        self->slots = NULL;
        self->cap = self->count = 0;
    } else if (self->cap) {
        rebuild(self, self->cap, dev, 1);
    }
    uint64_t gen = ++self->gen;
    pthread_mutex_unlock(&self->mu);
    return PyLong_FromUnsignedLongLong(gen);
}

static PyObject *Responder_generation(Responder *self, PyObject *Py_UNUSED(x)) {
    pthread_mutex_lock(&self->mu);
    uint64_t g = self->gen;
    pthread_mutex_unlock(&self->mu);
    return PyLong_FromUnsignedLongLong(g);
}

/* take() -> (misses [(fd, tid, mask, paired)], records [(cookie, tid, allowed)], dropped, error) */
static PyObject *Responder_take(Responder *self, PyObject *Py_UNUSED(x)) {
    uint64_t v;
    ssize_t r = read(self->notify_fd, &v, sizeof v);
    (void)r;
    pthread_mutex_lock(&self->mu);
    size_t nm = self->nmiss;
    struct miss *ms = self->misses;
    self->misses = NULL;
    self->nmiss = self->miss_cap = 0;
    uint32_t nr = self->tail - self->head;
    struct rec *rs = nr ? malloc(nr * sizeof *rs) : NULL;
    if (rs)
        for (uint32_t i = 0; i < nr; i++) rs[i] = self->ring[(self->head + i) % RING_CAP];
    else
        nr = 0;
    self->head = self->tail;
    uint64_t dropped = self->dropped;
    self->dropped = 0;
    pthread_mutex_unlock(&self->mu);
    PyObject *lm = PyList_New((Py_ssize_t)nm), *lr = PyList_New(nr);
    if (lm && lr) {
        for (size_t i = 0; i < nm; i++)
            PyList_SET_ITEM(lm, i, Py_BuildValue("iiKi", ms[i].fd, ms[i].tid, (unsigned long long)ms[i].mask,
                                                 ms[i].paired));
        for (uint32_t i = 0; i < nr; i++)
            PyList_SET_ITEM(lr, i, Py_BuildValue("Kii", (unsigned long long)rs[i].cookie, rs[i].tid,
                                                 rs[i].allowed));
    }
    free(ms);
    free(rs);
    if (!lm || !lr || PyErr_Occurred()) {
        Py_XDECREF(lm);
        Py_XDECREF(lr);
        return NULL;
    }
    return Py_BuildValue("NNKi", lm, lr, (unsigned long long)dropped, self->running ? self->error : 0);
}

/* learned() -> [(cookie, argv: bytes, NUL-terminated each, parent: bytes, count)] since the last call */
static PyObject *Responder_learned(Responder *self, PyObject *Py_UNUSED(x)) {
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    pthread_mutex_lock(&self->lmu);
    for (uint32_t i = 0; self->learnt && i < LEARN_MAX * 2 && self->nlearnt; i++) {
        struct learnt *e = &self->learnt[i];
        if (!e->count) continue;
        PyObject *row = Py_BuildValue("Ky#y#K", (unsigned long long)e->cookie, e->argv, (Py_ssize_t)e->argv_len,
                                      e->parent, (Py_ssize_t)e->parent_len, (unsigned long long)e->count);
        if (!row || PyList_Append(out, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(out);
            pthread_mutex_unlock(&self->lmu);
            return NULL;
        }
        Py_DECREF(row);
        free(e->argv);
        free(e->parent);
        *e = (struct learnt){0};
        self->nlearnt--;
    }
    self->learnt_bytes = 0;
    pthread_mutex_unlock(&self->lmu);
    return out;
}

static PyObject *Responder_stats(Responder *self, PyObject *Py_UNUSED(x)) {
    int64_t cpu_ns = self->cpu_ns;
    clockid_t cid;
    struct timespec ts;
    if (self->running && !pthread_getcpuclockid(self->thread, &cid) && !clock_gettime(cid, &ts))
        cpu_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    pthread_mutex_lock(&self->mu);
    PyObject *d = Py_BuildValue("{sKsKsIsL}", "answered", (unsigned long long)self->hits, "handed",
                                (unsigned long long)self->handed, "cached", self->count, "cpu_us",
                                (long long)(cpu_ns / 1000));
    pthread_mutex_unlock(&self->mu);
    return d;
}

static PyObject *Responder_program_exec(Responder *self, PyObject *args) {
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    pair_record(self, tid);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Responder_is_interpreter(Responder *self, PyObject *args) {
    int tid, ok;
    if (!PyArg_ParseTuple(args, "i", &tid)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    ok = pair_check(self, tid);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(ok);
}

static PyObject *Responder_forget(Responder *self, PyObject *args) {
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid)) return NULL;
    pthread_mutex_lock(&self->pmu);
    struct pair *p = pair_slot(self, tid, 0);
    if (p) { p->tid = -1; self->plive--; }
    pthread_mutex_unlock(&self->pmu);
    Py_RETURN_NONE;
}

static PyObject *Responder_notify_fd(Responder *self, void *Py_UNUSED(c)) { return PyLong_FromLong(self->notify_fd); }

static PyMethodDef Responder_methods[] = {
    {"start", (PyCFunction)Responder_start, METH_NOARGS, "start answering in the native thread"},
    {"stop", (PyCFunction)Responder_stop, METH_NOARGS, "stop the native thread (events then wait for Python)"},
    {"put", (PyCFunction)Responder_put, METH_VARARGS,
     "put(dev, ino, ctime_ns, mtime_ns, size, path, flags, cookie, generation) -> cached"},
    {"clear", (PyCFunction)Responder_clear, METH_VARARGS, "clear(dev=None) -> new generation"},
    {"generation", (PyCFunction)Responder_generation, METH_NOARGS, "the cache generation puts must carry"},
    {"take", (PyCFunction)Responder_take, METH_NOARGS,
     "(misses [(fd, tid, mask, paired)], records [(cookie, tid, allowed)], dropped, error)"},
    {"stats", (PyCFunction)Responder_stats, METH_NOARGS, "answered natively, handed to Python, cached"},
    {"learned", (PyCFunction)Responder_learned, METH_NOARGS, "execs counted while learning, since the last call"},
    {"program_exec", (PyCFunction)Responder_program_exec, METH_VARARGS, "record tid's program exec"},
    {"is_interpreter", (PyCFunction)Responder_is_interpreter, METH_VARARGS, "is tid opening its program's interpreter"},
    {"forget", (PyCFunction)Responder_forget, METH_VARARGS, "drop tid's pairing record"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Responder_getset[] = {
    {"notify_fd", (getter)Responder_notify_fd, NULL, "readable when take() has work", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ResponderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "garrison.kernel._fanperm.Responder",
    .tp_basicsize = sizeof(Responder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FAN_OPEN_EXEC_PERM answered natively from a verdict cache; misses handed to Python",
    .tp_new = Responder_new,
    .tp_init = (initproc)Responder_init,
    .tp_dealloc = (destructor)Responder_dealloc,
    .tp_methods = Responder_methods,
    .tp_getset = Responder_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fanperm", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__fanperm(void) {
    if (PyType_Ready(&ResponderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ResponderType);
    if (PyModule_AddObject(m, "Responder", (PyObject *)&ResponderType) < 0) return NULL;
    PyModule_AddIntConstant(m, "F_ALLOW", F_ALLOW);
    PyModule_AddIntConstant(m, "F_LOADER", F_LOADER);
    PyModule_AddIntConstant(m, "F_INTERP", F_INTERP);
    PyModule_AddIntConstant(m, "F_RECORD", F_RECORD);
    return m;
}
