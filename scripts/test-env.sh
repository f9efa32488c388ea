#!/usr/bin/env bash
# Prepare the real components berth's test suite runs against (see the
# "Test environment" section of the design):
#   * Debian packages: busybox-static, docker-registry, apache2-utils (htpasswd, for
#     the authenticated registry the credential tests start), nginx, curl, ca-certificates,
#     prometheus, prometheus-node-exporter, netdata, collectd-core (+ its plugin libraries)
#   * a local registry (Debian's docker-registry) on 127.0.0.1:$BERTH_TEST_REGISTRY_PORT
#   * the test images 127.0.0.1:PORT/berth-test/app:{v1,v2,bad,crashy,cpu,mem,wrongver,depsdown,dockerhc},
#     built from busybox (tests/images/) and pushed to that registry.
#
# Usage:
#   scripts/test-env.sh [up]     prepare everything (default; idempotent, fast on rerun)
#   scripts/test-env.sh status   show whether registry and images are ready
#   scripts/test-env.sh down     stop the registry this script started
#   source scripts/test-env.sh   run `up` in a child bash, then export BERTH_TEST_REGISTRY
#
# Environment:
#   BERTH_TEST_REGISTRY_PORT  registry port on 127.0.0.1 (default 5000)
#   BERTH_TEST_DIR            state: registry config, storage, pid, logs (default /var/tmp/berth-test)
#   BERTH_TEST_FORCE_REBUILD  1 = rebuild and push the images even if unchanged
# Tests read BERTH_TEST_REGISTRY (default 127.0.0.1:5000).

# Sourced: don't let `set -e` or `exit` leak into the caller's shell; run the
# real thing as a child process and only export the registry address.
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
	if bash "${BASH_SOURCE[0]}" up; then
		export BERTH_TEST_REGISTRY="127.0.0.1:${BERTH_TEST_REGISTRY_PORT:-5000}"
		return 0
	else
		return 1
	fi
fi

set -Eeuo pipefail

PORT="${BERTH_TEST_REGISTRY_PORT:-5000}"
REGISTRY="127.0.0.1:$PORT"
REPO="$REGISTRY/berth-test/app"
TAGS=(v1 v2 bad crashy cpu mem wrongver depsdown dockerhc)
# prometheus scrapes berth's endpoint in the metrics tests; collectd-core's
# statsd + write_prometheus plugins (they need libmicrohttpd12 and
# libprotobuf-c1) receive the StatsD push, since Debian 12 has no
# prometheus-statsd-exporter; prometheus-node-exporter and netdata are the
# metrics benchmark's peers.
PACKAGES=(busybox-static docker-registry apache2-utils nginx curl ca-certificates
	prometheus prometheus-node-exporter netdata collectd-core libmicrohttpd12 libprotobuf-c1)
STATE_DIR="${BERTH_TEST_DIR:-/var/tmp/berth-test}"
REG_DIR="$STATE_DIR/registry"
REG_PID="$REG_DIR/registry.pid"
REG_LOG="$REG_DIR/registry.log"
REG_CONFIG="$REG_DIR/config.yml"
LOG_DIR="$STATE_DIR/logs"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGES_DIR="$REPO_ROOT/tests/images"
# The manifest type `docker push` (20.10) writes; asking for it makes the
# registry report the same digest Docker records in RepoDigests.
MANIFEST_V2="application/vnd.docker.distribution.manifest.v2+json"

log() { echo "test-env: $*" >&2; }
die() {
	echo "test-env: ERROR: $*" >&2
	exit 1
}
# Any unexpected failure names the command, so nothing fails silently.
# shellcheck disable=SC2154 # rc is assigned inside the trap string
trap 'rc=$?; echo "test-env: ERROR: command failed (exit $rc) at line $LINENO: $BASH_COMMAND" >&2' ERR

# curl against the local registry only; never through an HTTP proxy.
lcurl() { curl --noproxy '*' --silent --show-error --max-time 3 "$@"; }

