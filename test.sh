#!/usr/bin/env bash
# The whole test suite: what README.md tells a newcomer to run, and what .ci/run runs.
# Integration tests drive the real binary on real processes; a few need python3 (signal
# recorder, Prometheus text parser) and util-linux's unshare (PID 1 tests, run as root).
set -euo pipefail
cd "$(dirname "$0")"
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check prometheus_client
fi
cargo test --all-targets "$@"
