#!/usr/bin/env bash
# watchd vs `tini -s`, `dumb-init` and `timeout 1h`, side by side, one table (bench/README.md).
#
#   bench/run.sh [--quick]
#
# Builds watchd (release) into $CARGO_TARGET_DIR or target/, and its static build (+crt-static)
# into <target>/static/, installs tini, dumb-init and hyperfine from Debian if missing (as root),
# compiles the signal-latency and probe-floor helpers with gcc, runs every measurement and
# prints the tables; results.json and results.md land in <target>/bench/.
# --quick: few iterations, small trees, short spans (a smoke run, well under a minute once
# built). Exits non-zero if any measurement failed to produce a number.
set -euo pipefail

quick=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=(--quick) ;;
        -h | --help)
            sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench/run.sh: unknown argument '$arg' (usage: bench/run.sh [--quick])" >&2
            exit 2
            ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target=$repo/$target ;; esac
out=$target/bench

# Tools: command -> Debian package.
declare -A package=(
    [tini]=tini [tini-static]=tini [dumb-init]=dumb-init [hyperfine]=hyperfine
    [gcc]=gcc [python3]=python3
)
missing=()
for cmd in "${!package[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${package[$cmd]}")
done
if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ $(id -u) -ne 0 ]]; then
        echo "bench/run.sh: missing ${missing[*]}; run as root to install them, or: apt-get install -y ${missing[*]}" >&2
        exit 2
    fi
    echo "bench: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if [[ " ${missing[*]} " == *" gcc "* ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libc6-dev >/dev/null
    fi
fi

echo "bench: building watchd (release) into $target" >&2
(cd "$repo" && CARGO_TARGET_DIR=$target cargo build --release --quiet)
# The static build README's "In a container" recommends, in a target dir of its own (other
# RUSTFLAGS would otherwise rebuild the dynamic one each time); --target keeps the flag away
# from build scripts and proc macros, and puts the binary under <dir>/<triple>/release/.
triple=$(rustc -vV | sed -n 's/^host: //p')
static_target=$target/static
echo "bench: building watchd (release, +crt-static, $triple) into $static_target" >&2
(cd "$repo" && CARGO_TARGET_DIR=$static_target \
    RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release --quiet --target "$triple")
static_watchd=$static_target/$triple/release/watchd
mkdir -p "$out"
gcc -O2 -Wall -Wextra -o "$out/siglat" "$repo/bench/siglat.c"
gcc -O2 -Wall -Wextra -o "$out/floor" "$repo/bench/floor.c"

# Every process of the run inherits this token; on any exit, whatever still carries it dies.
token="$$-$(date +%s%N)-$RANDOM"
export BENCH_RUN_TOKEN=$token
bench_pid=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # From here on our own helpers (grep, sleep) must not carry the token, or a sweep would
    # take them for leftovers.
    unset BENCH_RUN_TOKEN
    if [[ -n $bench_pid ]] && kill -0 "$bench_pid" 2>/dev/null; then
        kill -TERM "$bench_pid" 2>/dev/null || true # bench.py kills its own tree, in ≤ 10 s
        wait "$bench_pid" 2>/dev/null || true
    fi
    # Anything of this run still alive (normally nothing: bench.py cleans up after itself).
    local env pid
    for _ in 1 2 3; do
        local found=0
        for env in /proc/[0-9]*/environ; do
            pid=${env#/proc/}
            pid=${pid%/environ}
            [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
            if grep -qzxF "BENCH_RUN_TOKEN=$token" "$env" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null || true
                found=1
            fi
        done
        ((found)) || break
        sleep 0.1
    done
    # The cgroup bench.py made for the cgroup floor, if it could not remove it itself (its
    # processes are gone by now, so it is empty). Only a name of this run's.
    local cg_record=$out/cgroup-floor.path cg
    if [[ -f $cg_record ]]; then
        cg=$(<"$cg_record")
        if [[ ${cg##*/} == "watchd-bench-$token" && -d $cg ]]; then
            rmdir "$cg" 2>/dev/null || echo "bench/run.sh: could not remove $cg" >&2
        fi
        rm -f "$cg_record"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

python3 "$repo/bench/bench.py" --watchd "$target/release/watchd" \
    --watchd-static "$static_watchd" --siglat "$out/siglat" --floor "$out/floor" --out "$out" --token "$token" "${quick[@]}" &
bench_pid=$!
wait "$bench_pid"
