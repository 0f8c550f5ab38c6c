//! The Debian 12 guest image of the real-distribution tests: systemd, dbus, udev, root on ext4.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use super::error::{Error, Result};
use super::paths::{cache_dir, workspace_root, CACHE_ENV};

/// The in-L2 directory holding the image's kernel and initramfs (see [`TestHost::debian`]).
///
/// [`TestHost::debian`]: super::TestHost::debian
pub const L2_DEBIAN_DIR: &str = "/ghost/debian";
/// The image's kernel inside L2.
pub const L2_DEBIAN_VMLINUZ: &str = "/ghost/debian/vmlinuz";
/// The image's initramfs inside L2.
pub const L2_DEBIAN_INITRD: &str = "/ghost/debian/initrd.img";

/// Printed on the serial console (`GHOST-READY uptime=<seconds>`) by the image's
/// `ghost-ready.service` once `multi-user.target` is reached (logind, dbus and the serial
/// getty started).
pub const DEBIAN_READY: &str = "GHOST-READY";
/// Printed by root's login shell on the serial console (autologin): from then on, lines sent
/// to the console (`vm_send`) run as shell commands.
pub const DEBIAN_SHELL_READY: &str = "GHOST-SHELL-READY";

/// L2 shell functions (prepend them to a scenario's script) for a Debian guest at its root
/// shell on the serial console ([`DEBIAN_SHELL_READY`] seen):
/// - `debian_shell_setup VM`: defines, in the guest's shell, `r KEY CMD...` (prints `KEY=<CMD's
///   output on one line>`, then `KEY-DONE`) and `j NAME CMD...` (CMD's output between
///   `NAME-BEGIN` and `NAME-END` lines). The console echoes what is typed, so a typed line
///   must never contain the marker it waits for: `r KEY ...` is echoed as typed, `KEY=` only
///   comes from `r`.
/// - `ask VM KEY CMD [TIMEOUT]`: `r KEY CMD` in the guest, then waits for `KEY-DONE`.
/// - `dump VM NAME CMD [TIMEOUT]`: `j NAME CMD` in the guest, then waits for `NAME-END`.
///
/// One command at a time, each sent once the previous one's last line is out: the guest's
/// tty echoes typed-ahead text at once, into the middle of whatever it is printing. (The
/// wait matches a line still being printed, so the next command's echo may follow the
/// `-DONE`/`-END` marker on its line; nothing reads those lines further.)
pub const DEBIAN_GUEST_SHELL: &str = r#"
debian_shell_setup() {
    vm_send "$1" 'export SYSTEMD_PAGER= SYSTEMD_COLORS=0 LC_ALL=C'
    vm_send "$1" 'r() { k=$1; shift; echo "$k=$("$@" 2>&1 | tr "\n" " ")"; echo "$k-DONE"; }'
    vm_send "$1" 'j() { n=$1; shift; echo "$n-BEGIN"; "$@" 2>&1 | cat; echo "$n-END"; }'
}
ask() {
    vm_send "$1" "r $2 $3"
    vm_wait_for "$1" "$2-DONE" "${4:-60}"
}
dump() {
    vm_send "$1" "j $2 $3"
    vm_wait_for "$1" "$2-END" "${4:-60}"
}
"#;

/// The image's kernel command line: root on the first virtio disk (the guest's `/dev/vda`
/// whatever L2 calls the disk), a quiet console (errors and warnings still show), and a panic
/// ends the VM instead of hanging it.
pub const DEBIAN_CMDLINE: &str = "console=ttyS0 root=/dev/vda rw quiet panic=-1";

/// ghost-vmm's VM file for the image as VM `name` on L2's disk `disk` (`/dev/vdb`): 2 vCPUs,
/// 1 GiB, the image's own kernel and initramfs booted directly, the console on stdio (where
/// `vm_send` types).
pub fn debian_vm_file(name: &str, disk: &str) -> String {
    format!(
        r#"[vm]
name = "{name}"
vcpus = 2
on_reboot = "exit"

[memory]
size = "1G"

[boot]
kernel = "{L2_DEBIAN_VMLINUZ}"
initramfs = "{L2_DEBIAN_INITRD}"
cmdline = "{DEBIAN_CMDLINE}"

[serial]
mode = "stdio"

[[disk]]
path = "{disk}"
"#
    )
}

