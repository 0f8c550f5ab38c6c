//! Parse and type errors: one line each, naming the key and its line in the file.

use std::path::Path;

use super::{assert_error, error, with, Fixture, MINIMAL};
use crate::config::{ConfigError, VmConfig};

#[test]
fn missing_file() {
    let e = VmConfig::from_file(Path::new("/nonexistent/vm.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read /nonexistent/vm.toml: No such file or directory"
    );
    assert_eq!(e.exit_code(), 2);
    let e = VmConfig::from_file(Path::new("vm-does-not-exist.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read vm-does-not-exist.toml: No such file or directory"
    );
}

#[test]
fn not_toml_at_all() {
    let e = error("this is not toml\n");
    assert!(e.contains("vm.toml:1:"), "{e}");
    assert!(e.contains("not valid TOML"), "{e}");
    let e = error("[vm]\nname = \"a\"\nvcpus = = 2\n");
    assert_error(&e, 3, &["not valid TOML"]);
    let e = error("[vm\n");
    assert_error(&e, 1, &["not valid TOML"]);
}

#[test]
fn duplicate_key_is_a_syntax_error_with_its_line() {
    let e = error("[vm]\nname = \"a\"\nname = \"b\"\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(&e, 3, &["not valid TOML", "duplicate key"]);
}

#[test]
fn unknown_key_in_a_section() {
    let e = error("[vm]\nname = \"a\"\nvcpu = 2\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(
        &e,
        3,
        &["vm.toml:3:1: unknown key `vcpu` in [vm] (expected one of name, vcpus, cpu_affinity, on_reboot, stop_timeout, control_socket, hyperv, sandbox, user, group)"],
    );
}

#[test]
fn unknown_key_at_the_top_level() {
    let e = error(&format!("{MINIMAL}[cpu]\nmodel = \"host\"\n"));
    assert_error(
        &e,
        6,
        &["unknown key `cpu` in the top level", "vm, memory, boot"],
    );
    let e = error(&format!("verbose = true\n{MINIMAL}"));
    assert_error(&e, 1, &["unknown key `verbose` in the top level"]);
}

#[test]
fn unknown_key_in_an_array_of_tables() {
    let e = error(&with(
        "[[disk]]\npath = \"root.img\"\n\n[[disk]]\npath = \"data.img\"\nread_only = true\n",
    ));
    assert_error(
        &e,
        11,
        &["unknown key `read_only` in [[disk]] (expected one of path, readonly)"],
    );
    let e = error(&with("[[vfio]]\nhost = \"01:00.0\"\nrom_bar = false\n"));
    assert_error(&e, 8, &["unknown key `rom_bar` in [[vfio]]", "rombar"]);
    let e = error(&with(
        "[[net]]\ntap = \"t0\"\nmacaddr = \"52:54:00:00:00:01\"\n",
    ));
    assert_error(&e, 8, &["unknown key `macaddr` in [[net]]", "tap, mac"]);
}

#[test]
fn unknown_keys_in_every_section() {
    for (section, key) in [("memory", "sizee"), ("serial", "file"), ("cpu", "model")] {
        let e = error(&format!("{MINIMAL}[{section}]\n{key} = \"x\"\n"));
        let expected = if section == "cpu" {
            format!("unknown key `{section}` in the top level")
        } else {
            format!("unknown key `{key}` in [{section}]")
        };
        assert_error(&e, if section == "cpu" { 6 } else { 7 }, &[&expected]);
    }
    let e = error(&format!("{MINIMAL}bios = \"OVMF.fd\"\n"));
    assert_error(
        &e,
        6,
        &[
            "unknown key `bios` in [boot] (expected one of kernel, initramfs, cmdline, firmware, \
           firmware_vars, firmware_vars_template)",
        ],
    );
    let e = error("[vm]\nname = \"a\"\n[boot]\nkernel = \"vmlinuz\"\nkernal = \"x\"\n");
    assert_error(&e, 5, &["unknown key `kernal` in [boot]"]);
}

#[test]
fn missing_sections_and_keys() {
    let e = error("[boot]\nkernel = \"vmlinuz\"\n");
    assert!(
        e.ends_with("vm.toml: vm: required section [vm] is missing"),
        "{e}"
    );
    let e = error("[vm]\nname = \"a\"\n");
    assert!(
        e.contains("boot: required section [boot] is missing"),
        "{e}"
    );
    let e = error("[vm]\nvcpus = 2\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(
        &e,
        1,
        &["vm.name: required key `name` is missing from [vm]"],
    );
    let e = error("[vm]\nname = \"a\"\n[boot]\ncmdline = \"x\"\n");
    assert_error(
        &e,
        3,
        &["boot: set `kernel` (direct kernel boot) or `firmware` (UEFI boot from the disks)"],
    );
    let e = error(&with(
        "[[disk]]\npath = \"root.img\"\n[[disk]]\nreadonly = true\n",
    ));
    assert_error(
        &e,
        8,
        &["disk[1].path: required key `path` is missing from [[disk]]"],
    );
}

#[test]
fn wrong_types_name_the_key_and_line() {
    let cases: &[(&str, usize, &[&str])] = &[
        (
            "[vm]\nname = \"a\"\nvcpus = \"8\"\n",
            3,
            &["vm.vcpus: expected a whole number, found string \"8\""],
        ),
        (
            "[vm]\nname = 5\n",
            2,
            &["vm.name: expected a string (in quotes), found integer `5`"],
        ),
        (
            "[vm]\nname = \"a\"\ncpu_affinity = 3\n",
            3,
            &["vm.cpu_affinity: expected an array"],
        ),
        (
            "[vm]\nname = \"a\"\ncpu_affinity = [0, -1]\n",
            3,
            &["vm.cpu_affinity[1]: -1 is not valid here"],
        ),
        (
            "[vm]\nname = \"a\"\ncpu_affinity = [0, \"1\"]\n",
            3,
            &["vm.cpu_affinity[1]: expected a whole number, 0 or more"],
        ),
        (
            "[vm]\nname = \"a\"\non_reboot = \"reboot\"\n",
            3,
            &["vm.on_reboot: \"reboot\" is not a valid value (expected one of restart, exit)"],
        ),
        (
            "[vm]\nname = \"a\"\non_reboot = true\n",
            3,
            &["vm.on_reboot: expected a string (in quotes)"],
        ),
        (
            "[memory]\nhugepages = \"yes\"\n",
            2,
            &["memory.hugepages: expected true or false, found string \"yes\""],
        ),
        (
            "[memory]\nsize = 1.5\n",
            2,
            &["memory.size: expected a size", "found floating point `1.5`"],
        ),
        (
            "[memory]\nhugepage_size = \"4M\"\n",
            2,
            &["memory.hugepage_size: \"4M\" is not a hugepage size (use \"2M\" or \"1G\")"],
        ),
        (
            "[memory]\nprefault = 1\n",
            2,
            &["memory.prefault: expected true or false"],
        ),
        (
            "[serial]\nmode = \"tty\"\n",
            2,
            &["serial.mode: \"tty\" is not a valid value (expected one of stdio, file, socket, off)"],
        ),
        (
            "[[disk]]\npath = 42\n",
            2,
            &["disk[0].path: expected a string"],
        ),
        (
            "[[disk]]\npath = \"root.img\"\nreadonly = \"no\"\n",
            3,
            &["disk[0].readonly: expected true or false"],
        ),
        (
            "[[net]]\ntap = \"t0\"\nmac = \"52:54\"\n",
            3,
            &["net[0].mac: \"52:54\" is not a MAC address"],
        ),
        (
            "[[vfio]]\nhost = \"1:2:3\"\n",
            2,
            &["vfio[0].host: \"1:2:3\" is not a PCI address"],
        ),
        (
            "[[vfio]]\nhost = 1\n",
            2,
            &["vfio[0].host: expected a string"],
        ),
        ("disk = 5\n", 1, &["disk: expected"]),
        (
            "[vfio]\nhost = \"01:00.0\"\n",
            1,
            &["vfio: write [[vfio]], not [vfio]"],
        ),
        (
            "[vm]\nname = \"a\"\ncpu_affinity = { a = 1 }\n",
            3,
            &["vm.cpu_affinity: expected an array like [1, 2], found a table"],
        ),
        ("vm = 5\n", 1, &["vm: expected a table"]),
    ];
    for (body, line, parts) in cases {
        // The body goes first so that its line numbers are the file's.
        let text = if body.starts_with("[vm]") || body.starts_with("vm =") {
            format!("{body}[boot]\nkernel = \"vmlinuz\"\n")
        } else {
            format!("{body}\n{MINIMAL}")
        };
        let e = error(&text);
        assert_error(&e, *line, parts);
    }
}

#[test]
fn size_errors() {
    let e = error("[memory]\nsize = \"12Q\"\n\n[vm]\nname = \"a\"\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(
        &e,
        2,
        &["vm.toml:2:8: memory.size: \"12Q\" is not a size (use K, M, G or a plain number of MiB)"],
    );
    let e = error(&with("[memory]\nsize = \"99999999999T\"\n"));
    assert_error(
        &e,
        7,
        &["memory.size: \"99999999999T\" is not a size (too large)"],
    );
    let e = error(&with("[memory]\nsize = -512\n"));
    assert_error(
        &e,
        7,
        &["memory.size: -512 is not a size (sizes are not negative)"],
    );
    let e = error(&with("[memory]\nsize = 9223372036854775807\n"));
    assert_error(&e, 7, &["memory.size:", "too large"]);
}

#[test]
fn stop_timeout_errors() {
    let e = error("[vm]\nname = \"a\"\nstop_timeout = \"soon\"\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(
        &e,
        3,
        &["vm.stop_timeout: \"soon\" is not a duration (use ms, s, m or h: \"90s\", \"2m\", or a plain number of seconds)"],
    );
    let e = error("[vm]\nname = \"a\"\nstop_timeout = -5\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(
        &e,
        3,
        &["vm.stop_timeout: -5 is not a duration (durations are not negative)"],
    );
}

#[test]
fn vcpus_out_of_range() {
    for n in ["0", "255", "300", "-1"] {
        let e = error(&format!(
            "[vm]\nname = \"a\"\nvcpus = {n}\n[boot]\nkernel = \"vmlinuz\"\n"
        ));
        assert_error(
            &e,
            3,
            &[&format!("vm.vcpus: {n} is out of range (1 to 254)")],
        );
    }
}

#[test]
fn errors_are_one_line_and_exit_2() {
    let fixture = Fixture::new();
    for text in ["x", "[vm]\nnope = 1\n", "[vm]\nname = 1\n", "[boot]\n"] {
        let e: ConfigError = fixture.load(text).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn errors_expose_key_and_location() {
    let fixture = Fixture::new();
    let e = fixture
        .load("[vm]\nname = \"a\"\nvcpus = \"x\"\n[boot]\nkernel = \"vmlinuz\"\n")
        .unwrap_err();
    assert_eq!(e.key(), Some("vm.vcpus"));
    assert_eq!(e.location().and_then(|l| l.line_col), Some((3, 9)));
}

#[test]
fn hyperv_is_a_boolean() {
    let e = error("[vm]\nname = \"a\"\nhyperv = \"yes\"\n[boot]\nkernel = \"vmlinuz\"\n");
    assert_error(&e, 3, &["vm.toml:3:10: vm.hyperv: expected true or false"]);
}
