//! Integration tests of ghost-vmm, and the harness they run on.
//!
//! The tests live in `tests/tests/*.rs`. Those that boot real guests use the nested
//! [`testhost`]: they take about a minute each on a 2-core machine, and need the ghost-vmm
//! binary built first:
//!
//! ```text
//! cargo build -p ghost-cli --release && cargo test -p ghost-tests --release
//! ```
//!
//! (`tests/run-all.sh` does this, and everything else CI runs.)

pub mod guest_tools;
pub mod testhost;
