#!/usr/bin/env python3
"""watchd (dynamic and static builds) side by side with `tini -s`, `dumb-init` and `timeout 1h`:
start-up, resident memory, signal forwarding latency, probe cost and idle wake-ups. Run through
bench/run.sh, which builds both watchd binaries and the signal helper and installs the other
wrappers; see bench/README.md for what each number means.

Everything this script starts carries BENCH_RUN_TOKEN in its environment, and the script is a
child subreaper, so `cleanup()` can find and kill every process of the run (orphans included)
however it ends.
"""

import argparse
import ctypes
import datetime
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

TOKEN_VAR = "BENCH_RUN_TOKEN"
SLEEP_FOREVER = ["sleep", "100000"]

FULL = {
    "startup_warmup": 50,
    "startup_runs": 1000,  # per command, split over two hyperfine passes in opposite orders
    "signals": 1000,
    "signal_rounds": 4,
    "settle_s": 1.0,
    "wakeup_span_s": 60.0,
    "probe_sizes": [1, 100, 1000, 5000],
    "probe_span_s": 10.0,
    "floor_walks": 20,  # at least, per floor measurement ...
    "floor_cpu_ms": 500,  # ... and on until this much CPU is spent
}
QUICK = {
    "startup_warmup": 3,
    "startup_runs": 20,
    "signals": 100,
    "signal_rounds": 2,
    "settle_s": 0.6,
    "wakeup_span_s": 5.0,
    "probe_sizes": [1, 10, 50],
    "probe_span_s": 1.0,
    "floor_walks": 5,
    "floor_cpu_ms": 100,
}
# The nominal probe interval; larger trees get a longer one (probe_interval).
PROBE_INTERVAL_S = 0.1
# What each evidence set makes a /proc probe read per member (the floor reads exactly this).
EVIDENCE_SETS = ("cpu,io", "cpu")
# 1,000 processes through a cgroup with --evidence cpu: the target, in µs.
CGROUP_TARGET_N, CGROUP_TARGET_US = 1000, 1000.0
FLOOR_RATIO_TARGET = 1.2
NO_CGROUP_FLAG = "n/a (no --cgroup in this build)"
# The watchd builds (column keys), and the tini builds every watchd build is compared with.
BUILDS = ("watchd", "watchd-static")
REFERENCES = ("tini", "tini-static")
SHORT = {"watchd": "watchd", "watchd-static": "watchd (static)", "tini": "tini",
         "tini-static": "tini-static"}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_status(pid):
    """Fields of /proc/<pid>/status as strings; {} if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(
                line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line
            )
    except OSError:
        return {}


def kib(field):
    """'  1234 kB' -> 1234."""
    return int(field.split()[0])


def pss_kib(pid):
    """Proportional set size (shared pages divided among their users), or None."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def ctxt_switches(pid):
    s = proc_status(pid)
    return int(s["voluntary_ctxt_switches"]), int(s["nonvoluntary_ctxt_switches"])


def cpu_ns(pid):
    """CPU time the process has run, in ns: schedstat's first field, else utime+stime ticks."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def io_rchar(pid):
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def parent_map():
    """pid -> ppid for every process we can read."""
    out = {}
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
            out[pid] = int(rest[1])
        except (OSError, IndexError, ValueError):
            pass
    return out


def descendants(root):
    children = {}
    for pid, ppid in parent_map().items():
        children.setdefault(ppid, []).append(pid)
    out, queue = [], [root]
    while queue:
        for c in children.get(queue.pop(), []):
            out.append(c)
            queue.append(c)
    return out


# ---------------------------------------------------------------------------------------------
# Process bookkeeping


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log("warning: cannot become a child subreaper; orphans are found by token only")


def reap_orphans():
    """Collect zombies of processes adopted as subreaper (never our Popen children, which
    are always waited for before this runs)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def token_holders(token):
    """Every process whose environment carries this run's token, except us and our
    ancestors."""
    needle = f"{TOKEN_VAR}={token}".encode()
    # Our ancestors carry the token too (run.sh, and a pyenv-style `python3` shim in between).
    parents = parent_map()
    mine, pid = set(), os.getpid()
    while pid > 1 and pid not in mine:
        mine.add(pid)
        pid = parents.get(pid, 0)
    out = []
    for pid in all_pids():
        if pid in mine:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            out.append(pid)
    return out


def kill_tree(proc):
    """SIGKILL a wrapper and everything below it (the orphans come to us: we are the
    subreaper), then reap. A wrapper that has already exited and been reaped is not looked
    at (its pid may be another process's by now); the end-of-run sweep takes its leftovers."""
    # While it is unreaped, proc.pid cannot be reused: poll() is the last look at it.
    victims = [proc.pid] + descendants(proc.pid) if proc.poll() is None else []
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reap_orphans()
        left = [p for p in victims if os.path.exists(f"/proc/{p}")]
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def cleanup(token):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = token_holders(token)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
        reap_orphans()
    reap_orphans()


def start(argv, errlog):
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errlog
    )


