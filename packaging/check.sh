#!/usr/bin/env bash
# Static checks of built packages (packaging/build.sh --check runs this):
#   * lintian on the .deb: no errors (warnings are printed, not fatal)
#   * the .deb's files, conffiles and maintainer scripts
#   * rpm -qpi, -qpl, --scripts on the .rpm, and that they hold what they must
#   * systemd-analyze verify on the unit as installed (from the .deb's files)
#   * systemd-analyze security --offline: prints the exposure score and fails
#     above $BERTH_UNIT_MAX_EXPOSURE (default 5.0)
# Installs lintian, rpm and systemd (for systemd-analyze) with apt-get when
# missing. Fails loudly; skips nothing.
#
#   packaging/check.sh target/packages/berth-agent_*.deb target/packages/berth-agent-*.rpm
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

deb="${1:?usage: packaging/check.sh DEB RPM}"
rpm="${2:?usage: packaging/check.sh DEB RPM}"
max_exposure="${BERTH_UNIT_MAX_EXPOSURE:-5.0}"
unit=berth-agent.service

fail() {
	echo "check: FAILED: $*" >&2
	exit 1
}
# shellcheck disable=SC2154 # rc is assigned inside the trap string
trap 'rc=$?; echo "check: ERROR: command failed (exit $rc) at line $LINENO: $BASH_COMMAND" >&2' ERR
section() { printf '\n== %s\n' "$*"; }
# Fails unless the text on stdin has a line matching the regex.
must_have() {
	local what="$1" re="$2" text
	text="$(cat)"
	grep -Eq -- "$re" <<<"$text" || fail "$what: no line matching '$re' in:
$text"
}

missing=()
command -v lintian >/dev/null || missing+=(lintian)
command -v rpm >/dev/null || missing+=(rpm)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if [[ ${#missing[@]} -gt 0 ]]; then
	echo "check: installing ${missing[*]}" >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

section "lintian $deb"
# --fail-on error: warnings and infos are shown but do not fail the build.
lintian --fail-on error --display-info "$deb" || fail "lintian reports errors on $deb"
echo "lintian: no errors"

section "dpkg-deb --info / --contents"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"
dpkg-deb --info "$deb" conffiles | must_have "deb conffiles" '^/etc/berth/agent\.toml$'
contents="$(dpkg-deb --contents "$deb")"
for f in ./usr/bin/berth-agent ./usr/bin/berthctl ./lib/systemd/system/$unit ./etc/berth/agent.toml \
	./usr/share/doc/berth-agent/README.packaging.md \
	./usr/share/bash-completion/completions/berthctl ./usr/share/zsh/vendor-completions/_berthctl \
	./usr/share/fish/vendor_completions.d/berthctl.fish \
	./usr/share/man/man1/berthctl.1.gz ./usr/share/man/man1/berthctl-events.1.gz \
	./usr/share/man/man1/berth-agent.1.gz; do
	must_have "deb contents" " $f\$" <<<"$contents"
done
for s in postinst prerm postrm; do
	dpkg-deb --info "$deb" "$s" | must_have "deb $s" 'berth-agent'
done

section "rpm -qpi $rpm"
info="$(rpm -qpi "$rpm")"
echo "$info"
must_have "rpm -qpi" '^Name +: berth-agent$' <<<"$info"
must_have "rpm -qpi" '^License +: Apache-2.0$' <<<"$info"
section "rpm -qpl"
list="$(rpm -qpl "$rpm")"
echo "$list"
for f in /usr/bin/berth-agent /usr/bin/berthctl /usr/lib/systemd/system/$unit /etc/berth/agent.toml \
	/usr/share/bash-completion/completions/berthctl /usr/share/zsh/site-functions/_berthctl \
	/usr/share/fish/vendor_completions.d/berthctl.fish \
	/usr/share/man/man1/berthctl.1.gz /usr/share/man/man1/berthctl-events.1.gz \
	/usr/share/man/man1/berth-agent.1.gz; do
	must_have "rpm -qpl" "^$f\$" <<<"$list"
done
section "completions and man pages (from the .deb)"
probe="$(mktemp -d)"
dpkg-deb -x "$deb" "$probe"
must_have "bash completion" 'complete -F .* berthctl' <"$probe/usr/share/bash-completion/completions/berthctl"
must_have "zsh completion" '^#compdef berthctl' <"$probe/usr/share/zsh/vendor-completions/_berthctl"
must_have "fish completion" '^complete -c berthctl' <"$probe/usr/share/fish/vendor_completions.d/berthctl.fish"
zcat "$probe/usr/share/man/man1/berthctl-events.1.gz" | must_have "berthctl-events.1" 'no\\-follow'
zcat "$probe/usr/share/man/man1/berth-agent.1.gz" | must_have "berth-agent.1" '^\.TH berth-agent 1'
rm -rf "$probe"
echo "completions and man pages: OK"
section "rpm -qpc (config files) and file flags"
rpm -qpc "$rpm" | must_have "rpm -qpc" '^/etc/berth/agent\.toml$'
# c = %config, n = noreplace: an edited agent.toml survives upgrades.
flags="$(rpm -qp --qf '[%{FILEFLAGS:fflags}\t%{FILEMODES:perms}\t%{FILENAMES}\n]' "$rpm")"
echo "$flags"
must_have "rpm file flags" '^cn	-rw-r--r--	/etc/berth/agent\.toml$' <<<"$flags"
section "rpm -qp --scripts"
scripts="$(rpm -qp --scripts "$rpm")"
echo "$scripts"
must_have "rpm scripts" '^postinstall scriptlet' <<<"$scripts"
must_have "rpm scripts" '^preuninstall scriptlet' <<<"$scripts"
must_have "rpm scripts" '^postuninstall scriptlet' <<<"$scripts"
# shellcheck disable=SC2016 # a literal $UNIT
must_have "rpm %post" 'systemctl --no-reload enable "\$UNIT"' <<<"$scripts"
section "rpm -qpR (requires)"
rpm -qpR "$rpm"

section "systemd-analyze verify (unit as installed by the .deb)"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
# verify resolves ExecStart= paths and the units it orders against
# (sysinit.target, docker.service, ...) under --root: add this machine's
# units next to the package's files.
cp -rn /lib/systemd/system/. "$root/lib/systemd/system/"
systemd-analyze verify --root="$root" "/lib/systemd/system/$unit" || fail "systemd-analyze verify $unit"
echo "verify: OK"

section "systemd-analyze security --offline"
# --threshold counts tenths (exposure 5.0 = 50).
threshold="$(awk -v m="$max_exposure" 'BEGIN { printf "%d", m * 10 }')"
systemd-analyze security --offline=true --root="$root" --threshold="$threshold" "/lib/systemd/system/$unit" \
	>"$root/security.txt" || { cat "$root/security.txt"; fail "systemd-analyze security: exposure above $max_exposure (see above)"; }
cat "$root/security.txt"
score="$(grep -o 'Overall exposure level for [^:]*: [0-9.]*' "$root/security.txt" | awk '{print $NF}')"
[[ -n $score ]] || fail "systemd-analyze security printed no exposure level"
echo "unit exposure score: $score (limit $max_exposure)"
echo
echo "check: all package checks passed"