# Run a noisy command with its output in a log file; show the tail on failure.
run_logged() {
	local logfile="$1"
	shift
	if ! "$@" >"$logfile" 2>&1; then
		tail -n 30 "$logfile" >&2 || true
		die "'$*' failed (full log: $logfile)"
	fi
}

as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "need root (or sudo) to run: $*"
	fi
}

# ---------------------------------------------------------------- packages

pkg_installed() {
	[[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# Packages start their services on install (nginx on :80, docker-registry on
# :5000 with an htpasswd config); the tests want neither.
stop_distro_service() {
	local svc="$1"
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
		log "disabling and stopping the distro's $svc service (systemd)"
		as_root systemctl disable --now "$svc" >/dev/null 2>&1 ||
			log "warning: 'systemctl disable --now $svc' failed; check it is not running"
	elif [[ -x "/etc/init.d/$svc" ]]; then
		# No systemd as PID 1 (containers): call the init script directly, since
		# invoke-rc.d would ask policy-rc.d, which denies stop as well as start.
		if as_root "/etc/init.d/$svc" status >/dev/null 2>&1; then
			log "stopping the distro's $svc service (no systemd; init script)"
			as_root "/etc/init.d/$svc" stop >/dev/null 2>&1 ||
				log "warning: '/etc/init.d/$svc stop' failed; check it is not running"
		else
			log "the distro's $svc service is not running (no systemd; good)"
		fi
		if command -v update-rc.d >/dev/null; then
			as_root update-rc.d "$svc" disable >/dev/null 2>&1 ||
				log "warning: 'update-rc.d $svc disable' failed"
		fi
	fi
}

POLICY_RC=/usr/sbin/policy-rc.d
created_policy_rc=0
cleanup() {
	if [[ $created_policy_rc == 1 ]]; then as_root rm -f "$POLICY_RC" || true; fi
}
trap cleanup EXIT

ensure_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
	if [[ ${#missing[@]} -eq 0 ]]; then
		log "packages present: ${PACKAGES[*]}"
		return
	fi
	command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
	log "installing: ${missing[*]}"
	# policy-rc.d exiting 101 tells maintainer scripts not to start services.
	# Only add (and later remove) it if the machine doesn't have one already.
	if [[ ! -e $POLICY_RC ]]; then
		printf '#!/bin/sh\n# temporary, from berth scripts/test-env.sh\nexit 101\n' | as_root tee "$POLICY_RC" >/dev/null
		as_root chmod 0755 "$POLICY_RC"
		created_policy_rc=1
	fi
	mkdir -p "$LOG_DIR"
	run_logged "$LOG_DIR/apt-update.log" as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	run_logged "$LOG_DIR/apt-install.log" as_root env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
	for p in "${missing[@]}"; do
		pkg_installed "$p" || die "package $p still not installed after apt-get (see $LOG_DIR/apt-install.log)"
		case "$p" in docker-registry | nginx | prometheus | prometheus-node-exporter | netdata) stop_distro_service "$p" ;; esac
	done
	if [[ $created_policy_rc == 1 ]]; then
		as_root rm -f "$POLICY_RC"
		created_policy_rc=0
	fi
}

# ---------------------------------------------------------------- registry

registry_up() { lcurl --fail --output /dev/null "http://$REGISTRY/v2/" 2>/dev/null; }

registry_pid() {
	local pid
	pid="$(cat "$REG_PID" 2>/dev/null || true)"
	[[ -n $pid ]] && grep -qa docker-registry "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
	return 0
}

write_registry_config() {
	mkdir -p "$REG_DIR/data"
	cat >"$REG_CONFIG" <<-EOF
		# Written by berth scripts/test-env.sh; rewritten on every start.
		version: 0.1
		log:
		  level: info
		  fields:
		    service: berth-test-registry
		storage:
		  filesystem:
		    rootdirectory: $REG_DIR/data
		  delete:
		    enabled: true
		http:
		  addr: $REGISTRY
		  secret: berth-test-registry-not-a-secret
		  headers:
		    X-Content-Type-Options: [nosniff]
	EOF
}

ensure_registry() {
	if registry_up; then
		log "registry already answering on http://$REGISTRY/v2/"
		return
	fi
	# Something on the port that isn't an open registry (for example the
	# distro's docker-registry service, which wants htpasswd auth)?
	local code
	code="$(lcurl --output /dev/null --write-out '%{http_code}' "http://$REGISTRY/v2/" 2>/dev/null || true)"
	if [[ -n $code && $code != 000 ]]; then
		die "port $PORT is taken: http://$REGISTRY/v2/ answers HTTP $code, not an open registry (distro docker-registry service? try: service docker-registry stop)"
	fi
	# Our registry from an earlier run, alive but not answering: restart it.
	local old
	old="$(registry_pid)"
	if [[ -n $old ]]; then
		log "registry pid $old is not answering; restarting it"
		kill "$old" 2>/dev/null || true
		sleep 1
	fi
	[[ -x /usr/bin/docker-registry ]] || die "/usr/bin/docker-registry missing (package docker-registry)"
	write_registry_config
	log "starting registry on $REGISTRY (log $REG_LOG)"
	echo "--- $(date -Is) starting" >>"$REG_LOG"
	# setsid+nohup: survive the caller's session/process group; all fds to
	# files so a caller reading our stdout to EOF doesn't wait on it; 9>&- so
	# it doesn't inherit (and hold forever) the lock on fd 9.
	# shellcheck disable=SC2016 # $$/$1/$2 are for the inner sh
	setsid nohup sh -c 'echo $$ >"$1"; exec /usr/bin/docker-registry serve "$2"' \
		sh "$REG_PID" "$REG_CONFIG" </dev/null >>"$REG_LOG" 2>&1 9>&- &
	local i pid
	for ((i = 0; i < 150; i++)); do # up to ~30 s
		if registry_up; then
			log "registry up (pid $(cat "$REG_PID"))"
			return
		fi
		pid="$(cat "$REG_PID" 2>/dev/null || true)"
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			tail -n 20 "$REG_LOG" >&2 || true
			die "registry exited right after start (log above, full log $REG_LOG)"
		fi
		sleep 0.2
	done
	tail -n 20 "$REG_LOG" >&2 || true
	die "registry did not answer http://$REGISTRY/v2/ within 30 s (log above, full log $REG_LOG)"
}

stop_registry() {
	local pid
	pid="$(registry_pid)"
	if [[ -z $pid ]]; then
		log "no registry started by this script is running"
		return
	fi
	kill "$pid"
	for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	rm -f "$REG_PID"
	log "stopped registry pid $pid"
}

# ---------------------------------------------------------------- images

# One hash over everything an image is made of: the busybox binary, the
# builder and the scripts it copies in (not README/selftest). Stored as a
# label, so unchanged images are reused.
inputs_hash() {
	{
		sha256sum /bin/busybox | cut -d' ' -f1
		(cd "$IMAGES_DIR" && find build-image.sh app -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
	} | sha256sum | cut -c1-32
}

local_label() {
	docker image inspect -f '{{index .Config.Labels "berth.test.inputs"}}' "$1" 2>/dev/null || true
}

# Digest of TAG in the registry, empty if absent.
remote_digest() {
	lcurl --fail --head -H "Accept: $MANIFEST_V2" "http://$REGISTRY/v2/berth-test/app/manifests/$1" 2>/dev/null |
		tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }' || true
}

# Is the local image exactly what the registry serves for TAG?
in_registry() {
	local remote
	remote="$(remote_digest "$1")"
	[[ -n $remote ]] &&
		docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$REPO:$1" 2>/dev/null | grep -qxF "$REPO@$remote"
}

ensure_image() {
	local tag="$1" hash="$2" ref="$REPO:$1" old_id
	if [[ ${BERTH_TEST_FORCE_REBUILD:-0} != 1 && $(local_label "$ref") != "$hash" ]]; then
		# Not here locally (say, `docker rmi`'d), but maybe the registry has the
		# right build: pulling it keeps the digest stable for running tests.
		if [[ -n $(remote_digest "$tag") ]] && docker pull -q "$ref" >/dev/null 2>&1 &&
			[[ $(local_label "$ref") == "$hash" ]]; then
			log "$ref: pulled the up-to-date image from the registry"
		fi
	fi
	if [[ ${BERTH_TEST_FORCE_REBUILD:-0} == 1 || $(local_label "$ref") != "$hash" ]]; then
		old_id="$(docker image inspect -f '{{.Id}}' "$ref" 2>/dev/null || true)"
		log "$ref: building"
		run_logged "$LOG_DIR/build-$tag.log" "$IMAGES_DIR/build-image.sh" "$tag" "$ref" "$hash"
		# Drop the superseded build if nothing else uses it (else it piles up).
		if [[ -n $old_id && $old_id != "$(docker image inspect -f '{{.Id}}' "$ref")" ]]; then
			docker rmi "$old_id" >/dev/null 2>&1 || log "note: old image $old_id still in use, kept"
		fi
	fi
	if in_registry "$tag"; then
		log "$ref: up to date in registry"
		return
	fi
	log "$ref: pushing"
	run_logged "$LOG_DIR/push-$tag.log" docker push "$ref"
	in_registry "$tag" ||
		die "$ref: pushed, but the registry's digest '$(remote_digest "$tag")' does not match the local image (see $LOG_DIR/push-$tag.log)"
}

# ---------------------------------------------------------------- main

take_lock() {
	command -v flock >/dev/null || die "'flock' not found (package util-linux)"
	mkdir -p "$STATE_DIR" "$REG_DIR" "$LOG_DIR"
	# Tests may call this script concurrently: one at a time.
	exec 9>"$STATE_DIR/lock"
	flock -w 900 9 || die "timed out waiting for $STATE_DIR/lock"
}

preflight() {
	local c
	for c in docker curl setsid sha256sum tar; do
		command -v "$c" >/dev/null || die "'$c' not found in PATH"
	done
	docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon ('docker info' fails)"
}

summary() {
	local tag
	echo "test-env: ready in ${SECONDS}s"
	echo "registry: $REGISTRY (http://$REGISTRY/v2/, pid $(registry_pid), storage $REG_DIR/data, log $REG_LOG)"
	echo "BERTH_TEST_REGISTRY=$REGISTRY"
	echo "images:"
	for tag in "${TAGS[@]}"; do
		echo "  $REPO:$tag  $(remote_digest "$tag")"
	done
	if [[ -n ${BERTH_TEST_REGISTRY:-} && $BERTH_TEST_REGISTRY != "$REGISTRY" ]]; then
		log "warning: BERTH_TEST_REGISTRY=$BERTH_TEST_REGISTRY in your environment, but the registry is at $REGISTRY"
	fi
}

status() {
	local tag ok=0
	if registry_up; then echo "registry: up at $REGISTRY"; else echo "registry: DOWN at $REGISTRY"; ok=1; fi
	for tag in "${TAGS[@]}"; do
		if registry_up && in_registry "$tag"; then echo "  $REPO:$tag ready"; else echo "  $REPO:$tag NOT ready"; ok=1; fi
	done
	return $ok
}

main() {
	case "${1:-up}" in
	up)
		take_lock
		ensure_packages
		preflight
		ensure_registry
		local hash tag
		hash="$(inputs_hash)"
		for tag in "${TAGS[@]}"; do ensure_image "$tag" "$hash"; done
		# Final check from the registry's side, so "ready" is never a guess.
		for tag in "${TAGS[@]}"; do
			[[ -n $(remote_digest "$tag") ]] || die "$REPO:$tag is not in the registry after push"
		done
		summary
		;;
	status) status || exit 1 ;;
	down) stop_registry ;;
	*) die "usage: $0 [up|status|down]" ;;
	esac
}

main "$@"
