#!/usr/bin/env bash
# Build one berth test image from Debian's static busybox: a tiny rootfs
# tarball fed to `docker import` (no registry or base image needed).
#
#   build-image.sh TAG IMAGE_REF [INPUTS_HASH]
#
# TAG is one of: v1 v2 bad crashy cpu mem wrongver depsdown dockerhc. INPUTS_HASH is stored in the
# `berth.test.inputs` label so scripts/test-env.sh can skip unchanged rebuilds.
# BUSYBOX overrides the binary (default /bin/busybox from busybox-static).
set -euo pipefail

tag="${1:?usage: build-image.sh TAG IMAGE_REF [INPUTS_HASH]}"
ref="${2:?usage: build-image.sh TAG IMAGE_REF [INPUTS_HASH]}"
inputs="${3:-none}"
busybox="${BUSYBOX:-/bin/busybox}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Which script is PID 1, and whether /www answers the health paths.
version="" deps=yes
case "$tag" in
v1 | v2) entry=serve.sh healthy=yes ;;
bad) entry=serve.sh healthy=no ;;
crashy) entry=crashy.sh healthy=yes ;;
cpu) entry=cpu.sh healthy=yes ;;
mem) entry=mem.sh healthy=yes ;;
# Healthy, but /__version__ reports v1 (a stale build under a new tag).
wrongver) entry=serve.sh healthy=yes version=v1 ;;
# The web app answers, its dependency does not: /__heartbeat__ -> 404.
depsdown) entry=serve.sh healthy=yes deps=no ;;
# Like v1, plus a Docker HEALTHCHECK on /health (for specs without [health]).
dockerhc) entry=serve.sh healthy=yes ;;
*)
	echo "build-image.sh: unknown tag '$tag'" >&2
	exit 2
	;;
esac

[[ -x "$busybox" ]] || {
	echo "build-image.sh: $busybox missing (apt-get install busybox-static)" >&2
	exit 1
}

root="$(mktemp -d "${TMPDIR:-/tmp}/berth-img.XXXXXX")"
trap 'rm -rf "$root"' EXIT

# Filesystem skeleton. Docker mounts /proc, /sys, /dev, /etc/hosts etc. itself.
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,app,www}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
# One symlink per applet at its usual path (bin/sh, usr/bin/env, usr/bin/wget,
# usr/sbin/httpd, ...), so `docker exec C sh -c ...` and exec health checks work.
"$busybox" --list-full | while read -r applet; do
	[[ -e "$root/$applet" ]] || ln -s /bin/busybox "$root/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

# Every image carries all entrypoint scripts (tests may override the command).
cp "$here"/app/*.sh "$root/app/"
chmod 0755 "$root"/app/*.sh

# Content served by busybox httpd. Bodies have no trailing newline.
# Health paths must be plain files: busybox httpd gives 200 for a file and
# 404 for anything missing (which is exactly what `bad` wants).
printf '%s' "$tag" >"$root/www/index.html"
printf '{"version":"%s"}' "${version:-$tag}" >"$root/www/__version__"
if [[ "$healthy" == yes ]]; then
	for p in health __lbheartbeat__ __heartbeat__; do
		printf 'ok' >"$root/www/$p"
	done
fi
if [[ "${deps:-yes}" == no ]]; then
	rm -f "$root/www/__heartbeat__"
fi
healthcheck=()
if [[ "$tag" == dockerhc ]]; then
	healthcheck=(--change 'HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD ["wget", "-q", "-O-", "http://127.0.0.1:8000/health"]')
fi

tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . |
	docker import \
		--message "berth test image $tag" \
		--change "CMD [\"/bin/sh\", \"/app/$entry\"]" \
		--change 'EXPOSE 8000' \
		--change 'WORKDIR /' \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change "ENV BERTH_TEST_VARIANT=$tag" \
		--change 'LABEL berth.test=true' \
		--change "LABEL berth.test.variant=$tag" \
		--change "LABEL berth.test.inputs=$inputs" \
		"${healthcheck[@]}" \
		- "$ref" >/dev/null

# Smoke test: the binary really is static and the applets resolve.
out="$(docker run --rm --label berth.test=true --entrypoint /bin/sh "$ref" \
	-c 'command -v wget >/dev/null && command -v httpd >/dev/null && env >/dev/null && cat /www/index.html')"
if [[ "$out" != "$tag" ]]; then
	echo "build-image.sh: smoke test of $ref failed (got '$out')" >&2
	exit 1
fi
echo "build-image.sh: built $ref"
