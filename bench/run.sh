#!/usr/bin/env bash
# berth's benchmarks, each printing a table. Release builds.
#   bench/run.sh            # all
#   bench/run.sh getinfo    # GetInfo latency over mTLS, agent RSS, binary sizes
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
which="${1:-all}"
cargo build --release --bins -q
if [[ "$which" == all || "$which" == getinfo ]]; then
	cargo bench -q -p berth-tests --bench getinfo
fi