def wait_for(cond, timeout, what, poll_s=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(poll_s)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------------------------------------
# The contenders


class Wrapper:
    def __init__(self, key, label, prefix, signal_prefix=None, note=None):
        self.key = key
        self.label = label
        self.prefix = prefix
        # How to run it for the signal test, if different (and why, in `note`).
        self.signal_prefix = prefix if signal_prefix is None else signal_prefix
        self.note = note


def contenders(watchd, watchd_static=None):
    ws = [Wrapper("watchd", "watchd", [watchd, "--"])]
    if watchd_static:
        ws.append(Wrapper("watchd-static", "watchd (static)", [watchd_static, "--"]))
    ws.append(Wrapper("tini", "tini -s", ["tini", "-s", "--"]))
    if shutil.which("tini-static"):
        ws.append(Wrapper("tini-static", "tini-static -s", ["tini-static", "-s", "--"]))
    ws += [
        Wrapper(
            "dumb-init",
            "dumb-init",
            ["dumb-init", "--"],
            ["dumb-init", "--single-child", "--"],
            "signals: --single-child (the default forwards to the child's process group)",
        ),
        Wrapper(
            "timeout",
            "timeout 1h",
            ["timeout", "1h"],
            ["timeout", "--foreground", "-s", "USR1", "1h"],
            "signals: --foreground -s USR1 (plain timeout dies of SIGUSR1)",
        ),
        Wrapper("none", "no wrapper", []),
    ]
    return ws


def watchd_builds(ws):
    """(key, binary) of every watchd build among the contenders."""
    return [(w.key, w.prefix[0]) for w in ws if w.key in BUILDS]


def elf_kind(path):
    """'dynamic', 'static' or 'static-pie' from the ELF header and program headers (PT_INTERP
    present = dynamic; a position-independent executable without one = static-pie)."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
        if data[:4] != b"\x7fELF" or data[4] != 2:
            return "not a 64-bit ELF"
        phoff = int.from_bytes(data[32:40], "little")
        phentsize = int.from_bytes(data[54:56], "little")
        phnum = int.from_bytes(data[56:58], "little")
        for i in range(phnum):
            off = phoff + i * phentsize
            if int.from_bytes(data[off : off + 4], "little") == 3:
                return "dynamic"
        return "static-pie" if int.from_bytes(data[16:18], "little") == 3 else "static"
    except (OSError, IndexError):
        return "unknown"


# ---------------------------------------------------------------------------------------------
# Measurements


def measure_startup(ws, cfg, tmp, res):
    """hyperfine -N over `X -- /bin/true`, in two passes of opposite order, medians."""
    cmds = [shlex.join(w.prefix + ["/bin/true"]) for w in ws]
    times = {c: [] for c in cmds}
    user = {c: [] for c in cmds}
    system = {c: [] for c in cmds}
    runs = max(cfg["startup_runs"] // 2, 5)
    for n, order in enumerate([cmds, cmds[::-1]]):
        out = os.path.join(tmp, f"hyperfine{n}.json")
        argv = ["hyperfine", "-N", "--style", "none", "--warmup", str(cfg["startup_warmup"]),
                "--runs", str(runs), "--export-json", out] + order
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(out) as f:
            for r in json.load(f)["results"]:
                times[r["command"]] += r["times"]
                user[r["command"]].append(r["user"])
                system[r["command"]].append(r["system"])
    for w, c in zip(ws, cmds):
        t = times[c]
        res["startup"][w.key] = {
            "command": c,
            "runs": len(t),
            "median_ms": statistics.median(t) * 1e3,
            "mean_ms": statistics.fmean(t) * 1e3,
            "stddev_ms": statistics.stdev(t) * 1e3,
            "min_ms": min(t) * 1e3,
            "user_ms": statistics.fmean(user[c]) * 1e3,
            "system_ms": statistics.fmean(system[c]) * 1e3,
        }


def measure_idle(ws, cfg, errlog, res):
    """RSS after settling, then context switches over a fixed span, all wrappers at once."""
    variants = []
    for w in ws:
        if w.key == "none":
            continue
        if w.key in BUILDS:
            b = w.prefix[0]
            variants += [
                (w.key, [b, "--"]),
                (f"{w.key}-stall-5s", [b, "--stall", "1h", "--interval", "5s", "--"]),
                (f"{w.key}-stall-100ms", [b, "--stall", "1h", "--interval", "100ms", "--"]),
            ]
        else:
            variants.append((w.key, w.prefix))
    procs = {}
    try:
        for key, prefix in variants:
            procs[key] = start(prefix + SLEEP_FOREVER, errlog)
        for key, p in procs.items():
            wait_for(lambda p=p: descendants(p.pid), 10, f"{key}'s child to start")
        time.sleep(cfg["settle_s"])
        # watchd at 100 ms must be probing: its /proc reads make rchar grow.
        fast = [f"{key}-stall-100ms" for key, _ in watchd_builds(ws)]
        r0 = {k: io_rchar(procs[k].pid) for k in fast}
        time.sleep(0.3)
        r1 = {k: io_rchar(procs[k].pid) for k in fast}
        probing = {k: r0[k] is not None and r1[k] is not None and r1[k] > r0[k] for k in fast}
        for key, p in procs.items():
            s = proc_status(p.pid)
            res["rss"][key] = {
                "vmrss_kib": kib(s["VmRSS"]),
                "pss_kib": pss_kib(p.pid),
                "rss_anon_kib": kib(s.get("RssAnon", "0 kB")),
                "rss_file_kib": kib(s.get("RssFile", "0 kB")),
                "vmhwm_kib": kib(s["VmHWM"]),
            }
        for k in fast:
            res["rss"][k]["probing_verified"] = probing[k]
            res["rss"][k]["settled_s"] = cfg["settle_s"] + 0.3
            if not probing[k]:
                raise RuntimeError(f"{k} showed no /proc reads while settling")
        before = {k: ctxt_switches(p.pid) for k, p in procs.items()}
        cpu_before = {k: cpu_ns(p.pid) for k, p in procs.items()}
        t0 = time.monotonic()
        time.sleep(cfg["wakeup_span_s"])
        after = {k: ctxt_switches(p.pid) for k, p in procs.items()}
        cpu_after = {k: cpu_ns(p.pid) for k, p in procs.items()}
        span = time.monotonic() - t0
        for key, p in procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{key} exited during the idle span")
            vol = after[key][0] - before[key][0]
            inv = after[key][1] - before[key][1]
            res["wakeups"][key] = {
                "span_s": span,
                "voluntary": vol,
                "nonvoluntary": inv,
                "per_minute": (vol + inv) * 60.0 / span,
                "cpu_us_per_minute": (cpu_after[key] - cpu_before[key]) / 1e3 * 60.0 / span,
            }
    finally:
        for p in procs.values():
            kill_tree(p)


def nearest_rank(sorted_values, q):
    return sorted_values[max(math.ceil(q * len(sorted_values)) - 1, 0)]


def measure_signals(ws, siglat, cfg, tmp, res):
    """siglat, in rounds: each round gives every wrapper its share of the signals, in a rotated
    order, so a disturbance of the machine does not land on one wrapper only."""
    cpus = sorted(os.sched_getaffinity(0))
    modes = [("same-cpu", f"{cpus[0]}:{cpus[0]}")]
    if len(cpus) >= 2:
        modes.append(("cross-cpu", f"{cpus[0]}:{cpus[1]}"))
    res["signals_cpus"] = dict(modes)
    rounds = cfg["signal_rounds"]
    per_round = max(cfg["signals"] // rounds, 1)
    raw_path = os.path.join(tmp, "siglat.raw")
    for mode, pin in modes:
        lat = {w.key: [] for w in ws}
        errors = {}
        for r in range(rounds):
            order = ws[r % len(ws):] + ws[:r % len(ws)]
            for w in order:
                argv = [siglat, "--cpus", pin, "--raw", raw_path, str(per_round)]
                argv += w.signal_prefix + [siglat, "--child"]
                out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                     text=True, timeout=120)
                line = out.stdout.strip()
                if out.returncode != 0 or not line.startswith("ok "):
                    errors[w.key] = (line or out.stderr.strip()
                                     or f"siglat exited with status {out.returncode}")
                    continue
                with open(raw_path) as f:
                    lat[w.key] += [int(x) for x in f.read().split()]
        for w in ws:
            entry = {"command": shlex.join(w.signal_prefix + ["siglat", "--child"]),
                     "rounds": rounds}
            v = sorted(lat[w.key])
            if w.key in errors:
                entry["error"] = errors[w.key]
            elif v:
                entry.update({"n": len(v), "median_us": nearest_rank(v, 0.5) / 1e3,
                              "p99_us": nearest_rank(v, 0.99) / 1e3,
                              "mean_us": statistics.fmean(v) / 1e3, "min_us": v[0] / 1e3,
                              "max_us": v[-1] / 1e3})
            res["signals"].setdefault(mode, {})[w.key] = entry
    # Plain `timeout 1h`, as the other rows run it: does it forward SIGUSR1 at all?
    out = subprocess.run([siglat, "1", "timeout", "1h", siglat, "--child"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    res["signals_plain_timeout"] = out.stdout.strip()


def tree_script(n):
    return (f"i=1; while [ $i -lt {n} ]; do sleep 100000 & i=$((i+1)); done; "
            "exec sleep 100000")


def tree_command(n):
    """A main child with exactly n processes in its tree, all asleep."""
    return ["sh", "-c", tree_script(n)]


def probe_interval(n):
    """100 ms, or longer for big trees: at least 4× a probe that costs 25 µs per process, so that
    no probe overruns its interval (a late tick is skipped, and the count of probes in a span
    would no longer be span / interval)."""
    return max(PROBE_INTERVAL_S, n * 100e-6)


def duration_arg(seconds):
    return f"{round(seconds * 1000)}ms"


def supports_cgroup(binary):
    """Whether this watchd has `--cgroup` (SPEC, "Containment in a cgroup")."""
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--cgroup" in out.stdout


def cgroup2_mount():
    """(mount point, root within the hierarchy) of the first cgroup2 mount, or None."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                if post.split(" ", 1)[0] == "cgroup2":
                    fields = pre.split()
                    return fields[4], fields[3]
    except (OSError, IndexError):
        pass
    return None


def cgroup_dir(pid):
    """The directory of pid's cgroup in the cgroup2 hierarchy (its `0::` line), or None."""
    mount = cgroup2_mount()
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            path = next((line[3:].rstrip("\n") for line in f if line.startswith("0::")), None)
    except OSError:
        return None
    if mount is None or path is None or path.endswith(" (deleted)"):
        return None
    point, root = mount
    rel = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
    if rel.startswith(".."):
        return None  # outside what this mount shows
    return os.path.normpath(os.path.join(point, rel))


def run_floor(floor, target, mode, cfg, members):
    """floor.c's CPU per walk over a tree (target = its root's pid) or a cgroup (mode
    "cgroup", target = its directory). The walk must find `members` processes."""
    argv = [floor, "--walks", str(cfg["floor_walks"]), "--min-cpu-ms", str(cfg["floor_cpu_ms"])]
    argv += ["cgroup", target] if mode == "cgroup" else [str(target), mode]
    out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=120)
    line = out.stdout.strip()
    if out.returncode != 0 or not line.startswith("ok "):
        raise RuntimeError(f"floor {mode}: {line or out.stderr.strip() or out.returncode}")
    entry = {k: float(v) if "." in v else int(v)
             for k, v in (kv.split("=", 1) for kv in line.split()[1:])}
    if entry["members"] != members:
        raise RuntimeError(f"floor {mode} found {entry['members']} processes, not {members}")
    return entry


