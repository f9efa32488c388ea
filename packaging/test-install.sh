#!/usr/bin/env bash
# End-to-end test of the .deb on a real systemd: installs it into a Debian
# container that runs systemd as PID 1 (rootfs from debootstrap, `docker
# import`ed) with the host's Docker socket mounted, then checks
#   1. install: dirs made, unit enabled, NOT started (no TLS yet) and says
#      so; started anyway, it gives up after StartLimitBurst tries
#   2. configure TLS + start: active (Type=notify), a deployed service runs
#      with its env file and limits; the unit's sandbox lets `nginx -t`,
#      `nginx -s reload` and writes to conf.d, env and state dirs work, and
#      nothing else in /etc or /usr is writable
#      SIGKILL: systemd restarts the agent, which adopts the container
#   3. upgrade (reinstall): agent restarted, edited agent.toml kept
#   4. reboot: container stopped, the service's container and its network
#      holder stopped too (as a host reboot would), container started: the
#      agent comes back by itself
#      and the service is running again at the same revision, env and limits
#   5. remove: agent stopped, state kept; purge: state and /etc/berth gone
#   6. the .rpm's scriptlets on the same systemd: install (enabled, not
#      started), upgrade (restarted, config kept), erase (stopped, disabled,
#      state kept)
# Fails loudly at the first thing that is not so; nothing is skipped.
#
#   packaging/test-install.sh [DEB [RPM]]   # default: those in target/packages/
#
# Needs root, Docker, debootstrap (installed with apt-get if missing), the
# test registry and images (scripts/test-env.sh, run from here). The systemd
# image is cached as berth-pkgtest/debian-systemd:<recipe hash>; every
# container this makes carries the label berth.pkgtest.run=<run id> (the
# agent's service containers: berth.instance=pkgtest-<run id>) and is
# removed on exit, pass or fail.
#
# Environment: BERTH_DEBIAN_MIRROR (default http://deb.debian.org/debian),
# BERTH_PKGTEST_KEEP=1 keeps the containers for a look after a failure.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MIRROR="${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# What the systemd "host" has: systemd as init, and what the postinst uses.
# nginx: to check the unit's sandbox lets `nginx -t` and `nginx -s reload`
# work (step 2); rpm: to run the .rpm's scriptlets on the same systemd (6).
BASE_PACKAGES=systemd,systemd-sysv,dbus,init-system-helpers,ca-certificates,nginx,rpm
WORK="${BERTH_PKGTEST_DIR:-/var/tmp/berth-pkgtest}"
RUN="$$-$(date +%s)"
NAME="berth-pkgtest-$RUN"
INSTANCE="pkgtest-$RUN"
T=120 # seconds any single wait may take before the test fails

log() { echo "test-install: $*" >&2; }
die() {
	echo "test-install: FAILED: $*" >&2
	if [[ -n ${started:-} ]]; then
		echo "--- systemctl status berth-agent" >&2
		docker exec "$NAME" systemctl status --no-pager berth-agent >&2 2>&1 || true
		echo "--- journalctl -u berth-agent (last 40)" >&2
		docker exec "$NAME" journalctl -u berth-agent --no-pager -n 40 >&2 2>&1 || true
	fi
	exit 1
}
# shellcheck disable=SC2154 # rc is assigned inside the trap string
trap 'rc=$?; echo "test-install: ERROR: command failed (exit $rc) at line $LINENO: $BASH_COMMAND" >&2' ERR

