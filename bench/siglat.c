/* siglat: signal forwarding latency through a process wrapper.
 *
 *   siglat [--cpus SENDER:WRAPPER] [--raw FILE] COUNT WRAPPER [ARGS...] /path/to/siglat --child
 *
 * --raw FILE also writes every latency, in ns, one per line, in the order measured.
 * With --cpus, the sender runs on CPU SENDER and the wrapper (and so its child, which inherits
 * the affinity) on CPU WRAPPER: `0:0` keeps every hop on one CPU, `0:1` makes the signal cross
 * to another CPU and the acknowledgement cross back. Without it the scheduler places them,
 * and the figures jump between those two cases from one run to the next.
 *
 * The sender (this process) starts WRAPPER..., whose command is `siglat --child`. The child
 * installs a SIGUSR1 handler, then sends its pid on a pipe it inherited (fd number in
 * SIGLAT_FD; every wrapper measured passes the environment and open descriptors through).
 * The sender then waits 20 ms, so that no wrapper is caught between fork and the line that
 * records its child's pid (GNU timeout exits on a signal that lands there, about 1 run in
 * 40 here without the pause; a real user does not signal that fast). COUNT times, the sender reads CLOCK_MONOTONIC, sends SIGUSR1 to the *wrapper's* pid, and
 * waits for the child's handler to write back the CLOCK_MONOTONIC it read on entry. One
 * signal is in flight at a time, so none can coalesce. Latency = handler entry - send.
 *
 * Prints one line:  ok n=COUNT median_us=.. p99_us=.. mean_us=.. min_us=.. max_us=.. extra=..
 * (extra = acknowledgements beyond one per signal: a wrapper that delivered twice), or
 * `fail ...` and exits 1. When done, the wrapper gets SIGTERM (forwarded to the child by all
 * wrappers measured), then SIGKILL if it has not exited within 2 s; the child gets SIGKILL in
 * any case, so a wrapper that died without forwarding leaves nothing behind. The wrapper's
 * stdin and stdout are /dev/null, so a stray child cannot hold the caller's pipe open.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int ack_fd = -1;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* clock_gettime and write are async-signal-safe. */
static void on_usr1(int sig) {
    (void)sig;
    int saved = errno;
    int64_t t = now_ns();
    ssize_t n = write(ack_fd, &t, sizeof t);
    (void)n;
    errno = saved;
}

static int child_main(void) {
    const char *fd = getenv("SIGLAT_FD");
    if (!fd) {
        fprintf(stderr, "siglat --child: SIGLAT_FD is not set\n");
        return 2;
    }
    ack_fd = atoi(fd);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGUSR1, &sa, NULL) < 0) {
        perror("siglat --child: sigaction");
        return 2;
    }
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &unblock, NULL);
    int64_t ready = getpid();
    if (write(ack_fd, &ready, sizeof ready) != sizeof ready) {
        perror("siglat --child: write");
        return 2;
    }
    for (;;)
        pause();
}

