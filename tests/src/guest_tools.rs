//! What real-guest tests put into their guests and test hosts: the C tools of
//! `tests/guest-tools/`, built static, and VM files.

use std::path::Path;
use std::process::Command;

/// Builds `tests/guest-tools/<name>.c` with `gcc -static -O2` in `dir` and returns the binary.
/// Panics (failing the test) if gcc fails.
pub fn build_static(dir: &Path, name: &str) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("guest-tools/{name}.c"));
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(status.success(), "building guest tool {name} failed");
    std::fs::read(out).expect("guest tool binary")
}

/// A VM file for a test-host scenario: `name`, 1 vCPU, 256 MiB, exit on reboot, the L2 kernel
/// `kernel` with initramfs `/ghost/initrd/<initrd>.cpio.gz` and `cmdline`, then `devices`
/// (`[[disk]]`, `[[net]]`, `[[vfio]]` tables) verbatim.
pub fn vm_file(name: &str, kernel: &str, initrd: &str, cmdline: &str, devices: &str) -> String {
    format!(
        r#"[vm]
name = "{name}"
vcpus = 1
on_reboot = "exit"

[memory]
size = "256M"

[boot]
kernel = "{kernel}"
initramfs = "/ghost/initrd/{initrd}.cpio.gz"
cmdline = "{cmdline}"

{devices}
"#
    )
}
