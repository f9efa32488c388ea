#!/usr/bin/env bash
# The whole test suite, against the real components: the machine's Docker
# Engine, a local registry with test images, nginx (scripts/test-env.sh
# installs and starts what is missing). Fails loudly when a component is
# missing; nothing is skipped.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -- NAME    # only tests matching NAME (passed to cargo test)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null || { echo "test: cargo is missing (install Rust with rustup)" >&2; exit 1; }
command -v docker >/dev/null || { echo "test: docker is missing: the suite needs a running Docker Engine" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "test: the Docker Engine does not answer (docker info failed); start dockerd" >&2; exit 1; }

# Real components: packages, registry on 127.0.0.1:5000, test images.
# shellcheck source=scripts/test-env.sh
source scripts/test-env.sh
export BERTH_TEST_REGISTRY

# The end-to-end tests run the real binaries, so build them first.
cargo build --workspace --bins
shift_args=()
if [[ "${1:-}" == "--" ]]; then shift; shift_args=("$@"); fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast -- "${shift_args[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One total for the whole workspace, so the run does not close on the last
# crate's (empty) doc-test line.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
