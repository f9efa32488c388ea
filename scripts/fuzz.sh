#!/usr/bin/env bash
# Runs berth's fuzz targets (fuzz/, cargo-fuzz + libFuzzer) for a while each
# and prints what they did. See --help.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
  cat <<'EOF'
Usage: scripts/fuzz.sh [--time SECONDS] [--save] [--build-jobs N] [TARGET...]

Builds the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer) and runs each
TARGET (default: all of them) for SECONDS (default 60) on one core under
`nice -n 10`, starting from its stored corpus fuzz/corpus/TARGET. Then
prints one line per target:

  target  seconds  execs  execs/s  corpus  crashes  artifact

`corpus` is the number of inputs libFuzzer kept (stored seeds plus what it
found). A crash is a panic, a failed assertion, a timeout (10 s for one
input) or running out of memory; its input is written to
fuzz/artifacts/TARGET/ and its path printed. The exit status is 1 when any
target crashed, 2 when something could not be built or run.

New inputs go to fuzz/target/corpus/TARGET (not committed), so runs build
on each other. With --save they are merged into fuzz/corpus/TARGET, that
directory is minimized (`cargo fuzz cmin`) and trimmed to its named seeds
plus the smallest found inputs (48 KiB, 150 files): do it after a long
run and commit the result.

Options:
  --time SECONDS    how long each target runs (default 60)
  --save            merge what was found into the stored corpus, minimized
  --build-jobs N    cargo jobs for the build (default: cargo's own)
  --list            print the targets and exit
  -h, --help        this text

Needs cargo-fuzz (`cargo install --locked cargo-fuzz`). `cargo +nightly`
is used when rustup has a nightly toolchain; otherwise the default (stable)
toolchain builds the targets with RUSTC_BOOTSTRAP=1, which lets it accept
libFuzzer's nightly-only coverage flags.

Reproduce a crash:  cd fuzz && cargo +nightly fuzz run -s none TARGET ARTIFACT
Targets: spec (berth_core::spec::parse), envfile (env files and
`env set` arguments), agent_config (Config::parse), inventory
(Inventory::parse), nginx_site (a spec built from fuzzed fields, rendered
by berth_agent::nginx::render and read back as nginx config).
EOF
}

die() { echo "fuzz: $*" >&2; exit 2; }

seconds=60
save=0
build_jobs=""
list=0
targets=()
while (($#)); do
  case "$1" in
    --time) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ && "$2" -gt 0 ]] || die "--time takes a number of seconds > 0"; seconds="$2"; shift 2 ;;
    --time=*) seconds="${1#--time=}"; [[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || die "--time takes a number of seconds > 0"; shift ;;
    --save) save=1; shift ;;
    --build-jobs) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--build-jobs takes a number"; build_jobs="$2"; shift 2 ;;
    --list) list=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) targets+=("$1"); shift ;;
  esac
done

command -v cargo >/dev/null || die "cargo is missing: install Rust with rustup (https://rustup.rs)"
cargo fuzz --version >/dev/null 2>&1 \
  || die "cargo-fuzz is missing: cargo install --locked cargo-fuzz"

# libFuzzer's instrumentation wants nightly; without a sanitizer (-s none,
# below) the stable compiler builds it too once told to accept nightly flags
# (RUSTC_BOOTSTRAP=1), so a machine with only stable still fuzzes.
toolchain=()
if cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly)
elif ! rustc --version 2>/dev/null | grep -q nightly; then
  echo "fuzz: no nightly toolchain; building with $(rustc --version) and RUSTC_BOOTSTRAP=1" >&2
  export RUSTC_BOOTSTRAP=1
fi

