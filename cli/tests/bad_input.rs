//! The bad-input matrix: every mistake a user can make in a VM file gets a one-line error that
//! names the problem, exit status 2, no hang, and nothing left behind.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    /// A folder with a (fake) kernel file and the given VM file.
    fn new(toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("vmlinuz"), b"not really a kernel").expect("kernel");
        std::fs::write(dir.path().join("vm.toml"), toml).expect("vm.toml");
        Self { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("vm.toml")
    }

    fn run(&self, cmd: &str) -> Output {
        let start = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
            .arg(cmd)
            .arg(self.file())
            .stdin(Stdio::null())
            .output()
            .expect("spawn ghost-vmm");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "bad input must fail fast"
        );
        out
    }

    /// Runs both `check` and `run`: each must fail with exit 2 and one stderr line containing
    /// every `needle`; nothing but the two files may be left in the folder.
    fn expect_error(&self, needles: &[&str]) {
        self.expect_error_keeping(needles, &[]);
    }

    /// [`expect_error`](Self::expect_error) for a folder that also holds `files` (made by the
    /// test), which must be there unchanged afterwards.
    fn expect_error_keeping(&self, needles: &[&str], files: &[&str]) {
        let before: Vec<Vec<u8>> = files
            .iter()
            .map(|f| std::fs::read(self.dir.path().join(f)).expect("test file"))
            .collect();
        for cmd in ["check", "run"] {
            let out = self.run(cmd);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd}: stderr: {stderr}");
            assert_eq!(
                stderr.trim_end().lines().count(),
                1,
                "{cmd}: one line: {stderr}"
            );
            for n in needles {
                assert!(stderr.contains(n), "{cmd}: {n:?} not in: {stderr}");
            }
            assert!(out.stdout.is_empty(), "{cmd}: stdout: {:?}", out.stdout);
            let mut left: Vec<_> = std::fs::read_dir(self.dir.path())
                .expect("read_dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            left.sort();
            let mut expected: Vec<_> = ["vm.toml", "vmlinuz"]
                .iter()
                .chain(files)
                .map(std::ffi::OsString::from)
                .collect();
            expected.sort();
            assert_eq!(left, expected, "{cmd} left files behind");
            for (f, bytes) in files.iter().zip(&before) {
                let now = std::fs::read(self.dir.path().join(f)).expect("test file");
                assert!(&now == bytes, "{cmd} changed {f}");
            }
        }
    }

    /// Writes a fake firmware flash image `name` of `len` bytes (a firmware volume header).
    fn flash(&self, name: &str, len: usize) {
        let mut image = vec![0xffu8; len];
        image[..40].fill(0);
        image[32..40].copy_from_slice(&(len as u64).to_le_bytes());
        image[40..44].copy_from_slice(b"_FVH");
        std::fs::write(self.dir.path().join(name), image).expect("flash image");
    }
}

/// Each case's control socket is in its own folder, so cases run side by side.
const GOOD_VM: &str = "[vm]\nname = \"t\"\nvcpus = 1\ncontrol_socket = \"ctl.sock\"\n";
const GOOD_BOOT: &str = "[boot]\nkernel = \"vmlinuz\"\n";

fn vm_file(vm: &str, memory: &str, boot: &str, extra: &str) -> String {
    format!("{vm}\n[memory]\n{memory}\n{boot}\n{extra}")
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let c = Case::new(&vm_file(
        "[vm]\nname = \"t\"\nvcpu = 2\n",
        "size = \"64M\"",
        GOOD_BOOT,
        "",
    ));
    c.expect_error(&["vcpu", ":3"]);
}

#[test]
fn missing_kernel_is_named() {
    let c = Case::new(&vm_file(
        GOOD_VM,
        "size = \"64M\"",
        "[boot]\nkernel = \"no-such-vmlinuz\"\n",
        "",
    ));
    c.expect_error(&["boot.kernel", "no-such-vmlinuz"]);
}

#[test]
fn unparsable_size_is_named() {
    let c = Case::new(&vm_file(GOOD_VM, "size = \"12Q\"", GOOD_BOOT, ""));
    c.expect_error(&["memory.size", "12Q"]);
}

#[test]
fn ram_beyond_the_cpus_physical_address_space_is_refused() {
    // 2^53 bytes: more than any x86 CPU addresses (52 bits at most).
    let c = Case::new(&vm_file(GOOD_VM, "size = \"8388608G\"", GOOD_BOOT, ""));
    c.expect_error(&["memory.size", "physical address space"]);
}

#[test]
fn zero_vcpus_is_refused() {
    let c = Case::new(&vm_file(
        "[vm]\nname = \"t\"\nvcpus = 0\n",
        "size = \"64M\"",
        GOOD_BOOT,
        "",
    ));
    c.expect_error(&["vm.vcpus"]);
}

#[test]
fn not_toml_at_all_is_refused() {
    let c = Case::new("this is { not toml\n\u{0}\u{1}");
    c.expect_error(&["vm.toml"]);
}

