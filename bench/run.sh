#!/usr/bin/env bash
# berth's benchmarks, each printing its own table and recording its headline
# figures in target/bench/<bench>.json; `all` (the default) then prints the one
# summary table of them all (target/bench/summary.json). Release builds, made
# by scripts/build-release.sh as they ship; the benchmarks with containers need
# the test registry (scripts/test-env.sh starts it). --quick (anywhere) runs
# every benchmark short.
#   bench/run.sh [--quick]    # all, then the summary table
#   bench/run.sh summary      # the summary table of the reports in target/bench/
#   bench/run.sh idle         # idle agent VmRSS, RssAnon and threads vs prometheus-node-exporter;
#                             # binary sizes
#   bench/run.sh getinfo      # GetInfo latency over mTLS, agent RSS, binary sizes
#   bench/run.sh supervise    # death→healthy and deploy time vs docker / the shell runbook
#   bench/run.sh proxy        # failed requests and latency behind nginx: berth deploy vs docker
#                             # stop/run, and the steady state with no deploy
#   bench/run.sh metrics      # agent CPU%/RSS with 0, 20 and 50 containers at 1s and 10s
#                             # vs prometheus-node-exporter and netdata; pass cost per container
#   bench/run.sh flood        # 2,000 idle TCP + 200 stalled TLS handshakes: sockets held,
#                             # ps latency during the flood, log lines written
#   bench/run.sh fleet        # berthctl ps over 50/100/200 real agents vs a shell loop of
#                             # one berthctl --host per host, 5 at a time (--quick: 20 and 50)
#   bench/run.sh audit        # berthctl audit --verify over 100,000 chained records on a
#                             # real agent (--quick: 10,000)
#   bench/run.sh rollout      # rollout of 20 agents --batch 5 vs the ideal (slowest host per
#                             # batch, same run) and a shell loop of deploys (--quick: 10 agents)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
which=all
for arg in "$@"; do
	case "$arg" in
	--quick) export BERTH_BENCH_QUICK=1 ;;
	all | summary | idle | getinfo | supervise | proxy | metrics | flood | fleet | rollout | audit) which="$arg" ;;
	*)
		echo "bench/run.sh: unknown benchmark '$arg' (see the list at the top of bench/run.sh)" >&2
		exit 64
		;;
	esac
done
run() { [[ "$which" == all || "$which" == "$1" ]]; }
bench() {
	if [[ "$1" == supervise ]]; then
		# The agent's rollout timings (debug) show where a deploy's time goes.
		BERTH_TEST_AGENT_LOG="info,berth_agent::supervisor=debug" cargo bench -q -p berth-tests --bench "$1"
	else
		cargo bench -q -p berth-tests --bench "$1"
	fi
}

if [[ "$which" == summary ]]; then
	bench summary
	exit
fi
scripts/build-release.sh -q
if [[ "$which" == all ]]; then
	# One run, one table: reports of earlier runs would mix in.
	rm -f target/bench/*.json
fi
if run idle || run supervise || run proxy || run metrics || run flood || run rollout; then
	# shellcheck source=scripts/test-env.sh
	source scripts/test-env.sh
fi
# Quiet ones first: idle memory and latency before anything has loaded the machine.
for name in idle getinfo metrics supervise proxy fleet rollout flood audit; do
	if run "$name"; then
		bench "$name"
	fi
done
if [[ "$which" == all ]]; then
	bench summary
fi
