#!/usr/bin/env bash
# Device check for GPU evidence of life (issue 16; SPEC.md "GPU evidence"), unattended, on a
# machine with an NVIDIA GPU and driver, python3 with CuPy, and no network. Builds nothing.
#
#   bench/gpu-check.sh [WATCHD [GPU_COST]]
#
# WATCHD: an already built, dynamically linked watchd (default target/release/watchd).
# GPU_COST: the gpu_cost example (`cargo build --release --example gpu_cost`; default
# target/release/examples/gpu_cost); its row is skipped when it is missing.
# Logs (events, stderr) go to $GPU_CHECK_DIR, or a fresh temporary directory, kept.
#
# Checks, each job a CuPy RawKernel busy-waiting on clock64() while the host sleeps
# (time.sleep after the asynchronous launch: no CPU, no I/O):
#   a0  control: a 30 s kernel under --evidence cpu,io IS stalled (else the job is not quiet
#       on the host and the other checks prove nothing);
#   a   the same job under --evidence cpu,io,gpu is NOT stalled under --stall 10s;
#   b   a 5 s kernel, the host asleep for 40 s: stalled 15 s after the launch, within
#       [15 s - 0.5 s, 15 s + --interval + 2 s];
#   c   cost: watchd's own CPU per probe with and without gpu evidence (schedstat, 100 ms
#       probes, a kernel running), and gpu_cost's load() and sample() times;
#   d   no NVML descriptor reaches a child started after NVML was loaded (a restart).
# Prints a table of figures. Exit status: 0 all checks passed, 1 a check failed, 2 this
# machine or this watchd cannot run the checks.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
watchd=${1:-$repo/target/release/watchd}
gpu_cost=${2:-$repo/target/release/examples/gpu_cost}
work=${GPU_CHECK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$work"
stall=10
interval=1

say() { printf 'gpu-check: %s\n' "$*" >&2; }
cannot() {
    say "cannot run: $*"
    exit 2
}

# What this script started, killed on any exit (by pid, nothing else).
started=()
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local pid
    for pid in "${started[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

[[ -x $watchd ]] || cannot "$watchd is not an executable (build it: cargo build --release)"
"$watchd" --version >/dev/null 2>"$work/version.stderr" ||
    cannot "$watchd does not run here: $(head -c 300 "$work/version.stderr")"
if file "$watchd" 2>/dev/null | grep -q 'static'; then
    cannot "$watchd is statically linked; GPU evidence needs the dynamic build"
fi
python3 -c 'import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0' 2>"$work/cupy.stderr" ||
    cannot "python3 with CuPy and a CUDA device is needed: $(tail -n 1 "$work/cupy.stderr")"
"$watchd" --stall 1s --evidence cpu,io,gpu --gpu-evidence process -- true 2>"$work/flags.stderr" ||
    cannot "this watchd lacks --evidence gpu or --gpu-evidence: $(head -n 1 "$work/flags.stderr")"

# The job: calibrate clock64() against CUDA events (it counts cycles at the clock the SM runs
# at, not the nominal one), launch one spinning thread for KERNEL_S seconds, note the launch
# time in MARK, and sleep HOST_S seconds on the host.
cat >"$work/job.py" <<'EOF'
import sys, time
import cupy as cp

kernel_s, host_s, mark = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
spin = cp.RawKernel(r'''
extern "C" __global__ void spin(long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
}
''', 'spin')

def timed(cycles):
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    spin((1,), (1,), (cp.int64(cycles),))
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / 1e3

nominal = cp.cuda.Device().attributes['ClockRate'] * 1e3  # kHz -> Hz
timed(int(nominal * 0.05))  # compile, wake the clocks
probe = int(nominal * 0.5)
per_second = probe / timed(probe)
spin((1,), (1,), (cp.int64(int(per_second * kernel_s)),))
launched = time.time()
with open(mark, 'w') as f:
    f.write(f'{launched:.6f} {per_second:.0f}\n')
time.sleep(host_s)
EOF

# Reads a run's events: the stall trigger's time after the launch, GPU figures of the samples.
cat >"$work/events.py" <<'EOF'
import datetime, json, sys

events, mark = sys.argv[1], sys.argv[2]
try:
    launched = float(open(mark).read().split()[0])
except (OSError, ValueError, IndexError):
    launched = None
def seconds(ts):
    return datetime.datetime.fromisoformat(ts.replace('Z', '+00:00')).timestamp()
trigger, samples, utils, memory = None, 0, [], []
for line in open(events, errors='replace'):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if event.get('event') == 'sample':
        samples += 1
        if isinstance(event.get('gpu_util'), (int, float)):
            utils.append(event['gpu_util'])
        if isinstance(event.get('gpu_memory_bytes'), (int, float)):
            memory.append(event['gpu_memory_bytes'])
    elif event.get('event') == 'trigger' and trigger is None:
        trigger = event
after = None
if trigger is not None and launched is not None:
    after = seconds(trigger['ts']) - launched
print('reason', trigger['reason'] if trigger else 'none')
print('after', f'{after:.1f}' if after is not None else 'none')
print('samples', samples)
print('gpu_util_max', max(utils) if utils else 'none')
print('gpu_util_busy', sum(1 for u in utils if u > 0))
print('gpu_memory_max_mib', f'{max(memory) / 2**20:.0f}' if memory else 'none')
EOF

failed=0
rows=()
row() { rows+=("| $1 | $2 | $3 |"); }
field() { sed -n "s/^$1 //p" "$2"; }

# Runs the job under watchd; leaves NAME.events, NAME.stderr, NAME.mark, NAME.facts.
run_job() {
    local name=$1 evidence=$2 kernel_s=$3 host_s=$4
    local start end status=0
    start=$(date +%s.%N)
    "$watchd" -v --stall "${stall}s" --interval "${interval}s" --grace 2s --exit-code-on-stop 124 \
        --evidence "$evidence" --events "$work/$name.events" \
        -- python3 "$work/job.py" "$kernel_s" "$host_s" "$work/$name.mark" \
        2>"$work/$name.stderr" || status=$?
    end=$(date +%s.%N)
    python3 "$work/events.py" "$work/$name.events" "$work/$name.mark" >"$work/$name.facts"
    echo "status $status" >>"$work/$name.facts"
    echo "took $(python3 -c "print(f'{$end - $start:.1f}')")" >>"$work/$name.facts"
}

explain() {
    say "$1 failed; watchd's stderr (last lines) and facts follow; logs in $work"
    tail -n 15 "$work/$1.stderr" >&2 || true
    cat "$work/$1.facts" >&2 || true
}

say "a0: control, 30 s kernel, --evidence cpu,io (about 20 s)"
run_job a0 cpu,io 30 32
facts=$work/a0.facts
if [[ $(field reason "$facts") == stall ]]; then
    row "a0 control: 30 s kernel, host asleep, \`--evidence cpu,io\`" "stalled (ok)" \
        "trigger $(field after "$facts") s after the launch"
else
    row "a0 control: 30 s kernel, host asleep, \`--evidence cpu,io\`" "NOT stalled (FAIL: the host is not quiet)" \
        "status $(field status "$facts")"
    explain a0
    failed=1
fi

say "a: 30 s kernel, --evidence cpu,io,gpu (about 40 s)"
run_job a cpu,io,gpu 30 32
facts=$work/a.facts
figures="status $(field status "$facts") after $(field took "$facts") s; gpu_util max $(field gpu_util_max "$facts"), above 0 in $(field gpu_util_busy "$facts") of $(field samples "$facts") samples; gpu_memory max $(field gpu_memory_max_mib "$facts") MiB"
if [[ $(field reason "$facts") == none && $(field status "$facts") == 0 ]]; then
    row "a: 30 s kernel, host asleep, \`--evidence cpu,io,gpu\`" "not stalled (ok)" "$figures"
else
    row "a: 30 s kernel, host asleep, \`--evidence cpu,io,gpu\`" "FAIL: $(field reason "$facts")" "$figures"
    explain a
    failed=1
fi

say "b: 5 s kernel, host asleep 40 s, --evidence cpu,io,gpu (about 25 s)"
run_job b cpu,io,gpu 5 40
facts=$work/b.facts
low=$(python3 -c "print(f'{5 + $stall - 0.5:.1f}')")
high=$(python3 -c "print(f'{5 + $stall + $interval + 2:.1f}')")
after=$(field after "$facts")
figures="trigger $after s after the launch (want $low–$high); gpu_util max $(field gpu_util_max "$facts")"
if [[ $(field reason "$facts") == stall ]] &&
    python3 -c "import sys; sys.exit(not ($low <= $after <= $high))" 2>/dev/null; then
    row "b: 5 s kernel, host asleep 40 s" "stalled in the window (ok)" "$figures"
else
    row "b: 5 s kernel, host asleep 40 s" "FAIL: $(field reason "$facts")" "$figures"
    explain b
    failed=1
fi

# c: watchd's own CPU time (schedstat, ns) over 100 probes at 100 ms while a kernel runs; sets
# `cost` to microseconds per probe.
probe_cost() {
    local evidence=$1 pid first last
    "$watchd" --stall 1h --interval 100ms --evidence "$evidence" \
        -- python3 "$work/job.py" 25 25 "$work/c.mark" >/dev/null 2>"$work/c-$evidence.stderr" &
    pid=$!
    started+=("$pid")
    sleep 8 # CuPy's start-up and the first probes (NVML's load) are over
    first=$(cut -d' ' -f1 "/proc/$pid/schedstat")
    sleep 10
    last=$(cut -d' ' -f1 "/proc/$pid/schedstat")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    cost=$(python3 -c "print(f'{($last - $first) / 100 / 1e3:.1f}')")
}
say "c: probe cost with and without gpu evidence (about 40 s)"
probe_cost cpu,io,gpu
with_gpu=$cost
probe_cost cpu,io
without_gpu=$cost
row "c: watchd CPU per probe, gpu evidence on / off (µs)" "$with_gpu / $without_gpu" \
    "NVML's share: $(python3 -c "print(f'{$with_gpu - $without_gpu:.1f}')") µs per probe (2 NVML calls per device)"
if [[ -x $gpu_cost ]]; then
    "$gpu_cost" 1000 >"$work/gpu_cost.out" 2>&1 || true
    c=$work/gpu_cost.out
    if grep -q '^unavailable ' "$c"; then
        row "c: gpu_cost" "FAIL: NVML unavailable" "$(field unavailable "$c")"
        failed=1
    else
        row "c: gpu_cost, 1,000 samples, no GPU process" "$(field devices "$c") device(s)" \
            "load() $(field load_ms "$c") ms, +$(field load_resident_kib "$c") KiB resident; sample() median $(field sample_process_median_us "$c") µs (process), $(field sample_device_median_us "$c") µs (device); p99 $(field sample_process_p99_us "$c") / $(field sample_device_p99_us "$c") µs"
    fi
else
    row "c: gpu_cost" "skipped" "$gpu_cost not built"
fi

say "d: NVML descriptors in a restarted child"
status=0
"$watchd" --restart always --restart-max 1 --restart-delay 0 --stall 1h --interval 100ms \
    --evidence cpu,io,gpu -- sh -c 'sleep 1; ls -l /proc/$$/fd' >"$work/d.out" 2>"$work/d.stderr" ||
    status=$?
if [[ $status == 125 ]]; then
    row "d: NVML descriptors in a restarted child" "skipped" "$(head -n 1 "$work/d.stderr")"
elif grep -q '/dev/nvidia' "$work/d.out"; then
    row "d: NVML descriptors in a restarted child" "FAIL: leaked" "$(grep -c /dev/nvidia "$work/d.out") descriptors"
    failed=1
else
    row "d: NVML descriptors in a restarted child" "none (ok)" "$(grep -c -- '->' "$work/d.out" || true) descriptors listed over 2 runs"
fi

echo
echo "watchd GPU evidence check: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1); $("$watchd" --version); --stall ${stall}s --interval ${interval}s; logs in $work"
echo
echo "| check | result | figures |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
exit "$failed"
