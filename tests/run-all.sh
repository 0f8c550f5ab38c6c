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

echo "== tests"
cargo test --workspace --release -- --test-threads="${GHOST_TEST_THREADS:-2}"

echo "== benchmarks, short: the harness and every figure for both VMMs (numbers not judged)"
cargo run --release -p ghost-benches --bin ghost-bench -- --quick

echo "== fuzzing: every cargo-fuzz target, bounded (no findings allowed)"
FUZZ_SECONDS="${GHOST_FUZZ_SECONDS:-30}" bash fuzz/run.sh "${GHOST_FUZZ_RUNS:-200000}"