def run_watchd(argv, n, span, errlog, settle_s=0.3, during=None, graceful=False):
    """Starts `argv -- tree of n`, lets it settle for settle_s, then reads its CPU time
    (schedstat, ns) and voluntary context switches (one per probe: the poll that wakes it) over
    `span`. Then `during(proc)`, if given, runs while the tree still stands; its result goes to
    "during". graceful: end watchd with SIGTERM (a watchd with a cgroup removes it on its way
    out), then kill what it left: the one tree of this run, adopted by us, the subreaper."""
    p = start(argv + ["--"] + tree_command(n), errlog)
    try:
        def tree_up():
            if p.poll() is not None:
                raise RuntimeError(f"{shlex.join(argv)} exited with status {p.returncode}")
            return len(descendants(p.pid)) >= n
        wait_for(tree_up, 120, f"a tree of {n} processes under watchd",
                 poll_s=0.01 if n < 1000 else 0.2)
        time.sleep(settle_s)
        others = len(all_pids()) - n - 1
        t0, c0, v0 = time.monotonic(), cpu_ns(p.pid), ctxt_switches(p.pid)[0]
        time.sleep(span)
        t1, c1, v1 = time.monotonic(), cpu_ns(p.pid), ctxt_switches(p.pid)[0]
        members = len(descendants(p.pid))
        if p.poll() is not None or members != n:
            raise RuntimeError(f"tree of {n}: watchd or its tree changed during the span "
                               f"({members} processes)")
        entry = {"command": shlex.join(argv + ["--", "sh", "-c", "…"]), "span_s": t1 - t0,
                 "cpu_ns": c1 - c0, "voluntary_switches": v1 - v0, "other_processes": others,
                 "vmrss_kib": kib(proc_status(p.pid)["VmRSS"])}
        if during is not None:
            entry["during"] = during(p)
        if graceful:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"  {argv[0]} did not end within 20 s of SIGTERM; killing its tree")
            else:
                # Nothing else of ours runs now: whatever is below us is what watchd left.
                left = descendants(os.getpid())
                entry["left_running"] = len(left)
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        return entry
    finally:
        kill_tree(p)


