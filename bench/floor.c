/* floor: the least CPU a watchd probe can cost — each file the probe needs, opened, read and
 * closed once per walk, and nothing else (no parsing beyond what finds the next file, no
 * wake-up, no bookkeeping).
 *
 *   floor [--walks N] [--min-cpu-ms MS] ROOT cpu|cpu,io
 *   floor [--walks N] [--min-cpu-ms MS] cgroup PATH
 *
 * The /proc modes walk the tree below ROOT (watchd's pid) the way watchd's probe does
 * (src/probe/walk.rs): ROOT's stat and children file, then breadth-first, for every pid
 * listed: its stat (whose ppid must be the lister's or ROOT's, as watchd checks), and, unless
 * it is a zombie, its children: /proc/P/task/P/children for a one-thread process, every
 * /proc/P/task/T/children otherwise (a child is listed under the thread that forked it). Mode
 * cpu,io then reads each member's io. stat and io are one record each and take one read() that
 * does not fill the buffer, as watchd reads them; children files are read to EOF.
 * The cgroup mode reads PATH/cgroup.procs and PATH/cpu.stat, each to EOF.
 *
 * One warm-up walk, then walks back to back: at least N (default 20), and on until MS ms of
 * CPU (default 500) are used. Each walk is timed with CLOCK_PROCESS_CPUTIME_ID.
 *
 * Prints one line:
 *   ok walks=.. members=.. files=.. reads=.. mean_us=.. median_us=.. min_us=.. max_us=..
 * members: processes the last walk found (ROOT excluded) or pids in cgroup.procs; files and
 * reads: opens and read() calls of the last walk. Or `fail ...` and exits 1 (ROOT unreadable,
 * no children files, a cgroup file missing).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_PID 4194304 /* the kernel's PID_MAX_LIMIT */

struct walk {
    int with_io;
    int root;
    int *members; /* pids found, breadth-first */
    int *threads; /* their thread counts (0: a zombie, nothing to visit; unknown: 1, as watchd) */
    size_t n, cap;
    int *kids; /* pids listed by the children files being read */
    size_t nkids, kids_cap;
    uint8_t *seen; /* bitmap over pids: a pid reparented mid-walk is listed twice */
    char *buf;
    size_t buf_cap;
    long files, reads;
};

static void die(const char *what) {
    printf("fail %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *grow(void *p, size_t *cap, size_t elem) {
    *cap = *cap ? *cap * 2 : 1024;
    p = realloc(p, *cap * elem);
    if (!p) die("realloc");
    return p;
}

/* Reads the file into w->buf; returns its length, or -1. one_record: a read that does not
 * fill the buffer is the whole file (no second read for the 0 of EOF). */
static ssize_t slurp(struct walk *w, const char *path, int one_record) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    w->files++;
    size_t len = 0;
    for (;;) {
        if (len == w->buf_cap) w->buf = grow(w->buf, &w->buf_cap, 1);
        ssize_t n = read(fd, w->buf + len, w->buf_cap - len);
        w->reads++;
        if (n < 0) {
            close(fd);
            return -1;
        }
        len += (size_t)n;
        if (n == 0 || (one_record && len < w->buf_cap)) break;
    }
    close(fd);
    return (ssize_t)len;
}

/* Field `field` of a stat line, numbered as in proc(5) (3 = state, the first after the comm's
 * last ')'); NULL if the line is shorter. */
static const char *stat_field(const char *s, size_t len, int field) {
    const char *end = s + len, *p = memrchr(s, ')', len);
    if (!p) return NULL;
    p++;
    for (int f = 3;; f++) {
        while (p < end && *p == ' ') p++;
        if (f == field) break;
        while (p < end && *p != ' ') p++;
    }
    return p < end ? p : NULL;
}

/* A process's state, ppid and thread count from its stat; 0 if unreadable. */
static int read_stat(struct walk *w, int pid, char *state, int *ppid, int *threads) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    ssize_t len = slurp(w, path, 1);
    if (len <= 0) return 0;
    const char *s = stat_field(w->buf, (size_t)len, 3);
    const char *pp = stat_field(w->buf, (size_t)len, 4);
    const char *th = stat_field(w->buf, (size_t)len, 20);
    if (!s || !pp || !th) return 0;
    *state = *s;
    *ppid = atoi(pp);
    *threads = atoi(th);
    return 1;
}

/* Appends the pids of /proc/<pid>/task/<tid>/children to kids; 0 if unreadable. */
static int read_children(struct walk *w, int pid, int tid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, tid);
    ssize_t len = slurp(w, path, 0);
    if (len < 0) return 0;
    long v = -1;
    for (ssize_t i = 0; i <= len; i++) {
        char c = i < len ? w->buf[i] : ' ';
        if (c >= '0' && c <= '9') {
            v = (v < 0 ? 0 : v * 10) + (c - '0');
            if (v >= MAX_PID) v = MAX_PID; /* garbage: skipped below */
        } else if (v >= 0) {
            if (v > 0 && v < MAX_PID) {
                if (w->nkids == w->kids_cap) w->kids = grow(w->kids, &w->kids_cap, sizeof(int));
                w->kids[w->nkids++] = (int)v;
            }
            v = -1;
        }
    }
    return 1;
}

/* Every thread's children file (a multi-threaded process, or one whose count is unknown). */
static void read_all_children(struct walk *w, int pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return;
    w->files++;
    struct dirent *e;
    while ((e = readdir(d))) {
        int tid = atoi(e->d_name);
        if (tid > 0) read_children(w, pid, tid);
    }
    closedir(d);
}

