//! `[boot] firmware`: the checks that a CODE image and a variable store make a UEFI firmware
//! pair, made before anything is created or changed.
//!
//! An OVMF build is one flash device image (`OVMF.fd`, 1, 2 or 4 MiB) cut in two: the
//! variable store (`OVMF_VARS*.fd`, a firmware volume holding the NV variables) and the code
//! (`OVMF_CODE*.fd`). Both start with a firmware volume header ("_FVH" at offset 40); the
//! variable store's volume fills its file exactly; and the two sizes add up to the size of
//! the whole image, a power of two. A VARS file of another build (a 2 MiB build's 128 KiB
//! store next to a 4 MiB build's code) fails that sum.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::{io_reason, ConfigError};
use super::sections::BootConfig;

/// Offset of a firmware volume header's signature, `_FVH`.
pub const FV_SIGNATURE_OFFSET: usize = 40;
/// Offset of a firmware volume header's length (u64).
const FV_LENGTH_OFFSET: usize = 32;
/// A flash image is a whole number of these.
const FLASH_BLOCK: u64 = 4096;
/// Largest flash (CODE + VARS) mapped below 4 GiB.
const MAX_FLASH: u64 = 16 << 20;

/// What the first bytes of a flash image say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareImage {
    /// The file's size.
    pub len: u64,
    /// The length of the firmware volume it starts with.
    pub volume_len: u64,
}

impl FirmwareImage {
    /// Reads the header of the flash image at `path`; `key` names it in errors.
    pub fn read(key: &str, path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display();
        let mut file = File::open(path).map_err(|e| {
            ConfigError::invalid(key, format!("cannot read {shown}: {}", io_reason(&e)))
        })?;
        let len = file
            .metadata()
            .map_err(|e| ConfigError::invalid(key, format!("{shown}: {}", io_reason(&e))))?
            .len();
        let mut header = [0u8; FV_SIGNATURE_OFFSET + 4];
        let not_firmware = |why: &str| {
            ConfigError::invalid(
                key,
                format!("{shown} is not a UEFI firmware flash image ({why})"),
            )
        };
        file.read_exact(&mut header)
            .map_err(|_| not_firmware("too short"))?;
        if &header[FV_SIGNATURE_OFFSET..] != b"_FVH" {
            return Err(not_firmware("no firmware volume header"));
        }
        if len % FLASH_BLOCK != 0 || len > MAX_FLASH {
            return Err(not_firmware(&format!(
                "{len} bytes: not a whole number of 4 KiB blocks up to 16 MiB"
            )));
        }
        let mut volume = [0u8; 8];
        volume.copy_from_slice(&header[FV_LENGTH_OFFSET..FV_LENGTH_OFFSET + 8]);
        Ok(Self {
            len,
            volume_len: u64::from_le_bytes(volume),
        })
    }
}

/// The variable store template beside `code`: its name with `CODE` turned into `VARS`
/// (`OVMF_CODE_4M.fd` → `OVMF_VARS_4M.fd`), also without a `.secboot` or `.ms` part
/// (`OVMF_CODE_4M.secboot.fd` → `OVMF_VARS_4M.fd`). `None` if no such file exists.
pub(super) fn vars_beside(code: &Path) -> Option<PathBuf> {
    let name = code.file_name()?.to_str()?;
    if !name.contains("CODE") {
        return None;
    }
    let vars = name.replace("CODE", "VARS");
    let plain = vars.replace(".secboot", "").replace(".ms", "");
    [vars, plain]
        .into_iter()
        .map(|n| code.with_file_name(n))
        .find(|p| p.is_file())
}

/// Whether this process may create files in `dir`.
fn dir_writable(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Checks `[boot]` for firmware boot: the CODE image, the variable store (or, when it does
/// not exist yet, its folder and the template it will be copied from) and that they pair.
pub(super) fn check(boot: &BootConfig, code: &Path, vars: &Path) -> Result<(), ConfigError> {
    for (key, set) in [
        ("boot.kernel", boot.kernel.is_some()),
        ("boot.initramfs", boot.initramfs.is_some()),
        ("boot.cmdline", boot.cmdline.is_some()),
    ] {
        if set {
            return Err(ConfigError::invalid(
                key,
                "cannot be used with boot.firmware: the firmware boots the kernel the disks \
                 hold (remove one of them)",
            ));
        }
    }
    let code_image = FirmwareImage::read("boot.firmware", code)?;
    let (key, store) = if vars.exists() {
        let shown = vars.display();
        if !vars.is_file() {
            return Err(ConfigError::invalid(
                "boot.firmware_vars",
                format!("{shown} is not a regular file"),
            ));
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(vars)
            .map_err(|e| {
                ConfigError::invalid(
                    "boot.firmware_vars",
                    format!(
                        "cannot open {shown} for writing (the firmware saves its variables \
                         there): {}",
                        io_reason(&e)
                    ),
                )
            })?;
        (
            "boot.firmware_vars",
            FirmwareImage::read("boot.firmware_vars", vars)?,
        )
    } else {
        let dir = match vars.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() || !dir_writable(dir) {
            return Err(ConfigError::invalid(
                "boot.firmware_vars",
                format!(
                    "{} does not exist and cannot be created: {} is not a folder this user \
                     can write to",
                    vars.display(),
                    dir.display()
                ),
            ));
        }
        let Some(template) = boot.firmware_vars_template.as_deref() else {
            return Err(ConfigError::invalid(
                "boot.firmware_vars_template",
                format!(
                    "{} does not exist and no VARS image was found beside {} to create it \
                     from: name one",
                    vars.display(),
                    code.display()
                ),
            ));
        };
        (
            "boot.firmware_vars_template",
            FirmwareImage::read("boot.firmware_vars_template", template)?,
        )
    };
    let total = code_image.len + store.len;
    if store.volume_len != store.len || !total.is_power_of_two() {
        return Err(ConfigError::invalid(
            key,
            format!(
                "a {} KiB variable store does not pair with the {} KiB boot.firmware image \
                 (use the VARS file of the same firmware build)",
                store.len >> 10,
                code_image.len >> 10
            ),
        ));
    }
    Ok(())
}
