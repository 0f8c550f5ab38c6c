//! CPU lists and cpuinfo flags.

use super::FakeHost;
use crate::host::{format_cpulist, parse_cpuinfo_flags, parse_cpulist};

#[test]
fn cpulists() {
    assert_eq!(
        parse_cpulist("0-3,8,10-11\n"),
        Some(vec![0, 1, 2, 3, 8, 10, 11])
    );
    assert_eq!(parse_cpulist("0"), Some(vec![0]));
    assert_eq!(parse_cpulist(""), Some(vec![]));
    assert_eq!(parse_cpulist("3,1,1"), Some(vec![1, 3]));
    assert_eq!(parse_cpulist("3-1"), None);
    assert_eq!(parse_cpulist("a-b"), None);
    assert_eq!(format_cpulist(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    assert_eq!(format_cpulist(&[5, 4]), "4-5");
    assert_eq!(format_cpulist(&[]), "");
}

#[test]
fn online_cpus_from_sysfs() {
    let fake = FakeHost::new();
    fake.write("sys/devices/system/cpu/online", "0-5,7\n");
    assert_eq!(
        fake.host().online_cpus().unwrap(),
        vec![0, 1, 2, 3, 4, 5, 7]
    );
    fake.write("sys/devices/system/cpu/online", "garbage\n");
    let e = fake.host().online_cpus().unwrap_err().to_string();
    assert!(e.contains("is not a CPU list"), "{e}");
}

#[test]
fn missing_online_file_is_a_one_line_read_error() {
    let fake = FakeHost::new();
    let e = fake.host().online_cpus().unwrap_err().to_string();
    assert!(e.starts_with("cannot read "), "{e}");
    assert!(
        e.ends_with("devices/system/cpu/online: No such file or directory"),
        "{e}"
    );
}

#[test]
fn cpuinfo_flags() {
    let flags = parse_cpuinfo_flags(
        "processor\t: 0\nflags\t\t: fpu vme svm pdpe1gb\nbugs\t\t: none\n\nprocessor\t: 1\nflags\t\t: fpu\n",
    );
    assert!(flags.contains("svm") && flags.contains("pdpe1gb") && flags.contains("fpu"));
    assert!(!flags.contains("none"));
    assert!(parse_cpuinfo_flags("processor : 0\n").is_empty());
    let fake = FakeHost::new();
    fake.cpuinfo("fpu vmx ept");
    assert!(fake.host().cpu_flags().unwrap().contains("vmx"));
}