def probe_entry(baseline, probing, interval):
    """CPU per probe: probing's CPU minus baseline's rate over probing's span, over the probes
    that span holds."""
    base_rate = baseline["cpu_ns"] / baseline["span_s"]
    probes = probing["span_s"] / interval
    per_probe_ns = (probing["cpu_ns"] - base_rate * probing["span_s"]) / probes
    # A cross-check of `probes`: one voluntary switch per probe, beyond the baseline's rate.
    woken = (probing["voluntary_switches"]
             - baseline["voluntary_switches"] * probing["span_s"] / baseline["span_s"])
    return {"baseline": baseline, "probing": probing, "interval_s": interval, "probes": probes,
            "probes_woken": woken, "per_probe_us": per_probe_ns / 1e3,
            "cpu_share": per_probe_ns / (PROBE_INTERVAL_S * 1e9)}


def probe_cost_of(watchd, n, span, errlog, evidence="cpu,io"):
    """watchd's CPU per probe with a tree of n sleeping processes: the CPU it uses over `span`
    at --interval 100ms, minus its CPU rate with the same tree at --interval 1h (no probes)."""
    interval = probe_interval(n)
    base = run_watchd([watchd, "--stall", "1h", "--interval", "1h"], n, span, errlog)
    pr = run_watchd([watchd, "--stall", "1h", "--evidence", evidence, "--interval",
                     duration_arg(interval)], n, span, errlog, settle_s=settle(interval))
    return probe_entry(base, pr, interval)


def settle(interval):
    """Time to let a probing watchd find its rhythm before the span: three probes."""
    return max(3 * interval, 0.3)


class OwnCgroup:
    """A cgroup of the bench's own, below its cgroup2 cgroup, for the cgroup floor while no
    watchd build has --cgroup. Its path is written to `record` (for run.sh's clean-up) while
    it exists."""

    def __init__(self, token, record):
        mine = cgroup_dir(os.getpid())
        if mine is None:
            raise OSError("no cgroup2 hierarchy shows the bench's cgroup")
        self.path = os.path.join(mine, f"watchd-bench-{token}")
        self.record = record
        os.mkdir(self.path)
        with open(record, "w") as f:
            f.write(self.path + "\n")

    def tree(self, n, errlog):
        """A tree of n sleeping processes, the first placed in this cgroup before it forks."""
        enter = 'echo $$ > "$1/cgroup.procs" && exec sh -c "$2"'
        return start(["sh", "-c", enter, "sh", self.path, tree_script(n)], errlog)

    def procs(self):
        with open(os.path.join(self.path, "cgroup.procs")) as f:
            return len(f.read().split())

    def remove(self):
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(self.path)
                break
            except FileNotFoundError:
                break
            except OSError:  # EBUSY until the last member is reaped
                if time.monotonic() > deadline:
                    raise
                reap_orphans()
                time.sleep(0.05)
        os.unlink(self.record)


def own_cgroup_floor(cg, n, floor, cfg, errlog):
    p = cg.tree(n, errlog)
    try:
        def tree_up():
            if p.poll() is not None:
                raise RuntimeError(f"the tree could not enter {cg.path} "
                                   f"(status {p.returncode})")
            return cg.procs() >= n
        wait_for(tree_up, 120, f"{n} processes in {cg.path}", poll_s=0.01 if n < 1000 else 0.2)
        entry = run_floor(floor, cg.path, "cgroup", cfg, n)
        entry["cgroup"] = cg.path
        return entry
    finally:
        kill_tree(p)


def measure_probe_cost(builds, cfg, errlog, res, floor, out):
    """Every tree size with every watchd build, the builds' order alternating from one size to
    the next so that a drift of the machine does not always land on the same build. Per build
    and size: a baseline run (--interval 1h), during which floor.c walks the same tree in each
    evidence set's way; a probing run per evidence set; and, where the build has --cgroup, a
    baseline and a probing run with `--cgroup on --evidence cpu` and the cgroup floor on the
    cgroup that watchd made."""
    span = cfg["probe_span_s"]
    flags = {key: supports_cgroup(binary) for key, binary in builds}
    res["cgroup_flag"] = flags
    res["probe_intervals"] = {str(n): probe_interval(n) for n in cfg["probe_sizes"]}
    own = None
    if not any(flags.values()):
        try:
            own = OwnCgroup(res["token"], os.path.join(out, "cgroup-floor.path"))
        except OSError as err:
            res["floor_cgroup_own_na"] = f"n/a (no cgroup of the bench's own: {err})"
            log(f"  cgroup floor: {res['floor_cgroup_own_na']}")
    try:
        for i, n in enumerate(cfg["probe_sizes"]):
            measure_size(builds if i % 2 == 0 else builds[::-1], n, i, flags, cfg, errlog, res,
                         floor, span)
            if own is not None:
                entry = own_cgroup_floor(own, n, floor, cfg, errlog)
                res["floor_cgroup_own"][str(n)] = entry
                log(f"  cgroup floor, {n} processes in the bench's cgroup: "
                    f"{entry['mean_us']:.1f} µs per walk")
    finally:
        if own is not None:
            own.remove()
    # A tree of 1 on a machine with many unrelated processes: what processes outside the tree
    # cost a probe (the tree walk starts at watchd, so ideally nothing).
    m = cfg["probe_sizes"][-1]
    bystanders = start(tree_command(m), errlog)
    try:
        wait_for(lambda: len(descendants(bystanders.pid)) >= m - 1, 120,
                 f"{m} unrelated processes", poll_s=0.2)
        for key, binary in builds[::-1]:
            entry = probe_cost_of(binary, 1, span, errlog)
            entry["bystanders"] = m
            res["probe_bystanders"][key] = entry
            log(f"  {key}, tree of 1 beside {m} unrelated processes: "
                f"{entry['per_probe_us']:.1f} µs per probe")
    finally:
        kill_tree(bystanders)


