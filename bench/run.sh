#!/usr/bin/env bash
# berth's benchmarks, each printing a table. Release builds; the supervision
# benchmark needs the test registry (scripts/test-env.sh starts it).
#   bench/run.sh              # all
#   bench/run.sh getinfo      # GetInfo latency over mTLS, agent RSS, binary sizes
#   bench/run.sh supervise    # death→healthy and deploy time vs docker / the shell runbook
#   bench/run.sh proxy        # failed requests and latency behind nginx: berth deploy vs docker stop/run
#   bench/run.sh metrics [--quick]  # agent CPU%/RSS with 0, 20 and 50 containers at 1s and 10s
#                             # vs prometheus-node-exporter and netdata; pass cost per container
#   bench/run.sh flood [--quick]  # 2,000 idle TCP + 200 stalled TLS handshakes: sockets held,
#                             # ps latency during the flood, log lines written
#   bench/run.sh fleet [--quick]  # berthctl ps over 50/100/200 real agents vs a shell loop of
#                             # one berthctl --host per host, 5 at a time (--quick: 20 and 50)
#   bench/run.sh audit [--quick]  # berthctl audit --verify over 100,000 chained records on a
#                             # real agent (--quick: 10,000)
#   bench/run.sh rollout [--quick]  # rollout of 20 agents --batch 5 vs the ideal (slowest host per
#                             # batch, same run) and a shell loop of deploys (--quick: 10 agents)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
which="${1:-all}"
if [[ "${2:-}" == "--quick" ]]; then export BERTH_BENCH_QUICK=1; fi
cargo build --release --bins -q
run() { [[ "$which" == all || "$which" == "$1" ]]; }
if run getinfo; then
	cargo bench -q -p berth-tests --bench getinfo
fi
if run supervise || run proxy || run metrics || run flood || run rollout; then
	# shellcheck source=scripts/test-env.sh
	source scripts/test-env.sh
fi
if run supervise; then
	# The agent's rollout timings (debug) show where a deploy's time goes.
	BERTH_TEST_AGENT_LOG="info,berth_agent::supervisor=debug" cargo bench -q -p berth-tests --bench supervise
fi
if run proxy; then
	cargo bench -q -p berth-tests --bench proxy
fi
if run metrics; then
	cargo bench -q -p berth-tests --bench metrics
fi
if run flood; then
	cargo bench -q -p berth-tests --bench flood
fi
if run fleet; then
	cargo bench -q -p berth-tests --bench fleet
fi
if run rollout; then
	cargo bench -q -p berth-tests --bench rollout
fi
if run audit; then
	cargo bench -q -p berth-tests --bench audit
fi
