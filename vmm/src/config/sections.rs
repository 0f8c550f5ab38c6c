//! The VM file's sections as serde structs: one struct per TOML table, unknown keys rejected.
//!
//! The keys and their defaults are the user-facing contract in `docs/config.md`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::duration::TimeSpan;
use super::mac::MacAddr;
use super::pci::PciAddress;
use super::size::{ByteSize, HugepageSize};

/// Fewest and most vCPUs a VM can have.
pub const VCPUS_RANGE: std::ops::RangeInclusive<u8> = 1..=254;
/// Guest RAM when `[memory]` does not say.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// The kernel command line when `[boot]` does not say.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// A whole VM file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// `[vm]`: name, vCPUs, what a guest reboot does.
    pub vm: VmSection,
    /// `[memory]`: guest RAM and its backing (default: 512M of normal pages).
    #[serde(default)]
    pub memory: MemoryConfig,
    /// `[boot]`: kernel, initramfs, command line.
    pub boot: BootConfig,
    /// `[serial]`: where the guest console goes (default: this terminal).
    #[serde(default)]
    pub serial: SerialConfig,
    /// `[[disk]]`: virtio-blk disks, in order `/dev/vda`, `/dev/vdb`, ...
    #[serde(default)]
    pub disk: Vec<DiskConfig>,
    /// `[[net]]`: virtio-net NICs backed by TAP devices.
    #[serde(default)]
    pub net: Vec<NetConfig>,
    /// `[[vfio]]`: host PCI devices passed through with VFIO.
    #[serde(default)]
    pub vfio: Vec<VfioConfig>,
}

/// `[vm]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSection {
    /// Used in logs, the control socket name and the process title: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// Number of vCPUs, 1 to 254 (default 1).
    #[serde(default = "default_vcpus", deserialize_with = "deserialize_vcpus")]
    pub vcpus: u8,
    /// vCPU `i` runs pinned to host CPU `cpu_affinity[i]`; one entry per vCPU.
    #[serde(default)]
    pub cpu_affinity: Option<Vec<usize>>,
    /// What a guest reboot does (default: restart the VM in place).
    #[serde(default)]
    pub on_reboot: OnReboot,
    /// How long a graceful stop (SIGTERM, `ghost-vmm shutdown`) waits for the guest to power
    /// off after its power button was pressed, before the VM is stopped hard (default 90 s;
    /// `"0s"`: stop hard at once).
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: TimeSpan,
    /// The control API's Unix socket (default: `/run/ghost-vmm/NAME.sock`).
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Offer the guest Hyper-V enlightenments (default false; see [`ghost_boot::hyperv`]):
    /// what Windows guests want.
    #[serde(default)]
    pub hyperv: bool,
    /// Confine the process once the VM is set up (default true): seccomp filters per
    /// thread, no new privileges, no core dumps ([`ghost_sandbox`]). `false` is for
    /// debugging, and says so in a warning.
    #[serde(default = "default_true")]
    pub sandbox: bool,
    /// Run as this user (a name or a number) once root's part of setup is done: TAPs,
    /// vfio-pci binding, hugepages, locked memory. Only for a `ghost-vmm run` started as root.
    #[serde(default)]
    pub user: Option<String>,
    /// With `user`: this group instead of the user's primary group (a name or a number).
    #[serde(default)]
    pub group: Option<String>,
}

/// `vm.stop_timeout` when the file does not say.
pub const DEFAULT_STOP_TIMEOUT: TimeSpan = TimeSpan::from_secs(90);

fn default_stop_timeout() -> TimeSpan {
    DEFAULT_STOP_TIMEOUT
}

impl VmSection {
    /// The control socket's path: `control_socket`, or `NAME.sock` in the user's socket
    /// folder (`/run/ghost-vmm` for root: [`ghost_api::socket_dir`]).
    pub fn control_socket_path(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| ghost_api::default_socket_path(&self.name))
    }

    /// The console socket's path (`serial.mode = "socket"`): next to the control socket,
    /// its `.sock` replaced by `.console` (`/run/ghost-vmm/NAME.console` by default).
    pub fn console_socket_path(&self) -> PathBuf {
        console_socket_of(&self.control_socket_path())
    }
}