/// The Debian 12 (bookworm) guest image built by `tests/testhost/debian-image.sh`, with the
/// files a direct kernel boot needs.
///
/// What is in it: `mmdebstrap --variant=minbase` plus `systemd-sysv dbus libpam-systemd udev
/// kmod linux-image-cloud-amd64 initramfs-tools zstd e2fsprogs util-linux procps
/// util-linux-extra efibootmgr systemd-boot-efi`; `/etc/fstab` mounts `LABEL=ghost-root` (ext4)
/// on `/`; hostname `ghost-guest`; root's password is locked but
/// `serial-getty@ttyS0` logs root in (a login shell there prints [`DEBIAN_SHELL_READY`]);
/// `ghost-ready.service` prints [`DEBIAN_READY`] on ttyS0 once multi-user is reached;
/// systemd-logind handles the power button (`HandlePowerKey=poweroff`). Its own
/// `/boot/vmlinuz-*` and `/boot/initrd.img-*` are also copied next to the image.
///
/// Boot it with `console=ttyS0 root=/dev/vda rw` on a virtio-blk disk, or boot
/// [`efi_image`](Self::efi_image) through OVMF ([`TestHost::with_ovmf`]). The image is cached by
/// the script's hash in `$GHOST_TESTHOST_CACHE/debian-bookworm-<hash>/`; attach it to the test
/// host with [`TestHost::disk`] (a throwaway overlay keeps the cached file pristine) and put
/// its kernel and initramfs into L2 with [`TestHost::debian`].
///
/// ```no_run
/// use ghost_tests::testhost::*;
///
/// let debian = DebianImage::ensure()?;
/// let host = TestHost::new("debian")?
///     .debian(&debian)          // /ghost/debian/{vmlinuz,initrd.img} in L2
///     .disk(&debian.image);     // /dev/vda in L2
/// # Ok::<(), Error>(())
/// ```
///
/// [`TestHost::disk`]: super::TestHost::disk
/// [`TestHost::debian`]: super::TestHost::debian
/// [`TestHost::with_ovmf`]: super::TestHost::with_ovmf
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianImage {
    /// The cache directory of this build (`debian-bookworm-<hash>`).
    pub dir: PathBuf,
    /// The raw ext4 root image (`root.img`, 1536 MiB apparent, sparse).
    pub image: PathBuf,
    /// The image's kernel (bzImage).
    pub vmlinuz: PathBuf,
    /// The image's initramfs (initramfs-tools, zstd).
    pub initrd: PathBuf,
    /// The kernel's version (`uname -r` in the guest).
    pub kernel_version: String,
    /// The installed system for a firmware boot (`efi.img`, 1666 MiB apparent, sparse): a GPT
    /// disk, partition 1 the ESP (FAT32: systemd-boot as `\EFI\BOOT\BOOTX64.EFI` and
    /// `\EFI\systemd\systemd-bootx64.efi`, `loader/loader.conf` with `timeout 0`,
    /// `loader/entries/debian.conf`, the kernel and initramfs as `\debian\vmlinuz` and
    /// `\debian\initrd.img`), partition 2 (`ghost-root`) the same ext4 file system as
    /// [`image`](Self::image). Root is found by PARTUUID: `/dev/vda2` on virtio-blk,
    /// `/dev/nvme0n1p2` on NVMe (the kernel has the NVMe driver built in).
    pub efi_image: PathBuf,
    /// The PARTUUID of `efi_image`'s root partition (fixed per build).
    pub efi_root_partuuid: String,
    /// The loader entry's kernel command line: `root=PARTUUID=<efi_root_partuuid> rw
    /// console=ttyS0 quiet loglevel=6 panic=-1` (`loglevel=6`: the kernel's notices, its
    /// `Linux version` banner first, show through `quiet`, so a test sees where the firmware's
    /// share of a boot ends).
    pub efi_cmdline: String,
}