def tree_cgroup(watchd_pid):
    """The cgroup directory of watchd's main child, if it is not watchd's own."""
    child = next((c for c, pp in parent_map().items() if pp == watchd_pid), None)
    path = cgroup_dir(child) if child is not None else None
    return path if path is not None and path != cgroup_dir(watchd_pid) else None


def measure_size(builds, n, turn, flags, cfg, errlog, res, floor, span):
    interval = probe_interval(n)
    arg = duration_arg(interval)
    for key, binary in builds:
        def floors(p):
            return {ev: run_floor(floor, p.pid, ev, cfg, n) for ev in EVIDENCE_SETS}
        base = run_watchd([binary, "--stall", "1h", "--interval", "1h"], n, span, errlog,
                          during=floors)
        res["floor"].setdefault(str(n), {})[key] = base.pop("during")
        for ev in EVIDENCE_SETS if turn % 2 == 0 else EVIDENCE_SETS[::-1]:
            pr = run_watchd([binary, "--stall", "1h", "--evidence", ev, "--interval", arg],
                            n, span, errlog, settle_s=settle(interval))
            entry = probe_entry(base, pr, interval)
            res["probe" if ev == "cpu,io" else "probe_evidence_cpu"].setdefault(
                key, {})[str(n)] = entry
            log(f"  {key}, tree of {n}, --evidence {ev}: {entry['per_probe_us']:.1f} µs per "
                f"probe; floor {res['floor'][str(n)][key][ev]['mean_us']:.1f} µs")
        if flags[key]:
            res["probe_cgroup"].setdefault(key, {})[str(n)] = cgroup_cost_of(
                binary, n, interval, span, cfg, errlog, floor)
            log(f"  {key}, tree of {n}, --cgroup on --evidence cpu: "
                f"{res['probe_cgroup'][key][str(n)]['per_probe_us']:.1f} µs per probe")


def cgroup_cost_of(binary, n, interval, span, cfg, errlog, floor):
    """`--cgroup on --evidence cpu`: CPU per probe as probe_cost_of measures it, and the
    cgroup floor on the cgroup watchd made for the tree (found during the baseline run).
    watchd is ended with SIGTERM, so that it removes its cgroup; one it leaves is noted
    (`left_behind`) and removed once empty."""
    argv = [binary, "--cgroup", "on", "--evidence", "cpu", "--stall", "1h"]
    seen = []

    def find(p):
        path = tree_cgroup(p.pid)
        if path is None:
            raise RuntimeError("--cgroup on: the tree has no cgroup of its own")
        seen.append(path)
        return path

    def with_floor(p):
        path = find(p)
        return dict(run_floor(floor, path, "cgroup", cfg, n), cgroup=path)

    try:
        base = run_watchd(argv + ["--interval", "1h"], n, span, errlog, during=with_floor,
                          graceful=True)
        pr = run_watchd(argv + ["--interval", duration_arg(interval)], n, span, errlog,
                        settle_s=settle(interval), during=find, graceful=True)
    finally:
        left = [path for path in seen if os.path.isdir(path)]
        for path in left:
            try:
                os.rmdir(path)
            except OSError as err:
                log(f"  cannot remove {path}, left behind by watchd: {err.strerror}")
    entry = probe_entry(base, pr, interval)
    entry["floor"] = base.pop("during")
    entry["left_behind"] = left
    return entry


# ---------------------------------------------------------------------------------------------
# Report


def fmt(v, digits=2):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "FAIL"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}f}"


