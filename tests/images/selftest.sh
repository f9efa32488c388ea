#!/usr/bin/env bash
# Check that the berth test images behave as the tests expect, against real
# containers pulled from the test registry. Run after scripts/test-env.sh:
#
#   tests/images/selftest.sh
#
# Every container started here carries the label berth.test.selftest=true
# (plus berth.test=true) and is removed on exit.
set -euo pipefail

REPO="${BERTH_TEST_REGISTRY:-127.0.0.1:5000}/berth-test/app"
LABELS=(--label berth.test=true --label berth.test.selftest=true)
failures=0

cleanup() {
	local ids
	mapfile -t ids < <(docker ps -aq --filter label=berth.test.selftest=true)
	if ((${#ids[@]})); then docker rm -f "${ids[@]}" >/dev/null; fi
}
trap cleanup EXIT

pass() { echo "ok   $*"; }
fail() {
	echo "FAIL $*"
	failures=$((failures + 1))
}
expect() { # expect WHAT WANT GOT
	if [[ $2 == "$3" ]]; then pass "$1 = $3"; else fail "$1: want '$2', got '$3'"; fi
}

hostport() { docker port "$1" 8000/tcp | head -n1 | sed 's/.*://'; }

# HTTP status and body of PATH on container C's published port.
get() {
	local body code
	body="$(mktemp)"
	code="$(curl --noproxy '*' -s -o "$body" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$(hostport "$1")$2" || true)"
	echo "$code $(cat "$body")"
	rm -f "$body"
}

wait_http() { # until / answers (busybox httpd starts in milliseconds)
	for _ in {1..50}; do
		[[ $(get "$1" /) != 000* ]] && return 0
		sleep 0.1
	done
	fail "$1 never answered on :8000"
}

# docker stop must return quickly: PID 1 has to handle SIGTERM itself.
stop_fast() {
	local t0 t1 ms
	t0=$(date +%s%N)
	docker stop -t 10 "$1" >/dev/null
	t1=$(date +%s%N)
	ms=$(((t1 - t0) / 1000000))
	if ((ms < 2000)); then pass "$2: docker stop took ${ms} ms"; else fail "$2: docker stop took ${ms} ms"; fi
	expect "$2: exit code after SIGTERM" 0 "$(docker inspect -f '{{.State.ExitCode}}' "$1")"
}

echo "== pull after rmi"
docker rmi "$REPO:v1" >/dev/null 2>&1 || true
if docker pull -q "$REPO:v1" >/dev/null; then pass "docker pull $REPO:v1"; else fail "docker pull $REPO:v1"; fi

for tag in v1 v2 cpu mem; do
	echo "== $tag"
	c="$(docker run -d "${LABELS[@]}" -p 127.0.0.1::8000 "$REPO:$tag")"
	wait_http "$c"
	for p in /health /__lbheartbeat__ /__heartbeat__; do expect "$tag GET $p" "200 ok" "$(get "$c" $p)"; done
	expect "$tag GET /__version__" "200 {\"version\":\"$tag\"}" "$(get "$c" /__version__)"
	expect "$tag GET /" "200 $tag" "$(get "$c" /)"
	expect "$tag exec wget health" "ok" "$(docker exec "$c" wget -q -O- http://127.0.0.1:8000/health)"
	expect "$tag exec env" "BERTH_TEST_VARIANT=$tag" "$(docker exec "$c" sh -c 'env | grep ^BERTH_TEST_VARIANT=')"
	if [[ $tag == cpu ]]; then
		sleep 1
		cpu="$(docker stats --no-stream --format '{{.CPUPerc}}' "$c")"
		if ((${cpu%%.*} >= 50)); then pass "cpu burns: $cpu"; else fail "cpu burns only $cpu"; fi
	fi
	stop_fast "$c" "$tag"
done

echo "== bad"
c="$(docker run -d "${LABELS[@]}" -p 127.0.0.1::8000 "$REPO:bad")"
wait_http "$c"
for p in /health /__lbheartbeat__ /__heartbeat__; do
	got="$(get "$c" $p)"
	expect "bad GET $p status" 404 "${got%% *}"
done
expect "bad GET /" "200 bad" "$(get "$c" /)"
if docker exec "$c" wget -q -O- http://127.0.0.1:8000/health >/dev/null 2>&1; then
	fail "bad: exec health check passed"
else
	pass "bad: exec health check fails"
fi
stop_fast "$c" bad

echo "== crashy"
c="$(docker run -d "${LABELS[@]}" "$REPO:crashy")"
expect "crashy exit code" 3 "$(docker wait "$c")"
expect "crashy output" $'crashy: starting\ncrashy: exiting with 3' "$(docker logs "$c" 2>&1)"
start="$(docker inspect -f '{{.State.StartedAt}}' "$c")"
end="$(docker inspect -f '{{.State.FinishedAt}}' "$c")"
secs=$(($(date -d "$end" +%s%N) / 1000000 - $(date -d "$start" +%s%N) / 1000000))
if ((secs >= 800 && secs < 3000)); then pass "crashy ran ${secs} ms"; else fail "crashy ran ${secs} ms"; fi

echo "== mem (--memory 64m)"
c="$(docker run -d "${LABELS[@]}" --memory 64m --memory-swap 64m "$REPO:mem")"
docker wait "$c" >/dev/null
expect "mem OOMKilled" true "$(docker inspect -f '{{.State.OOMKilled}}' "$c")"
expect "mem exit code" 137 "$(docker inspect -f '{{.State.ExitCode}}' "$c")"

echo
if ((failures)); then
	echo "selftest: $failures check(s) FAILED"
	exit 1
fi
echo "selftest: all checks passed"
