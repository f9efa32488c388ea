#!/usr/bin/env bash
# berth for real on this host, in ./.berth-quickstart:
# builds berth, mints a dev CA and certificates, starts berth-agent on
# 127.0.0.1:7443, asks it who it is, then builds a demo image (busybox httpd,
# pushed to a local registry on 127.0.0.1:5000), deploys it health-gated and
# shows `berthctl ps`. The agent runs as you; installing the registry and
# busybox packages needs root or sudo (scripts/test-env.sh).
#
#   scripts/quickstart.sh          # start (or restart) the quickstart agent
#   scripts/quickstart.sh stop     # stop it
#
# Afterwards, talk to it yourself:
#   export BERTH_HOST=127.0.0.1:7443 BERTH_TLS_DIR=$PWD/.berth-quickstart/tls
#   target/release/berthctl info
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
QS="$ROOT/.berth-quickstart"
BIN="$ROOT/target/release"
ADDR="127.0.0.1:${BERTH_QUICKSTART_PORT:-7443}"
say() { printf '\n== %s\n' "$*"; }

stop_agent() {
	if [[ -f "$QS/agent.pid" ]] && kill -0 "$(cat "$QS/agent.pid")" 2>/dev/null; then
		kill -TERM "$(cat "$QS/agent.pid")"
		for _ in $(seq 50); do kill -0 "$(cat "$QS/agent.pid")" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$QS/agent.pid"
}

if [[ "${1:-}" == "stop" ]]; then
	if [[ -f "$QS/agent.addr" && -x "$BIN/berthctl" ]]; then
		BERTH_HOST="$ADDR" BERTH_TLS_DIR="$QS/tls" "$BIN/berthctl" rm demo >/dev/null 2>&1 || true
	fi
	stop_agent
	echo "quickstart agent stopped (and its demo service removed)"
	exit 0
fi

command -v cargo >/dev/null || { echo "quickstart: cargo is missing (install Rust with rustup)" >&2; exit 1; }

say "Building berth (release)"
scripts/build-release.sh

say "Minting a dev CA, an agent certificate for 127.0.0.1/localhost and an operator certificate"
mkdir -p "$QS"
if [[ ! -f "$QS/tls/ca.pem" ]]; then
	"$BIN/berthctl" certs init --dir "$QS/tls"
	"$BIN/berthctl" certs issue agent --dir "$QS/tls" --name agent --san 127.0.0.1 --san localhost
	"$BIN/berthctl" certs issue client --dir "$QS/tls" --name "${USER:-me}" --role operator
else
	echo "reusing $QS/tls"
fi

cat >"$QS/agent.toml" <<TOML
# The quickstart agent: every path under $QS so nothing needs root.
listen              = "$ADDR"
listen_address_file = "$QS/agent.addr"
state_dir           = "$QS/state"
env_dir             = "$QS/env"
[tls]
ca   = "$QS/tls/ca.pem"
cert = "$QS/tls/agent.pem"
key  = "$QS/tls/agent-key.pem"
[docker]
instance = "quickstart"       # its containers carry berth.instance=quickstart
[metrics]
prometheus_listen = ""
TOML
"$BIN/berth-agent" check-config --config "$QS/agent.toml"

say "Starting berth-agent on $ADDR (log: $QS/agent.log)"
stop_agent
rm -f "$QS/agent.addr"
nohup "$BIN/berth-agent" --config "$QS/agent.toml" >>"$QS/agent.log" 2>&1 &
echo $! >"$QS/agent.pid"
for _ in $(seq 100); do
	[[ -s "$QS/agent.addr" ]] && break
	kill -0 "$(cat "$QS/agent.pid")" 2>/dev/null || { tail -20 "$QS/agent.log" >&2; echo "quickstart: the agent exited" >&2; exit 1; }
	sleep 0.1
done
[[ -s "$QS/agent.addr" ]] || { tail -20 "$QS/agent.log" >&2; echo "quickstart: the agent did not start listening" >&2; exit 1; }

export BERTH_HOST="$ADDR" BERTH_TLS_DIR="$QS/tls"
say "berthctl info"
"$BIN/berthctl" info

say "Building the demo image and the local registry it is pulled from"
scripts/test-env.sh >/dev/null

cat >"$QS/demo.toml" <<TOML
# A demo service: busybox httpd answering /health and /__lbheartbeat__ on :8000.
name     = "demo"
image    = "127.0.0.1:5000/berth-test/app:v1"
ports    = ["8000"]
restart  = "always"
[resources]
memory = "64m"
cpus   = 0.5
[health]
http     = "/__lbheartbeat__"
interval = "2s"
timeout  = "1s"
retries  = 3
TOML

say "berthctl apply -f $QS/demo.toml"
"$BIN/berthctl" apply -f "$QS/demo.toml"

say "berthctl ps"
"$BIN/berthctl" ps
port=$("$BIN/berthctl" ps -o json | sed -n 's/.*"0\.0\.0\.0:\([0-9]*\)->8000\/tcp".*/\1/p' | head -1)
if [[ -n "$port" ]]; then
	say "curl http://127.0.0.1:$port/__version__"
	curl -fsS "http://127.0.0.1:$port/__version__"; echo
fi

cat <<MSG

Deploy v2, break it with a bad image, roll back:
  $BIN/berthctl deploy demo --image 127.0.0.1:5000/berth-test/app:v2
  $BIN/berthctl deploy demo --image 127.0.0.1:5000/berth-test/app:bad   # fails its health check, v2 stays
  $BIN/berthctl history demo
  $BIN/berthctl rollback demo

The agent keeps running (pid $(cat "$QS/agent.pid")). Try:
  export BERTH_HOST=$ADDR BERTH_TLS_DIR=$QS/tls
  $BIN/berthctl info --output json
Stop it with: scripts/quickstart.sh stop
MSG
