#!/usr/bin/env bash
# The one command that runs every test of ghost-vmm on a fresh Debian 12 machine with only the
# Rust toolchain, gcc, Python and git: installs what the tests need (Debian packages, the guest
# kernel), checks formatting and lints, builds, then runs the unit tests, the tiny-payload tests
# on this host's KVM and the real-guest tests inside the nested test host, then a short run of
# the benchmarks against QEMU and bounded fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== setup: test-host assets (Debian packages, guest kernels)"
tests/testhost/setup.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings

echo "== build"
cargo build --workspace --release
export GHOST_VMM_BIN="$PWD/target/release/ghost-vmm"

threads="${GHOST_TEST_THREADS:-2}"
echo "== tests: unit tests, the binary's tests on this host's KVM, the harness's own tests"
cargo test --workspace --release --exclude ghost-tests -- --test-threads="$threads"
cargo test --release -p ghost-tests --lib --bins -- --test-threads="$threads"

# Real guests in the nested test host, one test binary (one test-host boot) at a time. Guests
# three levels deep on an emulated CPU now and then die on their own, under QEMU as under
# ghost-vmm (a triple fault, a hang, a soft-locked test host: tests/testhost/README.md,
# "Flakes"). A test host that hangs or dies is booted again by the harness for what it had
# left. A binary whose tests fail runs again, up to twice, after its whole output; failing
# three times fails the run. Every retry is listed at the end.
attempts="${GHOST_TESTHOST_ATTEMPTS:-3}"
flakes=()
for test in tests/tests/*.rs; do
    name=$(basename "$test" .rs)
    case "$name" in zz_*) continue ;; esac
    attempt=1
    while :; do
        echo "== test host: $name (attempt $attempt of $attempts)"
        if cargo test --release -p ghost-tests --test "$name" -- --test-threads="$threads"; then
            break
        fi
        if [ "$attempt" -ge "$attempts" ]; then
            echo "== test host: $name FAILED $attempt times" >&2
            exit 1
        fi
        echo "== test host: $name FAILED on attempt $attempt (output above); running it again"
        flakes+=("$name failed on attempt $attempt")
        attempt=$((attempt + 1))
    done
done
if [ "${#flakes[@]}" -gt 0 ]; then
    echo "== test host: passed after retries (flakes, each reported in full above):"
    printf '   %s\n' "${flakes[@]}"
fi

echo "== benchmarks, short: the harness and every figure for both VMMs (numbers not judged)"
cargo run --release -p ghost-benches --bin ghost-bench -- --quick

echo "== fuzzing: every cargo-fuzz target, bounded (no findings allowed)"
FUZZ_SECONDS="${GHOST_FUZZ_SECONDS:-30}" bash fuzz/run.sh "${GHOST_FUZZ_RUNS:-200000}"
