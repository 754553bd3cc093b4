#!/usr/bin/env bash
# The benchmarks behind BENCHMARKS.md: each line of output is one JSON object printed by
# `meridian bench fire`. Release build; takes about 4 minutes on the 2-core machine.
#   benches/run.sh            # all of them
#   benches/run.sh steady     # one: steady | ten-k | million | herd
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
m=target/release/meridian
export MERIDIAN_LOG=warn
run() { echo "# $*" >&2; "$m" bench fire "$@"; }
which=${1:-all}
case "$which" in all|steady|ten-k|million|herd) ;; *) echo "unknown benchmark: $which" >&2; exit 2 ;; esac
want() { [ "$which" = all ] || [ "$which" = "$1" ]; }
want steady && run --jobs 10000 --period 10 --duration 30       # 1,000 firings/s
want ten-k && run --jobs 100000 --period 10 --duration 30       # 10,000 firings/s
want million && run --jobs 1000000 --period 100 --duration 30   # 1,000,000 jobs, 10,000 firings/s
want herd && run --jobs 100000 --pattern herd --duration 10     # 100,000 due in the same second
exit 0