def get(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def report(res, ws, quick):
    """Returns (markdown text, names of figures that failed)."""
    failed = []
    keys = [w.key for w in ws]
    builds = [k for k in BUILDS if k in keys]
    refs = [k for k in REFERENCES if k in keys]
    pairs = [(b, r) for b in builds for r in refs]
    header = (["measurement"] + [w.label for w in ws]
              + [f"{SHORT[b]} / {SHORT[r]}" for b, r in pairs] + ["target"]
              + [f"verdict, {SHORT[b]}" for b in builds])
    rows = []

    def row(name, values, digits=2, target="", check=None, required=None):
        """values: key -> number or None (None for a key in `required` is a failure).
        check(w, t, ratio): the target, for one watchd build's value w and tini's t."""
        required = keys if required is None else required
        cells = []
        for k in keys:
            v = values.get(k)
            if v is None and k in required:
                failed.append(f"{name} [{k}]")
                cells.append("FAIL")
            elif v is None:
                cells.append("—")
            else:
                cells.append(fmt(v, digits))
        ratios = []
        for b, r in pairs:
            w, t = values.get(b), values.get(r)
            ratios.append(fmt(w / t) if (w is not None and t) else "—")
        verdicts = []
        for b in builds:
            w, t = values.get(b), values.get("tini")
            if check is None:
                verdicts.append("")
            elif w is None:
                verdicts.append("FAIL")
            else:
                verdicts.append("meets" if check(w, t, w / t if t else None) else "MISSES")
        rows.append([name] + cells + ratios + [target] + verdicts)

    not_bare = [k for k in keys if k != "none"]
    st = res["startup"]
    row("start-up: `X -- /bin/true`, median wall (ms)",
        {k: get(st, k, "median_ms") for k in keys}, target="÷ tini ≤ 1.0",
        check=lambda w, t, r: r is not None and r <= 1.0)
    bare = get(st, "none", "median_ms")
    row("start-up overhead over bare /bin/true (ms)",
        {k: (get(st, k, "median_ms") - bare)
         if (get(st, k, "median_ms") is not None and bare is not None and k != "none") else None
         for k in keys}, required=not_bare)

    rss = res["rss"]

    def idle_key(k):
        """The RSS rows show the watchd builds at their busiest idle: probing every 100 ms."""
        return f"{k}-stall-100ms" if k in BUILDS else k

    rss_vals = {k: get(rss, idle_key(k), "vmrss_kib") for k in not_bare}
    rss_vals = {k: (v / 1024 if v is not None else None) for k, v in rss_vals.items()}
    row("RSS while the child sleeps (MiB; watchd --stall 1h --interval 100ms)", rss_vals,
        target="≤ 1.5 MiB and ≤ tini",
        check=lambda w, t, r: w <= 1.5 and t is not None and w <= t, required=not_bare)

    pss = {k: get(rss, idle_key(k), "pss_kib") for k in not_bare}
    row("PSS, same processes (MiB; shared pages split among their users)",
        {k: (v / 1024 if v is not None else None) for k, v in pss.items()}, required=not_bare)

    for mode, label in [("same-cpu", "one CPU"), ("cross-cpu", "across CPUs")]:
        if mode not in res["signals"] and mode == "cross-cpu" and res.get("signals_cpus"):
            continue  # a one-CPU machine
        for stat in ["median_us", "p99_us"]:
            row(f"SIGUSR1 → child's handler, {label}, {stat.split('_')[0]} (µs)",
                {k: get(res["signals"], mode, k, stat) for k in keys}, digits=1)

    wk = res["wakeups"]
    row("wake-ups per minute, no limits (watchd: default --interval 5s)",
        {k: get(wk, k, "per_minute") for k in not_bare}, digits=1, required=not_bare)
    row("wake-ups per minute, watchd --stall 1h --interval 5s",
        {b: get(wk, f"{b}-stall-5s", "per_minute") for b in builds}, digits=1,
        required=builds)
    row("wake-ups per minute, watchd --stall 1h --interval 100ms",
        {b: get(wk, f"{b}-stall-100ms", "per_minute") for b in builds}, digits=1,
        required=builds)
    row("idle CPU per minute, no limits (ms)",
        {k: get(wk, k, "cpu_us_per_minute") / 1e3
         if get(wk, k, "cpu_us_per_minute") is not None else None for k in not_bare},
        digits=3, required=not_bare)
    row("idle CPU per minute, watchd --stall 1h --interval 5s (ms)",
        {b: get(wk, f"{b}-stall-5s", "cpu_us_per_minute") / 1e3
         if get(wk, f"{b}-stall-5s", "cpu_us_per_minute") is not None else None
         for b in builds}, digits=3, required=builds)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]

    # Probe cost, per watchd build.
    sizes = [str(n) for n in res["config"]["probe_sizes"]]
    m = res["config"]["probe_sizes"][-1]
    cols = []
    for b in builds:
        cols += [f"{SHORT[b]}: CPU per probe (µs)", "× tree of 1", "CPU share at 100 ms",
                 "RSS (MiB)"]
    longer = [f"{duration_arg(v)} for {n}"
              for n, v in (res.get("probe_intervals") or {}).items() if v != PROBE_INTERVAL_S]
    evidence = " --evidence cpu,io" if "floor" in res else ""
    lines += ["", f"watchd probe cost (`--stall 1h{evidence} --interval 100ms`"
              + (f" ({', '.join(longer)})" if longer else "") + ", tree of N sleeping processes, "
              "minus the same tree with `--interval 1h`), both builds:", "",
              "| " + " | ".join(["tree (processes)"] + cols
                                + ["other processes on the machine"]) + " |",
              "|" + "---|" * (len(cols) + 2)]
    firsts = {b: get(res["probe"], b, sizes[0], "per_probe_us") for b in builds}
    series = [(n, n, lambda b, n=n: get(res["probe"], b, n)) for n in sizes]
    series.append((f"1, beside {m} unrelated processes", "tree of 1 beside unrelated processes",
                   lambda b: get(res, "probe_bystanders", b)))
    for label, what, entry_of in series:
        cells, others = [label], []
        for b in builds:
            e = entry_of(b) or {}
            us, first = e.get("per_probe_us"), firsts[b]
            if us is None:
                failed.append(f"probe cost [{SHORT[b]}, {what}]")
            rss_kib = get(e, "probing", "vmrss_kib")
            cells += [fmt(us, 1), fmt(us / first, 1) if (us is not None and first) else "—",
                      f"{e['cpu_share'] * 100:.2f} %" if us is not None else "FAIL",
                      fmt(rss_kib / 1024 if rss_kib is not None else None)]
            o = get(e, "probing", "other_processes")
            if o is not None and o not in others:
                others.append(o)
        cells.append(" / ".join(str(o) for o in others) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    growth, per_process = [], {}
    big, mid = sizes[-1], sizes[-2] if len(sizes) > 1 else None
    for b in builds:
        bu, mu = get(res["probe"], b, big, "per_probe_us"), get(res["probe"], b, mid, "per_probe_us")
        first, by = firsts[b], get(res, "probe_bystanders", b, "per_probe_us")
        if bu is None or mu is None or not first:
            continue
        per_proc = (bu - mu) / (int(big) - int(mid))
        per_process[b] = per_proc
        text = (f"{SHORT[b]}: {per_proc:.2f} µs per extra tree process per probe (between {mid} "
                f"and {big}); a tree of {big} costs {bu / first:.1f}× a tree of {sizes[0]}")
        if by is not None:
            text += f"; {m} unrelated processes add {by - first:+.1f} µs to a tree of 1"
        growth.append(text + ".")
    res["probe_growth_us_per_process"] = per_process
    if growth:
        lines += ["", "Growth: " + " ".join(growth)]
    lines += floor_table(res, builds, failed)
    if quick:
        lines += ["", "(--quick: few iterations, small trees, short spans — a smoke run, "
                      "not figures to quote.)"]
    return "\n".join(lines), failed


def floor_table(res, builds, failed):
    """Probe cost at the floor: each build's CPU per probe against floor.c's CPU per walk of
    the same files, per evidence set and tree size, and through a cgroup. [] for runs from
    before the floor was measured."""
    if "floor" not in res:
        return []
    sizes = [str(n) for n in res["config"]["probe_sizes"]]
    flags = res.get("cgroup_flag", {})
    header = (["probe, tree of N sleeping processes: CPU per probe (µs)"]
              + [SHORT[b] for b in builds] + ["floor"] + [f"{SHORT[b]} / floor" for b in builds]
              + ["target"] + [f"verdict, {SHORT[b]}" for b in builds])
    rows = []

    def mean_floor(per_build, *path):
        vals = [get(per_build, b, *path) for b in builds]
        vals = [v for v in vals if v is not None]
        return statistics.fmean(vals) if vals else None

    def row(name, values, floor, target, check, na=None):
        """values: build -> µs or None; na: build -> the text standing for a figure that
        cannot exist (not a failure)."""
        na = na or {}
        cells, ratios, verdicts = [], [], []
        for b in builds:
            v = values.get(b)
            if b in na:
                cells.append(na[b])
            elif v is None:
                failed.append(f"{name} [{SHORT[b]}]")
                cells.append("FAIL")
            else:
                cells.append(fmt(v, 1))
            ratios.append(fmt(v / floor) if (v is not None and isinstance(floor, float)) else "—")
            if check is None:
                verdicts.append("")
            elif b in na:
                verdicts.append("n/a")
            elif v is None or floor is None:
                verdicts.append("FAIL")
            else:
                verdicts.append("meets" if check(v, floor) else "MISSES")
        if floor is None:
            failed.append(f"{name} [floor]")
        floor_cell = fmt(floor, 1) if not isinstance(floor, str) else floor
        rows.append([name] + cells + [floor_cell] + ratios + [target] + verdicts)

    for ev, store, files in [("cpu,io", "probe", "stat + children + io"),
                             ("cpu", "probe_evidence_cpu", "stat + children")]:
        for n in sizes:
            row(f"/proc, `--evidence {ev}`, N = {n} (floor: {files} per member)",
                {b: get(res, store, b, n, "per_probe_us") for b in builds},
                mean_floor(get(res, "floor", n) or {}, ev, "mean_us"),
                f"÷ floor ≤ {FLOOR_RATIO_TARGET}",
                lambda v, f: v <= FLOOR_RATIO_TARGET * f)
    own = not any(flags.get(b) for b in builds)
    for n in sizes:
        if own:
            floor = get(res, "floor_cgroup_own", n, "mean_us")
            if floor is None:
                floor = res.get("floor_cgroup_own_na")
            where = "a cgroup the bench made"
        else:
            floor = mean_floor(get(res, "probe_cgroup") or {}, n, "floor", "mean_us")
            where = "watchd's cgroup"
        at_target = int(n) == CGROUP_TARGET_N
        row(f"cgroup, `--cgroup on --evidence cpu`, N = {n} (floor: cgroup.procs + cpu.stat "
            f"of {where})",
            {b: get(res, "probe_cgroup", b, n, "per_probe_us") for b in builds},
            floor, f"≤ {CGROUP_TARGET_US:.0f} µs" if at_target else "",
            (lambda v, f: v <= CGROUP_TARGET_US) if at_target else None,
            na={b: NO_CGROUP_FLAG for b in builds if not flags.get(b)})

    lines = ["", "Probe cost at the floor: watchd's CPU per probe (as above) against floor.c's "
             "CPU per walk of the same files, each opened, read and closed once "
             "(bench/README.md, \"Probe cost at the floor\"):", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]

    # Per extra member, between the two largest trees: what the targets come down to.
    if len(sizes) >= 2:
        mid, big = sizes[-2], sizes[-1]
        per = []
        for ev, store in [("cpu,io", "probe"), ("cpu", "probe_evidence_cpu")]:
            parts = []
            for b in builds:
                hi, lo = get(res, store, b, big, "per_probe_us"), get(res, store, b, mid,
                                                                        "per_probe_us")
                if hi is not None and lo is not None:
                    parts.append(f"{SHORT[b]} {(hi - lo) / (int(big) - int(mid)):.2f}")
            f_hi = mean_floor(get(res, "floor", big) or {}, ev, "mean_us")
            f_lo = mean_floor(get(res, "floor", mid) or {}, ev, "mean_us")
            walk = get(res, "floor", big, builds[0], ev)
            if f_hi is not None and f_lo is not None and walk:
                parts.append(f"floor {(f_hi - f_lo) / (int(big) - int(mid)):.2f} (a walk of "
                             f"{big} opens {walk['files']} files and makes {walk['reads']} "
                             "reads)")
            per.append(f"`--evidence {ev}`: " + ", ".join(parts))
        lines += ["", f"Per extra tree process, between {mid} and {big} (µs per probe): "
                  + "; ".join(per) + "."]
    checks = []
    for store in ["probe", "probe_evidence_cpu", "probe_cgroup"]:
        for b, by_n in (res.get(store) or {}).items():
            for n, e in by_n.items():
                woken, probes = e.get("probes_woken"), e.get("probes")
                if woken is not None and abs(woken - probes) > 0.1 * probes + 1:
                    checks.append(f"{store} {SHORT[b]} {n}: {woken:.0f} wake-ups for "
                                  f"{probes:.0f} probes")
    if checks:
        lines += ["", "Probe count check (one wake-up per probe expected): " + "; ".join(checks)]
    leftovers = []
    for b, by_n in (res.get("probe_cgroup") or {}).items():
        for n, e in by_n.items():
            running = sum(get(e, run, "left_running") or 0 for run in ["baseline", "probing"])
            if e.get("left_behind") or running:
                leftovers.append(f"{SHORT[b]}, tree of {n}: {running} processes left running, "
                                 f"cgroups left behind: {', '.join(e['left_behind']) or 'none'}")
    if leftovers:
        lines += ["", "After SIGTERM, `--cgroup on` watchd left: " + "; ".join(leftovers)]
    return lines


def machine_info(watchd, watchd_static):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "unknown"

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": os.uname().release,
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "processes_start": len(all_pids()),
        "watchd": version([watchd, "--version"]),
        "watchd_static_version": version([watchd_static, "--version"]),
        "tini": version(["tini", "--version"]),
        "dumb-init": version(["dumb-init", "--version"]),
        "timeout": version(["timeout", "--version"]),
        "hyperfine": version(["hyperfine", "--version"]),
    }
    for name in ["tini", "tini-static", "dumb-init", "timeout"]:
        path = shutil.which(name)
        if path:
            info[f"{name}_binary"] = f"{path}: {elf_kind(path)}, {os.path.getsize(path)} bytes"
    for key, path in [("watchd", watchd), ("watchd_static", watchd_static)]:
        info[f"{key}_binary"] = f"{path}: {elf_kind(path)}, {os.path.getsize(path)} bytes"
        info[f"{key}_path"] = path
        with open(path, "rb") as f:
            info[f"{key}_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
    # What was measured, without git: a digest of the sources the binary was built from.
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    files = ["Cargo.toml", "Cargo.lock"] + sorted(
        os.path.join("src", f) for f in os.listdir(os.path.join(repo, "src")))
    for rel in files:
        try:
            with open(os.path.join(repo, rel), "rb") as f:
                h.update(rel.encode() + b"\0" + f.read() + b"\0")
        except OSError:
            pass
    info["source_digest"] = h.hexdigest()[:16]
    info["commit"] = git_commit(repo)
    return info


def git_commit(repo):
    """HEAD of the checkout, and whether its sources differ from it; "unknown" without git."""
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "src",
                                "Cargo.toml", "Cargo.lock"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    changed = " + uncommitted changes to src/ or Cargo.*" if dirty.stdout.strip() else ""
    return head.stdout.strip() + changed


def render(res, ws):
    """The whole printed report: a header of bullets, the tables, any errors."""
    quick = res["config"]["quick"]
    table, failed = report(res, ws, quick)
    m = res["machine"]
    notes = "; ".join(f"{k}: {v}" for k, v in res["notes"].items())
    head = [
        f"watchd bench, {m['date']}{' (--quick)' if quick else ''}",
        "",
        f"- machine: {m['nproc']} × {m['cpu']}, kernel {m['kernel']}; "
        f"{m['processes_start']} processes; load average {' '.join(m['loadavg_start'])} "
        f"at start, {' '.join(m.get('loadavg_end', ['?']))} at end",
        f"- versions: {m['watchd']} (static: {m.get('watchd_static_version', '?')}); "
        f"{m['tini']}; {m['dumb-init']}; {m['timeout']}; {m['hyperfine']}",
        "- binaries: " + "; ".join(m[k] for k in m if k.endswith("_binary")),
        f"- watchd measured: sha256 {m['watchd_sha256']}… (dynamic), "
        f"{m.get('watchd_static_sha256', '?')}… (static), both built from sources with digest "
        f"{m['source_digest']}… (src/, Cargo.toml, Cargo.lock), commit "
        f"{m.get('commit', 'unknown')}",
        f"- notes: {notes}; plain `timeout 1h` sent SIGUSR1: "
        f"{res.get('signals_plain_timeout', '?')}",
        "",
    ]
    text = "\n".join(head) + "\n" + table + "\n"
    if res["errors"]:
        text += "\nerrors: " + "; ".join(f"{k}: {v}" for k, v in res["errors"].items()) + "\n"
    sig_errors = [f"{mode} {key}: {e['error']}" for mode, by in res["signals"].items()
                  for key, e in by.items() if e.get("error")]
    if sig_errors:
        text += "\nsignal latency errors: " + "; ".join(sig_errors) + "\n"
    return text, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--watchd", help="the release build")
    ap.add_argument("--watchd-static", help="the static (+crt-static) release build")
    ap.add_argument("--siglat")
    ap.add_argument("--floor", help="floor.c's binary: the probe's files and nothing else")
    ap.add_argument("--out", help="directory for results.json / results.md")
    ap.add_argument("--token")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--render", metavar="RESULTS_JSON",
                    help="print the report of an earlier run again, measuring nothing")
    args = ap.parse_args()
    if args.render:
        with open(args.render) as f:
            res = json.load(f)
        # Runs from before the static column kept one build's probe figures unkeyed.
        if res["probe"] and all(k.isdigit() for k in res["probe"]):
            res["probe"] = {"watchd": res["probe"]}
            res["probe_bystanders"] = {"watchd": res.get("probe_bystanders") or {}}
        text, failed = render(res, contenders(res["machine"]["watchd_path"],
                                              res["machine"].get("watchd_static_path")))
        print(text)
        return 1 if failed or res["errors"] else 0
    for name in ["watchd", "watchd_static", "siglat", "floor", "out", "token"]:
        if getattr(args, name) is None:
            ap.error(f"--{name.replace('_', '-')} is required (or --render)")
    if not elf_kind(args.watchd_static).startswith("static"):
        ap.error(f"--watchd-static {args.watchd_static} is {elf_kind(args.watchd_static)}, "
                 "not a static binary")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    for k in [k for k in os.environ if k.startswith("WATCHD_")]:
        del os.environ[k]  # measure watchd's defaults, not the caller's
    os.environ[TOKEN_VAR] = args.token
    become_subreaper()
    cfg = QUICK if args.quick else FULL
    ws = contenders(args.watchd, args.watchd_static)
    os.makedirs(args.out, exist_ok=True)
    res = {"config": dict(cfg, quick=args.quick),
           "machine": machine_info(args.watchd, args.watchd_static),
           "startup": {}, "rss": {}, "signals": {}, "wakeups": {}, "probe": {},
           "probe_bystanders": {}, "probe_evidence_cpu": {}, "probe_cgroup": {}, "floor": {},
           "floor_cgroup_own": {}, "token": args.token, "errors": {},
           "notes": {w.key: w.note for w in ws if w.note}}
    errlog = open(os.path.join(args.out, "wrappers.stderr"), "w")
    phases = [
        ("start-up", lambda: measure_startup(ws, cfg, tmp, res)),
        ("signal latency", lambda: measure_signals(ws, args.siglat, cfg, tmp, res)),
        ("probe cost", lambda: measure_probe_cost(watchd_builds(ws), cfg, errlog, res,
                                                  args.floor, args.out)),
        ("RSS and idle wake-ups", lambda: measure_idle(ws, cfg, errlog, res)),
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="watchd-bench-") as tmp:
            for name, fn in phases:
                log(f"{name} ...")
                t = time.monotonic()
                try:
                    fn()
                except Exception as err:  # one failed phase must not hide the others
                    res["errors"][name] = f"{type(err).__name__}: {err}"
                    log(f"{name} FAILED: {err}")
                log(f"{name} done in {time.monotonic() - t:.1f}s")
    finally:
        cleanup(args.token)
        errlog.close()
    res["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    text, failed = render(res, ws)
    res["failed"] = failed
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    print(text)
    if failed or res["errors"]:
        log(f"{len(failed)} figure(s) missing: {', '.join(failed) or '(see errors)'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