/* Reads one 8-byte acknowledgement within timeout_ms: 1 on success, 0 on timeout, -1 on EOF. */
static int read_ack(int fd, int64_t *out, int timeout_ms) {
    size_t got = 0;
    char *p = (char *)out;
    while (got < sizeof *out) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        ssize_t n = read(fd, p + got, sizeof *out - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 1;
}

static int pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void stop_wrapper(pid_t pid, pid_t child) {
    kill(pid, SIGTERM);
    int i;
    for (i = 0; i < 200; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            break;
        usleep(10000);
    }
    if (i == 200) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    /* Normally already gone (the wrapper forwarded SIGTERM); if the wrapper died without
     * forwarding, the pid is still the orphaned child's (it is nobody's zombie for long:
     * init or a subreaper reaps it), so this is a last resort, not a hazard. */
    if (child > 1)
        kill(child, SIGKILL);
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "--child") == 0)
        return child_main();
    int sender_cpu = -1, wrapper_cpu = -1;
    const char *raw = NULL;
    for (;;) {
        if (argc >= 3 && strcmp(argv[1], "--cpus") == 0) {
            if (sscanf(argv[2], "%d:%d", &sender_cpu, &wrapper_cpu) != 2 || sender_cpu < 0 ||
                wrapper_cpu < 0) {
                fprintf(stderr, "siglat: bad --cpus '%s' (want SENDER:WRAPPER)\n", argv[2]);
                return 2;
            }
        } else if (argc >= 3 && strcmp(argv[1], "--raw") == 0) {
            raw = argv[2];
        } else {
            break;
        }
        argv += 2;
        argc -= 2;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: siglat [--cpus S:W] [--raw FILE] COUNT WRAPPER [ARGS...] "
                        "SIGLAT --child\n");
        return 2;
    }
    long count = strtol(argv[1], NULL, 10);
    if (count < 1) {
        fprintf(stderr, "siglat: bad COUNT '%s'\n", argv[1]);
        return 2;
    }
    int fds[2];
    if (pipe(fds) < 0) { /* no O_CLOEXEC: the write end must reach the child through exec */
        perror("siglat: pipe");
        return 2;
    }
    char fdtext[16];
    snprintf(fdtext, sizeof fdtext, "%d", fds[1]);
    setenv("SIGLAT_FD", fdtext, 1);
    pid_t pid = fork();
    if (pid < 0) {
        perror("siglat: fork");
        return 2;
    }
    if (pid == 0) {
        if (wrapper_cpu >= 0 && pin(wrapper_cpu) < 0) {
            perror("siglat: sched_setaffinity (wrapper)");
            _exit(126);
        }
        close(fds[0]);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            if (null > 2)
                close(null);
        }
        execvp(argv[2], argv + 2);
        perror("siglat: exec");
        _exit(127);
    }
    close(fds[1]);
    int rfd = fds[0];
    if (sender_cpu >= 0 && pin(sender_cpu) < 0) {
        perror("siglat: sched_setaffinity (sender)");
        stop_wrapper(pid, 0);
        return 2;
    }
    int64_t t;
    if (read_ack(rfd, &t, 10000) != 1 || t <= 1) {
        printf("fail: the child never said it was ready\n");
        stop_wrapper(pid, 0);
        return 1;
    }
    pid_t child = (pid_t)t;
    usleep(20000);
    int64_t *lat = calloc((size_t)count, sizeof *lat);
    if (!lat)
        return 2;
    long extra = 0;
    for (long i = 0; i < count; i++) {
        int64_t sent = now_ns();
        if (kill(pid, SIGUSR1) < 0) {
            printf("fail: kill(wrapper, SIGUSR1): %s (signal %ld)\n", strerror(errno), i + 1);
            stop_wrapper(pid, child);
            return 1;
        }
        int r = read_ack(rfd, &t, 2000);
        if (r != 1) {
            int st;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                printf("fail: signal %ld: the wrapper %s %d instead of forwarding it\n", i + 1,
                       WIFSIGNALED(st) ? "died of signal" : "exited with status",
                       WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
                if (child > 1)
                    kill(child, SIGKILL);
                return 1;
            }
            printf("fail: no acknowledgement of signal %ld within 2 s (%s)\n", i + 1,
                   r == 0 ? "timeout" : "the child is gone");
            stop_wrapper(pid, child);
            return 1;
        }
        lat[i] = t - sent;
        /* A duplicate delivery would show up as a second acknowledgement: drain and count. */
        struct pollfd pfd = {.fd = rfd, .events = POLLIN};
        while (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN)) {
            if (read_ack(rfd, &t, 100) != 1)
                break;
            extra++;
        }
    }
    stop_wrapper(pid, child);
    if (raw) {
        FILE *f = fopen(raw, "w");
        if (!f) {
            perror("siglat: --raw");
            return 2;
        }
        for (long i = 0; i < count; i++)
            fprintf(f, "%lld\n", (long long)lat[i]);
        if (fclose(f) != 0) {
            perror("siglat: --raw");
            return 2;
        }
    }
    qsort(lat, (size_t)count, sizeof *lat, cmp64);
    double sum = 0;
    for (long i = 0; i < count; i++)
        sum += (double)lat[i];
    /* Nearest-rank percentiles. */
    long med = (count + 1) / 2 - 1;
    long p99 = (long)((99 * count + 99) / 100) - 1;
    printf("ok n=%ld median_us=%.1f p99_us=%.1f mean_us=%.1f min_us=%.1f max_us=%.1f extra=%ld\n",
           count, lat[med] / 1e3, lat[p99] / 1e3, sum / count / 1e3, lat[0] / 1e3,
           lat[count - 1] / 1e3, extra);
    free(lat);
    return 0;
}
