#!/usr/bin/env bash
# The release binaries as they ship, into target/release/: berthctl as any
# Rust binary, and berth-agent as a static PIE (glibc linked in, relative
# relocations packed as DT_RELR). The packages, the benchmarks and the
# quickstart all build through this script.
#
#   scripts/build-release.sh [-q]    # -q: cargo's quiet output
#
# Why the agent is static: its shared libraries cost more memory than the
# code it uses from them. ld.so resolves every ifunc of libc and libm at
# start (libm only for the one `pow` tokio's scheduler calls), and the
# kernel's fault-around maps 64 KiB around each of those pages: 2.1 MiB of
# the dynamic agent's resident memory (8.9 MiB idle, bench/run.sh idle).
# Static, the linker keeps only the glibc code the agent calls: 7.0 MiB
# resident, for a binary 0.5 MB larger (8.2 MB then; 7.98 MB with the
# trims below).
# It also runs on any x86_64 Linux (kernel 3.2 or later), whatever its glibc:
# the dynamic build needs glibc 2.34. Address-space layout randomisation
# stays (static-pie). The agent resolves no host names (every address in
# its config is an IP address, Docker is a unix socket), so glibc's NSS,
# which a static binary cannot load safely, is never linked in; this script
# fails if the agent ever needs a shared library again.
#
# --icf=all lets the linker fold functions whose code is identical (generic
# instances over types of one layout, mostly): 57 KB less. Rust promises no
# distinct addresses for distinct functions, so no code can tell.
#
# The agent's URLs are Docker's unix socket, never a host name, so idna's
# Unicode tables are dead weight: Cargo.lock pins idna_adapter to 1.0 (its
# stub back end, which refuses non-ASCII host names), 123 KB less. A plain
# `cargo update` would bring ICU4X back; this script says so and stops.
#
# crt-static is a rustc flag for the final link only (`cargo rustc -- ...`):
# set for the whole build it would also apply to proc-macro crates, which
# cannot be static, and to berthctl, which resolves fleet host names. A plain
# `cargo build --release` still builds a dynamic agent; it works the same.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v readelf >/dev/null || {
	echo "build-release: readelf is missing (install binutils): it checks the agent is static" >&2
	exit 1
}
if ! grep -A1 '^name = "idna_adapter"$' Cargo.lock | grep -q '^version = "1\.0\.'; then
	echo "build-release: Cargo.lock's idna_adapter is not the 1.0 stub (a cargo update?); put it back:" >&2
	echo "  cargo update -p idna_adapter --precise 1.0.0" >&2
	exit 1
fi
quiet=()
if [[ "${1:-}" == -q ]]; then
	quiet=(-q)
fi

cargo build --release --locked "${quiet[@]}" -p berthctl
cargo rustc --release --locked "${quiet[@]}" -p berth-agent --bin berth-agent -- \
	-C target-feature=+crt-static \
	-C link-arg=-Wl,-z,pack-relative-relocs \
	-C link-arg=-Wl,--icf=all

agent=target/release/berth-agent
if needed="$(readelf -d "$agent" | grep NEEDED)"; then
	echo "build-release: $agent needs shared libraries; it must be static:" >&2
	echo "$needed" >&2
	exit 1
fi
if ! readelf -h "$agent" | grep -q 'DYN (Position-Independent Executable'; then
	echo "build-release: $agent is not position-independent (static-pie expected):" >&2
	readelf -h "$agent" | grep Type >&2
	exit 1
fi