static void add_kids_of(struct walk *w, int pid, int threads) {
    w->nkids = 0;
    if (threads == 1)
        read_children(w, pid, pid);
    else if (threads != 0)
        read_all_children(w, pid);
}

/* One probe's worth of /proc reads; returns the number of members, or -1. */
static long walk_proc(struct walk *w) {
    char state;
    int ppid, threads;
    w->files = w->reads = 0;
    for (size_t i = 0; i < w->n; i++) w->seen[w->members[i] / 8] = 0;
    w->n = 0;
    if (!read_stat(w, w->root, &state, &ppid, &threads)) return -1;
    w->nkids = 0;
    if (!read_children(w, w->root, w->root)) return -1;
    if (threads != 1) {
        w->nkids = 0;
        read_all_children(w, w->root);
    }
    int parent = w->root;
    size_t next = 0;
    for (;;) {
        for (size_t k = 0; k < w->nkids; k++) {
            int pid = w->kids[k];
            if (pid == w->root || (w->seen[pid / 8] & (1 << (pid % 8)))) continue;
            if (!read_stat(w, pid, &state, &ppid, &threads)) continue;
            if (ppid != parent && ppid != w->root) continue; /* a stranger on a reused pid */
            w->seen[pid / 8] |= (uint8_t)(1 << (pid % 8));
            if (w->n == w->cap) {
                w->cap = w->cap ? w->cap * 2 : 1024;
                w->members = realloc(w->members, w->cap * sizeof(int));
                w->threads = realloc(w->threads, w->cap * sizeof(int));
                if (!w->members || !w->threads) die("realloc");
            }
            w->members[w->n] = pid;
            w->threads[w->n] = (state == 'Z' || state == 'X') ? 0 : (threads > 1 ? threads : 1);
            w->n++;
        }
        if (next == w->n) break;
        parent = w->members[next];
        add_kids_of(w, parent, w->threads[next]);
        next++;
    }
    if (w->with_io) {
        char path[64];
        for (size_t i = 0; i < w->n; i++) {
            snprintf(path, sizeof path, "/proc/%d/io", w->members[i]);
            slurp(w, path, 1);
        }
    }
    return (long)w->n;
}

/* cgroup.procs and cpu.stat; returns the number of pids listed, or -1. */
static long walk_cgroup(struct walk *w, const char *procs, const char *cpu_stat) {
    w->files = w->reads = 0;
    ssize_t len = slurp(w, procs, 0);
    if (len < 0) return -1;
    long pids = 0;
    for (ssize_t i = 0; i < len; i++) pids += w->buf[i] == '\n';
    if (slurp(w, cpu_stat, 0) <= 0) return -1;
    return pids;
}

static int64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int usage(void) {
    fprintf(stderr, "usage: floor [--walks N] [--min-cpu-ms MS] ROOT cpu|cpu,io\n"
                    "       floor [--walks N] [--min-cpu-ms MS] cgroup PATH\n");
    return 2;
}

int main(int argc, char **argv) {
    long min_walks = 20, min_cpu_ms = 500;
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--walks") == 0)
            min_walks = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--min-cpu-ms") == 0)
            min_cpu_ms = atol(argv[i + 1]);
        else
            return usage();
    }
    if (argc - i != 2 || min_walks < 1 || min_cpu_ms < 0) return usage();

    struct walk w = {0};
    char procs[4096], cpu_stat[4096];
    int cgroup = strcmp(argv[i], "cgroup") == 0;
    if (cgroup) {
        snprintf(procs, sizeof procs, "%s/cgroup.procs", argv[i + 1]);
        snprintf(cpu_stat, sizeof cpu_stat, "%s/cpu.stat", argv[i + 1]);
    } else {
        w.root = atoi(argv[i]);
        if (w.root <= 0 || w.root >= MAX_PID) return usage();
        if (strcmp(argv[i + 1], "cpu,io") == 0)
            w.with_io = 1;
        else if (strcmp(argv[i + 1], "cpu") != 0)
            return usage();
        w.seen = calloc(MAX_PID / 8, 1);
        if (!w.seen) die("calloc");
    }
    w.buf_cap = 4096; /* watchd's buffer starts at 4 KiB too */
    w.buf = malloc(w.buf_cap);
    if (!w.buf) die("malloc");

    size_t cap = 0, walks = 0;
    int64_t *t = NULL, used = 0;
    long members = 0;
    for (long k = -1; k < min_walks || used < min_cpu_ms * 1000000; k++) {
        int64_t t0 = cpu_ns();
        members = cgroup ? walk_cgroup(&w, procs, cpu_stat) : walk_proc(&w);
        int64_t dt = cpu_ns() - t0;
        if (members < 0) {
            printf("fail %s unreadable\n",
                   cgroup ? "a cgroup file" : "the root's stat or children file");
            return 1;
        }
        if (k < 0) continue; /* warm-up: dentries, buffers */
        if (walks == cap) t = grow(t, &cap, sizeof *t);
        t[walks++] = dt;
        used += dt;
    }
    qsort(t, walks, sizeof *t, cmp_i64);
    printf("ok walks=%zu members=%ld files=%ld reads=%ld mean_us=%.3f median_us=%.3f "
           "min_us=%.3f max_us=%.3f\n",
           walks, members, w.files, w.reads, (double)used / (double)walks / 1e3,
           (double)t[(walks - 1) / 2] / 1e3, (double)t[0] / 1e3, (double)t[walks - 1] / 1e3);
    return 0;
}