/// The console socket that goes with the control socket `control`: `.sock` replaced by
/// `.console`, or `.console` appended when the control socket has another name.
pub fn console_socket_of(control: &Path) -> PathBuf {
    if control.extension().is_some_and(|e| e == "sock") {
        control.with_extension("console")
    } else {
        let mut name = control.as_os_str().to_owned();
        name.push(".console");
        PathBuf::from(name)
    }
}

/// What ghost-vmm does when the guest reboots (`vm.on_reboot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnReboot {
    /// `"restart"`: build the VM again and boot it, in the same process.
    #[default]
    Restart,
    /// `"exit"`: stop, exit status 0 (for a supervisor that restarts it).
    Exit,
}

/// `[memory]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Guest RAM (default 512M).
    #[serde(default = "default_memory_size")]
    pub size: ByteSize,
    /// Back guest RAM with hugetlb pages from the host's reserved pool.
    #[serde(default)]
    pub hugepages: bool,
    /// The hugepage size, when `hugepages = true` (default 2M).
    #[serde(default)]
    pub hugepage_size: HugepageSize,
    /// Touch all guest RAM before the guest starts (always done with VFIO devices).
    #[serde(default)]
    pub prefault: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            size: default_memory_size(),
            hugepages: false,
            hugepage_size: HugepageSize::default(),
            prefault: false,
        }
    }
}

/// `[boot]`: either direct kernel boot (`kernel`, `initramfs`, `cmdline`) or UEFI firmware
/// from flash (`firmware`, `firmware_vars`, `firmware_vars_template`); see [`BootMode`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// The guest kernel: a bzImage or an ELF vmlinux.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// An initramfs (cpio, possibly compressed).
    #[serde(default)]
    pub initramfs: Option<PathBuf>,
    /// The kernel command line (default [`DEFAULT_CMDLINE`]).
    #[serde(default)]
    pub cmdline: Option<String>,
    /// A UEFI firmware CODE image (e.g. Debian's `/usr/share/OVMF/OVMF_CODE_4M.fd`), mapped
    /// read-only below 4 GiB.
    #[serde(default)]
    pub firmware: Option<PathBuf>,
    /// This VM's UEFI variable store (flash the firmware writes); created from
    /// `firmware_vars_template` when missing. Default: `NAME.vars` beside the VM file.
    #[serde(default)]
    pub firmware_vars: Option<PathBuf>,
    /// The empty variable store a new `firmware_vars` is copied from. Default: the VARS image
    /// beside `firmware` (`OVMF_CODE_4M.fd` → `OVMF_VARS_4M.fd`).
    #[serde(default)]
    pub firmware_vars_template: Option<PathBuf>,
}

/// How the VM boots, once `[boot]` is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode<'a> {
    /// The kernel is loaded by the VMM and entered in 64-bit mode.
    Kernel {
        /// The kernel image.
        kernel: &'a Path,
        /// The initramfs.
        initramfs: Option<&'a Path>,
        /// The command line.
        cmdline: &'a str,
    },
    /// UEFI firmware from flash boots whatever the disks hold.
    Firmware {
        /// The CODE image.
        code: &'a Path,
        /// The variable store.
        vars: &'a Path,
        /// Where a missing variable store is copied from (`None`: no template was found
        /// beside the CODE image, which validation allows only when `vars` exists).
        template: Option<&'a Path>,
    },
}

impl BootConfig {
    /// The kernel command line, with its default.
    pub fn cmdline(&self) -> &str {
        self.cmdline.as_deref().unwrap_or(DEFAULT_CMDLINE)
    }

