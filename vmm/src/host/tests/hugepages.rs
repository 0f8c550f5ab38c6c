//! Hugepage pools: reading them, the arithmetic, and the advice when there are too few.

use super::{assert_message, FakeHost};
use crate::host::{HostError, HugePagePool};

const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

#[test]
fn reads_a_pool() {
    let fake = FakeHost::new();
    fake.hugepages(2048, 256, 120, 20, 0);
    let pool = fake.host().hugepage_pool(M2).unwrap().unwrap();
    assert_eq!(
        pool,
        HugePagePool {
            size: M2,
            total: 256,
            free: 120,
            reserved: 20,
            surplus: 0
        }
    );
    assert_eq!(pool.available(), 100);
    assert_eq!(pool.available_bytes(), 200 << 20);
}

#[test]
fn a_missing_pool_is_none() {
    let fake = FakeHost::new();
    assert_eq!(fake.host().hugepage_pool(G1).unwrap(), None);
}

#[test]
fn available_never_underflows() {
    let pool = HugePagePool {
        size: M2,
        total: 10,
        free: 2,
        reserved: 5,
        surplus: 0,
    };
    assert_eq!(pool.available(), 0);
}

#[test]
fn enough_pages() {
    let fake = FakeHost::new();
    fake.hugepages(2048, 512, 512, 0, 0);
    fake.host().check_hugepages(1 << 30, M2).unwrap();
    // A size that is not a page multiple rounds up: 1G + 1 byte needs 513 pages.
    assert!(fake.host().check_hugepages((1 << 30) + 1, M2).is_err());
}

#[test]
fn too_few_pages_says_how_many_to_reserve() {
    let fake = FakeHost::new();
    fake.hugepages(2048, 256, 120, 20, 0);
    let e = fake.host().check_hugepages(1 << 30, M2).unwrap_err();
    let nr = fake.path("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages");
    assert_eq!(
        e.to_string(),
        format!(
            "memory.hugepages: the VM needs 512 x 2M hugepages but only 100 of the 256 in the \
             pool are free; reserve more with: echo 668 > {}",
            nr.display()
        )
    );
    assert_eq!(e.exit_code(), 2);
    match e {
        HostError::NotEnoughHugepages { suggest, .. } => {
            // 256 + 412 more = 668, and 668 - 256 + 100 = 512 available after.
            assert_eq!(suggest, 668);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn surplus_pages_are_not_counted_in_the_persistent_pool() {
    let fake = FakeHost::new();
    fake.hugepages(2048, 110, 10, 0, 10);
    match fake.host().check_hugepages(100 * M2, M2).unwrap_err() {
        HostError::NotEnoughHugepages { suggest, .. } => assert_eq!(suggest, 190),
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_gig_pages_advise_reserving_at_boot() {
    let fake = FakeHost::new();
    fake.hugepages(1_048_576, 0, 0, 0, 0);
    let e = fake
        .host()
        .check_hugepages(4 * G1, G1)
        .unwrap_err()
        .to_string();
    assert_message(
        &e,
        &[
            "needs 4 x 1G hugepages but the pool is empty",
            "echo 4 > ",
            "hugepages-1048576kB/nr_hugepages",
            "hugepagesz=1G hugepages=N",
        ],
    );
}

#[test]
fn no_pool_of_that_size() {
    let fake = FakeHost::new();
    let e = fake.host().check_hugepages(G1, G1).unwrap_err().to_string();
    assert_message(
        &e,
        &[
            "memory.hugepage_size: this host has no 1G hugepages",
            "use hugepage_size = \"2M\"",
        ],
    );
    let e = fake.host().check_hugepages(G1, M2).unwrap_err().to_string();
    assert_message(&e, &["no 2M hugepages", "set hugepages = false"]);
    let e = fake
        .host()
        .check_hugepages(G1, 16 * G1)
        .unwrap_err()
        .to_string();
    assert_message(
        &e,
        &["no 16G hugepages", "use hugepage_size = \"2M\" or \"1G\""],
    );
}

#[test]
fn unreadable_counters_are_one_line_errors() {
    let fake = FakeHost::new();
    fake.hugepages(2048, 1, 1, 0, 0);
    fake.write(
        "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
        "lots\n",
    );
    let e = fake.host().hugepage_pool(M2).unwrap_err().to_string();
    assert_message(
        &e,
        &["cannot read ", "free_hugepages: \"lots\" is not a number"],
    );
}
