#!/usr/bin/env bash
# Runs a demo VM under ghost-vmm with its serial console on this terminal (a busybox shell in
# Debian's kernel). Inside the nested test host when this machine's KVM cannot run stock guests.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/testhost/setup.sh
cargo build --release -p ghost-cli -p ghost-tests --bin ghost-vmm --bin ghost-demo
GHOST_VMM_BIN="$PWD/target/release/ghost-vmm" exec target/release/ghost-demo
