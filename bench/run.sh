#!/usr/bin/env bash
# berth's benchmarks, each printing a table. Release builds.
#   bench/run.sh            # all
#   bench/run.sh getinfo    # GetInfo latency over mTLS, agent RSS, binary sizes
#   bench/run.sh metrics    # agent CPU%/RSS with 0 and 20 containers at 1s and 10s vs
#                           # prometheus-node-exporter; collection cost per container
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
which="${1:-all}"
cargo build --release --bins -q
if [[ "$which" == all || "$which" == getinfo ]]; then
	cargo bench -q -p berth-tests --bench getinfo
fi
if [[ "$which" == all || "$which" == metrics ]]; then
	cargo bench -q -p berth-tests --bench metrics
fi