    /// How this VM boots. Firmware boot when `firmware` is set (validation refuses it next to
    /// kernel keys), else direct kernel boot (validation requires `kernel`).
    pub fn mode(&self) -> BootMode<'_> {
        match (&self.firmware, &self.kernel) {
            (Some(code), _) => BootMode::Firmware {
                code,
                vars: self.firmware_vars.as_deref().unwrap_or(Path::new("")),
                template: self.firmware_vars_template.as_deref(),
            },
            (None, kernel) => BootMode::Kernel {
                kernel: kernel.as_deref().unwrap_or(Path::new("")),
                initramfs: self.initramfs.as_deref(),
                cmdline: self.cmdline(),
            },
        }
    }
}

/// `[serial]`: the guest's COM1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Where the console goes (default `"stdio"`).
    #[serde(default)]
    pub mode: SerialMode,
    /// The file to write to: required with `mode = "file"`; with `mode = "socket"`, an
    /// optional log that the console output is also appended to; not used otherwise.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// `serial.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialMode {
    /// `"stdio"`: this terminal (put in raw mode while the VM runs).
    #[default]
    Stdio,
    /// `"file"`: appended to `serial.path`.
    File,
    /// `"socket"`: a Unix socket next to the control socket (`ghost-vmm console NAME`
    /// attaches to it), with the last 1 MiB kept for replay; also appended to
    /// `serial.path` when set.
    Socket,
    /// `"off"`: discarded.
    Off,
}

impl fmt::Display for SerialMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stdio => "stdio",
            Self::File => "file",
            Self::Socket => "socket",
            Self::Off => "off",
        })
    }
}

/// One `[[disk]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// A raw image file or a block device.
    pub path: PathBuf,
    /// Attach read-only: the guest cannot write (default false).
    #[serde(default)]
    pub readonly: bool,
}

/// One `[[net]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The host TAP device (created if missing).
    pub tap: String,
    /// The guest NIC's MAC (default: [`MacAddr::derived`] from the VM name, stable across runs).
    #[serde(default)]
    pub mac: Option<MacAddr>,
}

impl NetConfig {
    /// The MAC the guest sees for NIC number `index` of VM `vm_name`.
    pub fn effective_mac(&self, vm_name: &str, index: usize) -> MacAddr {
        self.mac.unwrap_or_else(|| MacAddr::derived(vm_name, index))
    }
}

/// One `[[vfio]]`: a host PCI function passed through to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfioConfig {
    /// The host device, as `lspci -D` shows it: `"0000:01:00.0"` (or `"01:00.0"`).
    pub host: PciAddress,
    /// Show the guest this option ROM file instead of the device's own (e.g. a patched vBIOS).
    #[serde(default)]
    pub rom: Option<PathBuf>,
    /// Expose the device's ROM BAR to the guest (default true); `false` hides it.
    #[serde(default = "default_true")]
    pub rombar: bool,
    /// Bind the device to vfio-pci at start and give it back to its host driver on exit
    /// (default false: the user binds it beforehand).
    #[serde(default)]
    pub bind: bool,
}

impl VmConfig {
    /// Whether guest RAM is touched before start: when asked, and always with VFIO devices
    /// (they DMA into guest RAM, which must be pinned).
    pub fn prefault_memory(&self) -> bool {
        self.memory.prefault || !self.vfio.is_empty()
    }
}

fn default_vcpus() -> u8 {
    1
}

fn default_memory_size() -> ByteSize {
    ByteSize::from_bytes(DEFAULT_MEMORY_MIB << 20)
}

fn default_true() -> bool {
    true
}

/// `vm.vcpus` as any integer, so that an out-of-range count gets a message with the range.
fn deserialize_vcpus<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    let n = i64::deserialize(deserializer)?;
    u8::try_from(n)
        .ok()
        .filter(|v| VCPUS_RANGE.contains(v))
        .ok_or_else(|| {
            de::Error::custom(format!(
                "{n} is out of range ({} to {})",
                VCPUS_RANGE.start(),
                VCPUS_RANGE.end()
            ))
        })
}
