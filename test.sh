#!/usr/bin/env bash
# The whole test suite: what README.md tells a newcomer to run, and what .ci/run runs.
# Integration tests drive the real binary on real processes; a few need python3 (signal
# recorder, Prometheus text parser) and util-linux's unshare (PID 1 tests, run as root).
#
# The suites about the tree run twice: as the rest do (--cgroup auto, which is the /proc tree
# unless watchd's cgroup is delegated to it), then with the command in a cgroup of its own
# (--cgroup on), where this machine lets root make one.
set -euo pipefail
cd "$(dirname "$0")"
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check prometheus_client
fi
cargo test --all-targets "$@"
if [ "$(id -u)" = 0 ] && { [ -w /sys/fs/cgroup/unified/cgroup.procs ] || [ -w /sys/fs/cgroup/cgroup.procs ]; }; then
    WATCHD_TEST_CGROUP=on cargo test --test core --test liveness --test runaway --test faults \
        --test hardening --test dump --test restart --test output --test cgroup "$@"
else
    echo "test.sh: skipped the --cgroup on pass (needs root and a writable cgroup2 hierarchy)"
fi