static IMAGE: Mutex<Option<DebianImage>> = Mutex::new(None);

impl DebianImage {
    /// The image, built by `tests/testhost/debian-image.sh` if the cache does not hold the
    /// current script's build (about 40 s and 350 MiB on disk; needs root and the Debian
    /// mirror apt uses). ~0 s when cached; the result is kept for the life of the process.
    pub fn ensure() -> Result<DebianImage> {
        let mut cached = IMAGE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(image) = cached.as_ref() {
            return Ok(image.clone());
        }
        let dir = run_image_script("debian-image.sh")?;
        let image = Self::locate(Path::new(&dir))?;
        *cached = Some(image.clone());
        Ok(image)
    }

    /// The image built in `dir`, without building anything. Fails unless the build there is
    /// complete.
    pub fn locate(dir: &Path) -> Result<DebianImage> {
        let need = |what: &'static str, name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::MissingAsset { what, path })
            }
        };
        need("Debian image build stamp", ".complete")?;
        let read = |what: &'static str, name: &str| -> Result<String> {
            let path = need(what, name)?;
            Ok(fs::read_to_string(&path)
                .map_err(|e| Error::io("reading", &path, e))?
                .trim()
                .to_owned())
        };
        let kernel_version = read("Debian image kernel version", "kernel-version")?;
        let efi_root_partuuid = read("Debian EFI disk's root PARTUUID", "efi-root-partuuid")?;
        let efi_cmdline = read("Debian EFI disk's kernel command line", "efi-cmdline")?;
        Ok(DebianImage {
            dir: dir.to_path_buf(),
            image: need("Debian root image", "root.img")?,
            vmlinuz: need("Debian image kernel", "vmlinuz")?,
            initrd: need("Debian image initramfs", "initrd.img")?,
            kernel_version,
            efi_image: need("Debian EFI disk", "efi.img")?,
            efi_root_partuuid,
            efi_cmdline,
        })
    }

    /// A `key=value` of the build's `build-info` file: `build_seconds`, `image_apparent_bytes`,
    /// `image_actual_bytes`, `initrd_bytes`, `packages_installed`, `kernel_version`, ...
    pub fn build_info(&self, key: &str) -> Option<String> {
        let text = fs::read_to_string(self.dir.join("build-info")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
    }
}

/// Runs `tests/testhost/<name>` (an image builder that caches by content) and returns the last
/// line it printed on stdout (the path of what it built); its stderr is passed on.
fn run_image_script(name: &str) -> Result<String> {
    let script = workspace_root().join("tests/testhost").join(name);
    let output = Command::new("bash")
        .arg(&script)
        .env(CACHE_ENV, cache_dir())
        .output()
        .map_err(|source| Error::Spawn {
            program: script.display().to_string(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stderr}");
    if !output.status.success() {
        let lines: Vec<&str> = stderr.lines().collect();
        return Err(Error::Setup {
            script,
            status: output.status,
            output_tail: lines[lines.len().saturating_sub(20)..].join("\n"),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(stdout.lines().last().unwrap_or_default().trim().to_owned())
}

/// The hybrid ISO of `tests/testhost/iso-image.sh` (grub-mkrescue: GRUB's menu "ghost-iso"
/// with the entries "ghost-iso live", which boots the Debian image's kernel from the ISO into
/// a busybox that prints `GHOST-ISO-LIVE kernel=<version> efi=<yes|no>` and powers off, and
/// "ghost-iso halt"), built if the cache does not hold it (a few seconds once).
pub fn hybrid_iso() -> Result<PathBuf> {
    let path = PathBuf::from(run_image_script("iso-image.sh")?);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingAsset {
            what: "the hybrid ISO (tests/testhost/iso-image.sh)",
            path,
        })
    }
}
