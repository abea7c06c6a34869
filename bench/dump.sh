#!/usr/bin/env bash
# The dump's cost for a tree of 1,000 sleeping processes (issue 13, point 4; target: under
# 50 ms): snapshot, stderr picture and `dump` event, ten rounds, release build. Runs the
# ignored test `dump::tests::dump_1000_processes` twice: as a dump at a stall reads it (idle
# times from /proc/PID/sched), and with every idle time known from the sampler, as after a
# probe. Needs 1,000 free pids; the test kills its sleeps on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
run() {
    cargo test --release --quiet --lib -- --ignored --nocapture --exact \
        dump::tests::dump_1000_processes 2>&1 | grep '^dump of 1,000'
}
run
DUMP_SAMPLER_KNOWS=1 run
