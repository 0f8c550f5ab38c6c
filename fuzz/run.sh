#!/usr/bin/env bash
# Runs every cargo-fuzz target of ghost-vmm for a bounded number of executions.
#
#   bash fuzz/run.sh [RUNS]   (or FUZZ_RUNS=N; default 400000 executions per target)
#
# Each target also stops after FUZZ_SECONDS (default 60) of fuzzing, whichever comes first,
# so a slow target cannot stretch a CI run.
#
# Exits non-zero if a target crashes, panics, leaks or times out; the input that did it is
# left under fuzz/artifacts/<target>/. The corpus grows under fuzz/corpus/<target>/ (not
# committed), starting from the hand-made inputs in fuzz/seeds/<target>/ where there are
# some. cargo fuzz needs nightly compiler flags: RUSTC_BOOTSTRAP=1 lets the stable toolchain
# take them.
set -euo pipefail

cd "$(dirname "$0")"
runs="${1:-${FUZZ_RUNS:-400000}}"
seconds="${FUZZ_SECONDS:-60}"
for n in "$runs" "$seconds"; do
  case "$n" in
    '' | *[!0-9]*) echo "run.sh: RUNS and FUZZ_SECONDS must be numbers, not '$n'" >&2; exit 2 ;;
  esac
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "run.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
status=0
for target in $targets; do
  echo "run.sh: fuzzing $target for $runs runs or $seconds s"
  start=$(date +%s)
  # -timeout: one input taking longer than this is a hang, hence a finding.
  corpora=("corpus/$target")
  mkdir -p "corpus/$target"
  if [ -d "seeds/$target" ]; then corpora+=("seeds/$target"); fi
  if ! cargo fuzz run "$target" "${corpora[@]}" -- \
      -runs="$runs" -max_total_time="$seconds" -timeout=10 -max_len=65536 -print_final_stats=1; then
    echo "run.sh: $target FAILED (see fuzz/artifacts/$target/)" >&2
    status=1
  fi
  echo "run.sh: $target done in $(( $(date +%s) - start )) s"
done
exit "$status"