#[test]
fn missing_file_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
        .args(["check", "/nonexistent/ghost/vm.toml"])
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/ghost/vm.toml"), "{stderr}");
}

/// Asks for more hugepages than the host's 2M pool has free. The pool's free count is read here
/// too, so the test holds on any host: it asks for (free + 64) pages' worth.
#[test]
fn more_hugepages_than_reserved_is_refused_with_numbers() {
    let free: u64 =
        std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
    let mib = (free + 64) * 2;
    let c = Case::new(&vm_file(
        GOOD_VM,
        &format!("size = \"{mib}M\"\nhugepages = true"),
        GOOD_BOOT,
        "",
    ));
    c.expect_error(&["memory.hugepages", &format!("{}", free + 64)]);
}

#[test]
fn nonexistent_vfio_host_is_named() {
    let c = Case::new(&vm_file(
        GOOD_VM,
        "size = \"64M\"",
        GOOD_BOOT,
        "[[vfio]]\nhost = \"0000:7f:1f.7\"\n",
    ));
    c.expect_error(&["vfio", "0000:7f:1f.7"]);
}

#[test]
fn garbage_kernel_is_refused_by_run() {
    let c = Case::new(&vm_file(GOOD_VM, "size = \"64M\"", GOOD_BOOT, ""));
    let out = c.run("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("boot.kernel"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [&[][..], &["frobnicate"][..], &["run"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_ghost-vmm"))
            .args(args)
            .output()
            .expect("spawn");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// Another VM (here: this test, holding the same lock ghost-vmm takes) has the image open for
/// writing: ghost-vmm refuses to share it, before touching anything else.
#[test]
fn disk_locked_by_another_vm_is_refused() {
    let images = tempfile::tempdir().expect("tempdir");
    let image = images.path().join("shared.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).expect("image");
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&image)
        .expect("open image");
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&holder),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(rc, 0, "the test takes the lock first");
    let c = Case::new(&vm_file(
        GOOD_VM,
        "size = \"64M\"",
        GOOD_BOOT,
        &format!("[[disk]]\npath = \"{}\"\n", image.display()),
    ));
    c.expect_error(&["disk[0].path", "shared.img", "in use by another VM"]);
    // A read-only attachment needs a shared lock: refused too while a writer holds it.
    let c = Case::new(&vm_file(
        GOOD_VM,
        "size = \"64M\"",
        GOOD_BOOT,
        &format!(
            "[[disk]]\npath = \"{}\"\nreadonly = true\n",
            image.display()
        ),
    ));
    c.expect_error(&["disk[0].path", "in use by another VM"]);
    drop(holder);
}

/// A 128 KiB "build": 112 KiB of code and 16 KiB of variables.
const CODE_LEN: usize = 0x1c000;
const VARS_LEN: usize = 0x4000;

fn firmware_case(boot: &str) -> Case {
    let case = Case::new(&vm_file(GOOD_VM, "size = \"64M\"", boot, ""));
    case.flash("FW_CODE.fd", CODE_LEN);
    case.flash("FW_VARS.fd", VARS_LEN);
    case
}

#[test]
fn firmware_next_to_a_kernel_is_refused() {
    let case = firmware_case("[boot]\nfirmware = \"FW_CODE.fd\"\nkernel = \"vmlinuz\"\n");
    case.expect_error_keeping(&["boot.firmware", "kernel"], &["FW_CODE.fd", "FW_VARS.fd"]);
}

#[test]
fn a_missing_or_non_firmware_file_is_refused() {
    let case = firmware_case("[boot]\nfirmware = \"NO_SUCH.fd\"\n");
    case.expect_error_keeping(
        &["boot.firmware", "NO_SUCH.fd"],
        &["FW_CODE.fd", "FW_VARS.fd"],
    );
    let case = firmware_case("[boot]\nfirmware = \"vmlinuz\"\n");
    case.expect_error_keeping(&["boot.firmware", "vmlinuz"], &["FW_CODE.fd", "FW_VARS.fd"]);
}

#[test]
fn a_variable_store_that_cannot_be_created_or_does_not_pair_is_refused() {
    let case = firmware_case(
        "[boot]\nfirmware = \"FW_CODE.fd\"\nfirmware_vars = \"no/such/dir/t.vars\"\n",
    );
    case.expect_error_keeping(&["boot.firmware_vars"], &["FW_CODE.fd", "FW_VARS.fd"]);
    // A store of another build: its size does not add up with the code's.
    let case = firmware_case("[boot]\nfirmware = \"FW_CODE.fd\"\nfirmware_vars = \"other.vars\"\n");
    case.flash("other.vars", 0x8000);
    case.expect_error_keeping(
        &["boot.firmware_vars", "does not pair"],
        &["FW_CODE.fd", "FW_VARS.fd", "other.vars"],
    );
}