cleanup() {
	if [[ ${BERTH_PKGTEST_KEEP:-0} == 1 ]]; then
		log "BERTH_PKGTEST_KEEP=1: leaving container $NAME and instance $INSTANCE's containers"
		return
	fi
	local ids
	ids="$(docker ps -aq --filter "label=berth.pkgtest.run=$RUN" --filter "label=berth.instance=$INSTANCE" 2>/dev/null || true)"
	ids="$ids $(docker ps -aq --filter "label=berth.pkgtest.run=$RUN" 2>/dev/null || true)"
	ids="$ids $(docker ps -aq --filter "label=berth.instance=$INSTANCE" 2>/dev/null || true)"
	# shellcheck disable=SC2086 # word splitting of the id list is wanted
	[[ -z ${ids// /} ]] || docker rm -f -v $ids >/dev/null 2>&1 || true
	[[ -z ${rootfs:-} ]] || rm -rf "$rootfs"
}
trap cleanup EXIT

# Runs a command in the systemd container (in_box_i: with stdin).
in_box() { docker exec "$NAME" "$@"; }
in_box_i() { docker exec -i "$NAME" "$@"; }
berthctl() { in_box berthctl --host "127.0.0.1:$PORT" "$@"; }
# wait_for WHAT CMD...: polls CMD until it succeeds, at most $T seconds.
wait_for() {
	local what="$1" i
	shift
	for ((i = 0; i < T * 4; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.25
	done
	die "$what (waited ${T}s for: $*)"
}
# has [grep options] PATTERN: grep -q over stdin that reads all of stdin
# first: a bare `cmd | grep -q` fails under pipefail when grep exits early
# and cmd dies of SIGPIPE.
has() {
	local text
	text="$(cat)"
	grep -q "$@" <<<"$text"
}
expect_eq() {
	[[ $2 == "$3" ]] || die "$1: expected '$3', got '$2'"
	log "ok: $1 = $3"
}

# ---------------------------------------------------------------- preflight

[[ $EUID -eq 0 ]] || die "run as root (debootstrap, docker)"
command -v docker >/dev/null || die "docker is missing"
docker info >/dev/null 2>&1 || die "the Docker Engine does not answer (docker info failed)"
if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap"
	DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
fi

deb="${1:-}"
if [[ -z $deb ]]; then
	shopt -s nullglob
	debs=(target/packages/*.deb)
	shopt -u nullglob
	[[ ${#debs[@]} -eq 1 ]] || die "found ${#debs[@]} .deb files in target/packages/; run packaging/build.sh first or name one"
	deb="${debs[0]}"
fi
[[ -f $deb ]] || die "$deb: no such file"
deb="$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"
rpm="${2:-}"
if [[ -z $rpm ]]; then
	shopt -s nullglob
	rpms=("$(dirname "$deb")"/*.rpm)
	shopt -u nullglob
	[[ ${#rpms[@]} -eq 1 ]] || die "found ${#rpms[@]} .rpm files next to $deb; run packaging/build.sh first or name one"
	rpm="${rpms[0]}"
fi
[[ -f $rpm && $(dirname "$rpm") -ef $(dirname "$deb") ]] || die "$rpm: no such file, or not in the .deb's directory"

# The registry and test images (idempotent; fast when ready).
# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh || die "scripts/test-env.sh failed: no registry/test images"
IMAGE_V1="$BERTH_TEST_REGISTRY/berth-test/app:v1"

# ---------------------------------------------------------------- the systemd image

recipe="$SUITE $BASE_PACKAGES $MIRROR v1"
BASE="berth-pkgtest/debian-systemd:$(echo "$recipe" | sha256sum | cut -c1-12)"
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
	mkdir -p "$WORK"
	rootfs="$(mktemp -d "$WORK/rootfs.XXXXXX")"
	log "debootstrap $SUITE ($BASE_PACKAGES) from $MIRROR into $rootfs (a few minutes, once)"
	debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log $WORK/debootstrap.log)"; }
	# No consoles in a container: gettys would only fail. nginx starts only
	# when the test says, on a port it picks (the container shares the
	# host's network).
	rm -f "$rootfs"/etc/systemd/system/getty.target.wants/* \
		"$rootfs"/etc/systemd/system/multi-user.target.wants/nginx.service \
		"$rootfs"/etc/nginx/sites-enabled/default
	echo berth-pkgtest >"$rootfs/etc/hostname"
	tar -C "$rootfs" -c . | docker import --change 'CMD ["/sbin/init"]' --change 'LABEL berth.pkgtest=base' - "$BASE" >/dev/null
	rm -rf "$rootfs"
	rootfs=
	log "made $BASE"
fi

# ---------------------------------------------------------------- boot

# systemd as PID 1 in Docker on cgroup v1: it needs the cgroup tree writable
# (host cgroup namespace, so the paths it reads in /proc/self/cgroup are the
# ones it sees), CAP_SYS_ADMIN for its mounts and the unit's sandboxing, and
# seccomp off for the namespace syscalls. (--privileged would be simpler,
# but fails on an engine that lacks a capability itself.) Host network: the
# agent probes the service containers on Docker's bridge, as on a real host.
log "booting $NAME from $BASE"
started=1
docker run -d --name "$NAME" --label "berth.pkgtest.run=$RUN" \
	--cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add SYS_PTRACE --cap-add SYS_NICE \
	--cap-add IPC_LOCK --cap-add SYS_CHROOT --cap-add AUDIT_CONTROL \
	--security-opt seccomp=unconfined --security-opt apparmor=unconfined \
	--cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
	--tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
	--network host \
	-v /var/run/docker.sock:/run/docker.sock \
	-v "$(dirname "$deb"):/pkg:ro" \
	-e container=docker --stop-signal SIGRTMIN+3 --stop-timeout 60 \
	"$BASE" >/dev/null || die "cannot start a systemd container (see the docker error above)"

booted() {
	local s
	s="$(in_box systemctl is-system-running 2>/dev/null || true)"
	[[ $s == running || $s == degraded ]]
}
wait_for "systemd in $NAME did not finish booting" booted
expect_eq "PID 1 in the container" "$(in_box cat /proc/1/comm)" systemd
failed_units="$(in_box systemctl --failed --plain --no-legend)"
[[ -z $failed_units ]] || log "note: failed units at boot (not ours): $failed_units"

# ---------------------------------------------------------------- 1. install

log "1. dpkg -i $(basename "$deb")"
install_out="$(in_box dpkg -i "/pkg/$(basename "$deb")" 2>&1)" || die "dpkg -i failed:
$install_out"
echo "$install_out"
grep -q "enabled, but not started" <<<"$install_out" ||
	die "postinst did not say why the agent was not started:
$install_out"
expect_eq "is-enabled after install" "$(in_box systemctl is-enabled berth-agent || true)" enabled
expect_eq "is-active before TLS exists" "$(in_box systemctl is-active berth-agent || true)" inactive
expect_eq "enablement symlink" \
	"$(in_box readlink /etc/systemd/system/multi-user.target.wants/berth-agent.service)" \
	/lib/systemd/system/berth-agent.service
expect_eq "dirs and modes" \
	"$(in_box stat -c '%n %a' /etc/berth /etc/berth/env /etc/berth/tls /var/lib/berth | tr '\n' ' ')" \
	"/etc/berth 755 /etc/berth/env 700 /etc/berth/tls 700 /var/lib/berth 700 "
# shellcheck disable=SC2016 # ${Conffiles} is for dpkg-query
in_box dpkg-query -W -f='${Conffiles}\n' berth-agent | has '/etc/berth/agent.toml' ||
	die "/etc/berth/agent.toml is not a conffile"
# The shipped default is all comments: check-config names the missing cert.
check_out="$(in_box berth-agent check-config 2>&1 || true)"
grep -q "tls.ca" <<<"$check_out" || die "check-config without TLS should name tls.ca: $check_out"
# Started anyway (as on a boot without certificates): check-config fails
# each try, and after StartLimitBurst tries the unit stays failed.
in_box systemctl start berth-agent >/dev/null 2>&1 && die "the agent started without TLS material"
unit_failed() { [[ $(in_box systemctl show -p ActiveState --value berth-agent) == failed ]]; }
wait_for "a unit without TLS did not settle in failed (StartLimitBurst)" unit_failed
tries="$(in_box systemctl show -p NRestarts --value berth-agent)"
[[ $tries -ge 1 ]] || die "Restart=always did not retry a failed start (NRestarts=$tries)"
log "ok: a start without TLS was retried $tries times, then the unit stayed failed"
in_box journalctl -u berth-agent --no-pager -o cat | has "tls.ca: cannot open /etc/berth/tls/ca.pem" ||
	die "the journal does not say which file is missing"
in_box systemctl reset-failed berth-agent
in_box systemd-analyze verify /lib/systemd/system/berth-agent.service ||
	die "systemd-analyze verify failed on the installed unit"
log "ok: systemd-analyze verify (in the container's systemd)"

# ---------------------------------------------------------------- 2. configure and start

log "2. mint TLS, configure, start"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
configure_agent() {
	# shellcheck disable=SC2016 # expanded by the inner shell
	in_box sh -euc '
	d=/root/.config/berth
	rm -rf "$d"
	berthctl certs init --dir "$d" >/dev/null
	berthctl certs issue agent --dir "$d" --name agent --san 127.0.0.1 >/dev/null
	berthctl certs issue client --dir "$d" --name ci --role operator >/dev/null
	install -m 0644 "$d/ca.pem" /etc/berth/tls/ca.pem
	install -m 0644 "$d/agent.pem" /etc/berth/tls/agent.pem
	install -m 0600 "$d/agent-key.pem" /etc/berth/tls/agent-key.pem
	rm "$d/agent.pem" "$d/agent-key.pem"
	'
	# Edit the conffile (kept across the upgrade below) as its comments say:
	# top-level keys first. Prometheus off: this container shares the host's
	# network with other tests.
	in_box sh -euc "sed -i '1i listen = \"127.0.0.1:$PORT\"' /etc/berth/agent.toml"
	in_box_i sh -euc "cat >>/etc/berth/agent.toml" <<EOF

# --- added by packaging/test-install.sh
[docker]
instance = "$INSTANCE"
[metrics]
prometheus_listen = ""
EOF
	in_box berth-agent check-config || die "check-config fails on the configured agent"
	in_box grep -qx "listen = \"127.0.0.1:$PORT\"" /etc/berth/agent.toml || die "the config edit did not land"
}
configure_agent
# Type=notify: start returns once the agent says READY=1.
in_box systemctl start berth-agent || die "systemctl start berth-agent failed"
expect_eq "is-active after start" "$(in_box systemctl is-active berth-agent)" active
in_box journalctl -u berth-agent --no-pager | has "Listening for berthctl" ||
	die "no 'Listening' line from the agent in the journal"
# Journald gets events, not one line per span entered (-> reconcile;).
if in_box journalctl -u berth-agent --no-pager -o cat | has -E '^(->|<-|--) '; then
	die "span enter/exit lines reach the journal"
fi
expect_eq "status text (sd_notify)" "$(in_box systemctl show -p StatusText --value berth-agent)" \
	"Listening; supervising services."

log "the unit's sandbox: nginx -t, nginx -s reload, writable and read-only paths"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NGINX_PORT="$(free_port)"
SITE_PORT="$(free_port)"
in_box_i sh -euc "cat >/etc/nginx/conf.d/berth-pkgtest-base.conf" <<EOF
server { listen 127.0.0.1:$NGINX_PORT; return 200 "base"; }
EOF
in_box systemctl start nginx || die "nginx does not start in the container"
# The same [Service] hardening as the installed unit, running what the
# agent runs when it publishes a site (no nginx module is needed for this).
# shellcheck disable=SC2016 # expanded by the inner shell
in_box sh -euc '
	{
		echo "[Service]"
		echo "Type=oneshot"
		echo "ExecStart=/bin/sh /usr/local/sbin/berth-sandbox-probe.sh"
		sed -n "/^\[Service\]/,/^\[Install\]/p" /lib/systemd/system/berth-agent.service |
			grep -E "^[A-Za-z]+=" |
			grep -vE "^(Type|ExecStart|ExecStartPre|Restart|RestartSec|RestartPreventExitStatus|KillMode|TimeoutStopSec)="
	} >/etc/systemd/system/berth-sandbox-probe.service
	systemctl daemon-reload
'
in_box_i sh -euc "cat >/usr/local/sbin/berth-sandbox-probe.sh" <<EOF
set -eu
printf 'server { listen 127.0.0.1:$SITE_PORT; return 200 "site"; }\n' >/etc/nginx/conf.d/berth-probe.conf
nginx -t
nginx -s reload
echo PROBE=1 >/etc/berth/env/probe.env
echo probe >/var/lib/berth/probe
for denied in /etc/berth/agent.toml /etc/probe /usr/probe /root/probe; do
	if touch "\$denied" 2>/dev/null; then echo "sandbox let the unit write \$denied"; exit 1; fi
done
echo "sandbox probe: ok"
EOF
in_box systemctl start berth-sandbox-probe.service ||
	die "the unit's sandbox blocks nginx or its own dirs: $(in_box journalctl -u berth-sandbox-probe --no-pager -o cat | tail -n 15)"
in_box journalctl -u berth-sandbox-probe --no-pager -o cat | has "sandbox probe: ok" || die "sandbox probe did not finish"
wait_for "nginx did not serve the site written and reloaded from inside the sandbox" \
	curl --noproxy '*' -fsS --max-time 2 "http://127.0.0.1:$SITE_PORT/"
log "ok: from inside the unit's sandbox, nginx -t + reload work and only the allowed dirs are writable"
in_box sh -c 'systemctl stop nginx; rm -f /usr/local/sbin/berth-sandbox-probe.sh /etc/systemd/system/berth-sandbox-probe.service /etc/nginx/conf.d/berth-probe.conf /etc/nginx/conf.d/berth-pkgtest-base.conf /etc/berth/env/probe.env /var/lib/berth/probe'

log "deploy a service with an env file and limits"
in_box sh -euc 'umask 077; printf "GREETING=hello from the env file\n" >/etc/berth/env/web.env'
in_box_i sh -euc "cat >/root/web.toml" <<EOF
name = "web"
image = "$IMAGE_V1"
ports = ["8000"]
stop_timeout = "2s"
[resources]
memory = "64m"
cpus = 0.5
[health]
http = "/health"
interval = "500ms"
timeout = "500ms"
retries = 3
[deploy]
health_deadline = "30s"
EOF
berthctl apply -f /root/web.toml || die "berthctl apply (inside the container) failed"

web_container() {
	docker ps -q --filter "label=berth.instance=$INSTANCE" --filter "label=berth.service=web" --filter status=running
}
# A command wait_for can retry: "test -n $(web_container)" would be
# expanded once, before the first try.
web_running() {
	[[ -n $(web_container) ]]
}
check_web() {
	local id port body
	id="$(web_container)"
	[[ -n $id && $(wc -l <<<"$id") -eq 1 ]] || die "expected one running container of web, got: '$id'"
	expect_eq "web image" "$(docker inspect -f '{{.Config.Image}}' "$id")" "$IMAGE_V1"
	expect_eq "web memory limit" "$(docker inspect -f '{{.HostConfig.Memory}}' "$id")" 67108864
	expect_eq "web cpu limit" "$(docker inspect -f '{{.HostConfig.NanoCpus}}' "$id")" 500000000
	docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$id" | has -x 'GREETING=hello from the env file' ||
		die "web's container lacks GREETING from /etc/berth/env/web.env"
	# A recreate service's address and ports are its network holder's
	# (README, Services: network holders).
	local net
	net="$(docker inspect -f '{{.HostConfig.NetworkMode}}' "$id")"
	[[ $net == container:* ]] || die "web did not join a network holder (network mode $net)"
	port="$(docker port "${net#container:}" 8000/tcp | head -n1 | sed 's/.*://')"
	body="$(curl --noproxy '*' -fsS --max-time 5 "http://127.0.0.1:$port/")" || die "web does not answer on host port $port"
	expect_eq "web answers" "$body" v1
	# After a reboot the agent restarts web's stopped container; ps reports
	# "running" once the agent has seen the start, which can trail docker's
	# own view by a moment.
	wait_for "berthctl ps never showed web running" ps_shows_web_running
}
ps_shows_web_running() {
	berthctl ps | grep -E '^web ' | has running
}
wait_for "web never ran" web_running
check_web
revision_before="$(berthctl -o json ps | python3 -c 'import json,sys; print(next(s["revision"] for s in json.load(sys.stdin)["services"] if s["name"] == "web"))')"

log "crash: SIGKILL the agent; Restart=always brings it back, web is adopted"
pid_before="$(in_box systemctl show -p MainPID --value berth-agent)"
web_id_before="$(web_container)"
in_box systemctl kill -s KILL berth-agent
agent_restarted() {
	local pid
	pid="$(in_box systemctl show -p MainPID --value berth-agent)"
	[[ $(in_box systemctl is-active berth-agent) == active && $pid != 0 && $pid != "$pid_before" ]]
}
wait_for "agent not restarted after SIGKILL" agent_restarted
log "ok: restarted after SIGKILL (MainPID $pid_before -> $(in_box systemctl show -p MainPID --value berth-agent))"
check_web
expect_eq "web container after the agent's crash (adopted, not replaced)" "$(web_container)" "$web_id_before"

# ---------------------------------------------------------------- 3. upgrade

log "3. upgrade (reinstall the package over itself)"
pid_before="$(in_box systemctl show -p MainPID --value berth-agent)"
in_box dpkg -i "/pkg/$(basename "$deb")" || die "dpkg -i (upgrade) failed"
wait_for "agent not active after upgrade" test "$(in_box systemctl is-active berth-agent)" = active
pid_after="$(in_box systemctl show -p MainPID --value berth-agent)"
[[ $pid_after != "$pid_before" && $pid_after != 0 ]] || die "upgrade did not restart the agent (MainPID $pid_before -> $pid_after)"
log "ok: upgrade restarted the agent (MainPID $pid_before -> $pid_after)"
in_box grep -q "instance = \"$INSTANCE\"" /etc/berth/agent.toml || die "upgrade lost the edited /etc/berth/agent.toml"
log "ok: edited conffile kept"
check_web

# ---------------------------------------------------------------- 4. reboot

log "4. reboot: stop the container, web's container and its network holder (a host going down), start again"
invocation_before="$(in_box systemctl show -p InvocationID --value berth-agent)"
web_before="$(web_container)"
holder_before="$(docker inspect -f '{{.HostConfig.NetworkMode}}' "$web_before")"
docker stop "$NAME" >/dev/null
docker stop -t 2 "$web_before" >/dev/null
docker stop "${holder_before#container:}" >/dev/null
[[ -z $(web_container) ]] || die "web still running with the host 'down'"
docker start "$NAME" >/dev/null
wait_for "systemd did not boot again" booted
wait_for "agent not active after reboot (nobody starts it by hand)" \
	test "$(in_box systemctl is-active berth-agent 2>/dev/null)" = active
invocation_after="$(in_box systemctl show -p InvocationID --value berth-agent)"
[[ $invocation_after != "$invocation_before" ]] || die "same agent invocation after the reboot"
log "ok: agent came back on boot (invocation $invocation_after)"
wait_for "web did not reconverge after the reboot" web_running
check_web
revision_after="$(berthctl -o json ps | python3 -c 'import json,sys; print(next(s["revision"] for s in json.load(sys.stdin)["services"] if s["name"] == "web"))')"
expect_eq "web revision after reboot" "$revision_after" "$revision_before"

# ---------------------------------------------------------------- 5. remove, purge

log "5. remove keeps state; purge deletes it"
in_box dpkg -r berth-agent || die "dpkg -r failed"
expect_eq "is-active after remove" "$(in_box systemctl is-active berth-agent || true)" inactive
in_box test -f /var/lib/berth/state.json || die "remove deleted /var/lib/berth/state.json"
in_box test -f /etc/berth/tls/agent-key.pem || die "remove deleted the TLS key"
log "ok: state and TLS kept on remove"
[[ -n $(web_container) ]] || die "removing the agent stopped web's container"
log "ok: services keep running without the agent"
in_box dpkg --purge berth-agent || die "dpkg --purge failed"
if in_box test -e /var/lib/berth || in_box test -e /etc/berth; then
	die "purge left $(in_box sh -c 'ls -d /var/lib/berth /etc/berth 2>/dev/null')"
fi
log "ok: purge deleted /var/lib/berth and /etc/berth"

# ---------------------------------------------------------------- 6. the .rpm's scriptlets

# No RPM distribution image can be had here, so the .rpm's scriptlets run on
# this Debian systemd, through Debian's rpm (--nodeps: its database knows no
# Debian packages). They only use systemctl, install and sh.
{
	log "6. rpm -i / -U / -e of $(basename "$rpm") on the same systemd"
	in_box sh -c 'command -v rpm' >/dev/null || die "no rpm in $BASE"
	rpm_out="$(in_box rpm -i --nodeps "/pkg/$(basename "$rpm")" 2>&1)" || die "rpm -i failed: $rpm_out"
	echo "$rpm_out"
	grep -q "enabled, but not started" <<<"$rpm_out" || die "%post did not say why the agent was not started: $rpm_out"
	expect_eq "rpm: is-enabled after install" "$(in_box systemctl is-enabled berth-agent || true)" enabled
	expect_eq "rpm: is-active before TLS" "$(in_box systemctl is-active berth-agent || true)" inactive
	expect_eq "rpm: dirs and modes" \
		"$(in_box stat -c '%n %a' /etc/berth/env /etc/berth/tls /var/lib/berth | tr '\n' ' ')" \
		"/etc/berth/env 700 /etc/berth/tls 700 /var/lib/berth 700 "
	configure_agent
	in_box systemctl start berth-agent || die "rpm: systemctl start failed"
	pid_before="$(in_box systemctl show -p MainPID --value berth-agent)"
	in_box rpm -U --replacepkgs --nodeps "/pkg/$(basename "$rpm")" || die "rpm -U failed"
	wait_for "rpm: agent not active after upgrade" test "$(in_box systemctl is-active berth-agent)" = active
	pid_after="$(in_box systemctl show -p MainPID --value berth-agent)"
	[[ $pid_after != "$pid_before" ]] || die "rpm upgrade did not restart the agent (MainPID $pid_before)"
	log "ok: rpm upgrade restarted the agent (MainPID $pid_before -> $pid_after)"
	in_box grep -q "instance = \"$INSTANCE\"" /etc/berth/agent.toml || die "rpm upgrade lost the edited agent.toml"
	in_box rpm -e --nodeps berth-agent || die "rpm -e failed"
	expect_eq "rpm: is-active after erase" "$(in_box systemctl is-active berth-agent || true)" inactive
	expect_eq "rpm: enablement symlink after erase" \
		"$(in_box sh -c 'test -e /etc/systemd/system/multi-user.target.wants/berth-agent.service && echo present || echo gone')" gone
	in_box test -d /var/lib/berth || die "rpm -e deleted /var/lib/berth"
	in_box test -f /etc/berth/tls/agent-key.pem || die "rpm -e deleted the TLS key"
	log "ok: rpm -e stopped and disabled the agent and kept its state"
}

echo "test-install: PASSED (install, start, deploy, upgrade, reboot, remove, purge, rpm scriptlets)"