all=()
for f in fuzz/fuzz_targets/*.rs; do all+=("$(basename "$f" .rs)"); done
if ((list)); then printf '%s\n' "${all[@]}"; exit 0; fi
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ -f "fuzz/fuzz_targets/$t.rs" ]] || die "no target $t (targets: ${all[*]})"
done

# One build for every target. No sanitizer: berth forbids unsafe code, so
# AddressSanitizer would mostly slow the runs; panics, failed assertions,
# overflows (overflow checks and debug assertions are on) are what we look for.
fuzz_flags=(-s none)
export CARGO_INCREMENTAL=0
[[ -n "$build_jobs" ]] && export CARGO_BUILD_JOBS="$build_jobs"
echo "fuzz: building ${targets[*]} (cargo ${toolchain[*]} fuzz build)" >&2
(cd fuzz && nice -n 10 cargo "${toolchain[@]}" fuzz build "${fuzz_flags[@]}" >&2) \
  || die "the fuzz build failed (see above); cargo-fuzz needs a C++ compiler for libFuzzer"

# The stored corpus stays small enough to commit: the named seeds (README
# and test examples, past findings) and, of what libFuzzer found (files
# named by their SHA-1), the smallest up to CORPUS_KEEP_BYTES and
# CORPUS_KEEP_FILES. The rest stays in fuzz/target/corpus for later runs.
CORPUS_KEEP_BYTES=49152
CORPUS_KEEP_FILES=150
trim_corpus() {
  local dir="$1" bytes=0 files=0 size f
  while read -r size f; do
    if ((bytes + size <= CORPUS_KEEP_BYTES && files < CORPUS_KEEP_FILES)); then
      bytes=$((bytes + size)); files=$((files + 1))
    else
      rm -f "$f"
    fi
  done < <(find "$dir" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9a-f]{40}' -printf '%s %p\n' | sort -n)
}

rows=()
crashed=0
for t in "${targets[@]}"; do
  work="fuzz/target/corpus/$t"
  mkdir -p "$work" "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/target/fuzz-$t.log"
  echo "fuzz: running $t for ${seconds}s (log: $log)" >&2
  started=$SECONDS
  set +e
  # New inputs land in the first corpus dir (the work one); the stored
  # corpus is read only. -max_len lets inputs grow past libFuzzer's default
  # 4096 bytes, so an error that echoes its input shows.
  (cd fuzz && nice -n 10 cargo "${toolchain[@]}" fuzz run "${fuzz_flags[@]}" "$t" \
     "../$work" "corpus/$t" -- \
     -max_total_time="$seconds" -max_len=16384 -timeout=10 -print_final_stats=1) >"$log" 2>&1
  rc=$?
  set -e
  took=$((SECONDS - started))
  ((took > 0)) || took=1
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  # A crash ends the run before the final stats: count from the last status line.
  [[ -n "$execs" ]] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -n1 | tr -d '#')
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  [[ -n "$rate" ]] || rate=$((${execs:-0} / took))
  corpus=$(grep -oE 'corp: [0-9]+' "$log" | tail -n1 | grep -oE '[0-9]+')
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
  if [[ -z "$execs" ]]; then
    tail -n 30 "$log" >&2
    die "$t did not run (exit $rc); see $log"
  fi
  crashes=0
  if ((rc != 0)) || [[ -n "$artifact" ]]; then
    crashes=1
    crashed=1
    grep -m1 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" >&2 || true
    # cargo-fuzz names it relative to fuzz/ or absolutely.
    [[ -n "$artifact" && "$artifact" != /* ]] && artifact="fuzz/${artifact#./}"
  fi
  rows+=("$t $took $execs $rate ${corpus:-0} $crashes ${artifact:--}")
  if ((save)) && ((crashes == 0)); then
    echo "fuzz: saving $t's corpus into fuzz/corpus/$t, minimized" >&2
    # cmin renames what it keeps to SHA-1s: the named seeds are put back
    # as they were afterwards.
    seeds="fuzz/target/seeds-$t"
    rm -rf "$seeds" && mkdir -p "$seeds"
    find "fuzz/corpus/$t" -maxdepth 1 -type f -regextype posix-extended ! -regex '.*/[0-9a-f]{40}' \
      -exec cp {} "$seeds"/ \;
    cp -n "$work"/* "fuzz/corpus/$t"/ 2>/dev/null || true
    (cd fuzz && nice -n 10 cargo "${toolchain[@]}" fuzz cmin "${fuzz_flags[@]}" "$t" "corpus/$t" \
       -- -max_len=16384 -timeout=10) >"fuzz/target/cmin-$t.log" 2>&1 \
      || die "cmin of $t failed; see fuzz/target/cmin-$t.log"
    for f in "$seeds"/*; do
      [[ -f "$f" ]] || continue
      rm -f "fuzz/corpus/$t/$(sha1sum <"$f" | cut -c1-40)"
      cp "$f" "fuzz/corpus/$t/"
    done
    trim_corpus "fuzz/corpus/$t"
  fi
done

{
  echo "target seconds execs execs/s corpus crashes artifact"
  printf '%s\n' "${rows[@]}"
} | column -t
exit "$crashed"
