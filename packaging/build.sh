#!/usr/bin/env bash
# Build berth's packages: a .deb (cargo-deb) and an .rpm (cargo-generate-rpm)
# into target/packages/, from the release binaries scripts/build-release.sh
# makes (berth-agent static, berthctl dynamic).
# Package metadata lives in agent/Cargo.toml; the unit, default config and
# maintainer scripts in packaging/. Shell completions and man pages are
# generated from the release binaries (`berthctl completions`, `berthctl
# man`, `berth-agent man`) into target/release/assets/. Installs the two cargo tools (pinned
# versions, `cargo install --locked`) when they are missing.
#
#   packaging/build.sh          # build both, print their paths and sizes
#   packaging/build.sh --check  # also run the package checks (lintian, rpm
#                               # queries, systemd-analyze; see check.sh)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
OUT=target/packages

log() { echo "build: $*" >&2; }
die() {
	echo "build: ERROR: $*" >&2
	exit 1
}
# shellcheck disable=SC2154 # rc is assigned inside the trap string
trap 'rc=$?; echo "build: ERROR: command failed (exit $rc) at line $LINENO: $BASH_COMMAND" >&2' ERR

# `cargo deb --version` prints "cargo-deb 3.8.0"; cargo-generate-rpm likewise.
ensure_tool() {
	local crate="$1" version="$2" have
	have="$(cargo "${crate#cargo-}" --version 2>/dev/null | awk '{print $2}' || true)"
	if [[ $have != "$version" ]]; then
		log "installing $crate $version (have: ${have:-none})"
		cargo install --locked --quiet "$crate" --version "$version"
	fi
}

version="$(cargo metadata --no-deps --format-version 1 |
	python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "berth-agent"))')"
changelog_version="$(head -n1 packaging/deb/changelog | sed -n 's/^berth-agent (\(.*\)-[0-9]*).*/\1/p')"
[[ $changelog_version == "$version" ]] ||
	die "packaging/deb/changelog starts at ${changelog_version:-?}, but berth-agent is $version: add a changelog entry for $version"

ensure_tool cargo-deb "$CARGO_DEB_VERSION"
ensure_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

log "release build of berth-agent (static) and berthctl"
scripts/build-release.sh

log "generating shell completions and man pages"
assets=target/release/assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"
for shell in bash zsh fish; do
	target/release/berthctl completions "$shell" >"$assets/completions/berthctl.$shell"
done
target/release/berthctl man "$assets/man" >/dev/null
target/release/berth-agent man "$assets/man"
# -n: no name or time stamp in the gzip header, so builds are reproducible.
gzip -9n "$assets"/man/*.1

rm -rf "$OUT"
mkdir -p "$OUT"
log "building the .deb"
cargo deb -p berth-agent --no-build --no-strip --output "$OUT/" >/dev/null
log "building the .rpm"
cargo generate-rpm -p agent --output "$OUT/" >/dev/null

shopt -s nullglob
debs=("$OUT"/*.deb)
rpms=("$OUT"/*.rpm)
[[ ${#debs[@]} -eq 1 ]] || die "expected one .deb in $OUT, found ${#debs[@]}"
[[ ${#rpms[@]} -eq 1 ]] || die "expected one .rpm in $OUT, found ${#rpms[@]}"
for f in "${debs[0]}" "${rpms[0]}"; do
	printf '%s\t%s\n' "$(du -h "$f" | cut -f1)" "$f"
done

if [[ ${1:-} == --check ]]; then
	packaging/check.sh "${debs[0]}" "${rpms[0]}"
fi
