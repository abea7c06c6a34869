#!/usr/bin/env bash
# Container start-to-exit: `docker run --rm IMAGE true` with watchd as the ENTRYPOINT, with
# Docker's own init (`--init`, tini) and with no init, in one run; prints a table of medians.
#
#   bench/container.sh [--runs N]     (N runs of each, default 20)
#
# Uses the engine at $DOCKER_HOST (or the default socket) if one answers; else, as root, starts
# a private one with .ci/docker-engine and stops it at the end. Builds watchd's static build
# into <target>/static as bench/run.sh does, and imports one root filesystem (busybox-static
# and that watchd) under two tags, one with README's ENTRYPOINT and one with none, so the
# three columns run the same image content. Runs go round-robin, the order rotating each
# round, after 3 warm-up runs of each.
set -euo pipefail

runs=20
while (($#)); do
    case "$1" in
        --runs)
            runs=${2:?--runs needs a number}
            shift 2
            ;;
        -h | --help)
            sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench/container.sh: unknown argument '$1' (usage: bench/container.sh [--runs N])" >&2
            exit 2
            ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
case "$target" in /*) ;; *) target=$repo/$target ;; esac

work=$(mktemp -d /tmp/watchd-container-bench.XXXXXX)
started_engine=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    docker rmi watchd-bench:watchd watchd-bench:plain >/dev/null 2>&1 || true
    if ((started_engine)); then
        "$repo/.ci/docker-engine" stop || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! docker info >/dev/null 2>&1; then
    echo "bench: no engine at ${DOCKER_HOST:-the default socket}; starting a private one" >&2
    started_engine=1
    eval "$("$repo/.ci/docker-engine" start)"
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
echo "bench: building watchd (release, +crt-static, $triple) into $target/static" >&2
(cd "$repo" && CARGO_TARGET_DIR=$target/static \
    RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release --quiet --target "$triple")
watchd=$target/static/$triple/release/watchd

busybox=$(command -v busybox) || {
    echo "bench: no busybox (apt-get install busybox-static)" >&2
    exit 2
}
root=$work/root
mkdir -p "$root"/{bin,usr/local/bin,etc,proc,sys,dev,tmp}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
cp "$watchd" "$root/usr/local/bin/watchd"
for applet in $("$busybox" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
done
tar -C "$root" -cf "$work/rootfs.tar" .
docker import --change 'ENTRYPOINT ["/usr/local/bin/watchd", "--"]' "$work/rootfs.tar" watchd-bench:watchd >/dev/null
docker import "$work/rootfs.tar" watchd-bench:plain >/dev/null

names=("watchd" "tini (--init)" "no init")
commands=(
    "docker run --rm watchd-bench:watchd true"
    "docker run --rm --init watchd-bench:plain true"
    "docker run --rm watchd-bench:plain true"
)

# One timed run; its wall time in microseconds on stdout.
time_one() {
    local start end
    start=$(date +%s%N)
    $1 >/dev/null
    end=$(date +%s%N)
    echo $(((end - start) / 1000))
}

for i in 0 1 2; do
    for cmd in "${commands[@]}"; do $cmd >/dev/null; done
done
declare -a samples=("" "" "")
for ((round = 0; round < runs; round++)); do
    for ((k = 0; k < 3; k++)); do
        i=$(((round + k) % 3))
        samples[i]+="$(time_one "${commands[i]}") "
    done
done

echo "machine: $(nproc) CPUs, kernel $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg) at end"
echo "engine: $(docker version -f 'server {{.Server.Version}}, client {{.Client.Version}}'); docker-init: $(docker info -f '{{.InitBinary}}' 2>/dev/null) = $(readlink -f "$(command -v docker-init 2>/dev/null || echo none)")"
echo "watchd: $(sha256sum "$watchd" | cut -c1-16)… (static), $runs runs of each, round-robin"
echo
echo "| \`docker run --rm IMAGE true\` | median (ms) | min (ms) | max (ms) | median − no init (ms) |"
echo "|---|---|---|---|---|"
python3 - "${names[@]}" -- "${samples[@]}" <<'EOF'
import statistics, sys
args = sys.argv[1:]
cut = args.index("--")
names, samples = args[:cut], [[int(x) / 1000 for x in s.split()] for s in args[cut + 1:]]
base = statistics.median(samples[-1])
for name, s in zip(names, samples):
    m = statistics.median(s)
    print(f"| {name} | {m:.1f} | {min(s):.1f} | {max(s):.1f} | {m - base:+.1f} |")
EOF
