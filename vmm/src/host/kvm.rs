//! Whether this host's KVM runs stock guest kernels at native speed.
//!
//! Native needs `/dev/kvm` usable and hardware virtualization (`svm`/`vmx` in `/proc/cpuinfo`).
//! A host whose KVM is PVM (`/sys/module/kvm_pvm`, e.g. a cloud VM) runs only PVM-aware guest
//! kernels natively; anything else goes through KVM's instruction emulator.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::Host;

/// The KVM API version every Linux since 2.6.22 reports.
pub const KVM_API_VERSION: i32 = 12;

/// KVM modules `doctor` reports on.
const KVM_MODULES: [&str; 4] = ["kvm", "kvm_amd", "kvm_intel", "kvm_pvm"];

/// Hardware virtualization the CPU flags show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuVirt {
    /// AMD-V (`svm`).
    Svm,
    /// Intel VT-x (`vmx`).
    Vmx,
}

impl CpuVirt {
    /// The KVM module for this CPU.
    pub fn module(self) -> &'static str {
        match self {
            Self::Svm => "kvm_amd",
            Self::Vmx => "kvm_intel",
        }
    }
}

impl fmt::Display for CpuVirt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Svm => "AMD-V (svm)",
            Self::Vmx => "Intel VT-x (vmx)",
        })
    }
}

/// What opening `/dev/kvm` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmDevice {
    /// `/dev/kvm` does not exist.
    Missing,
    /// It exists, but this user may not open it read-write.
    PermissionDenied,
    /// Opening it failed for another reason.
    Failed(String),
    /// Opened read-write; `KVM_GET_API_VERSION` answered this (negative: not a KVM device).
    Open {
        /// The API version.
        api_version: i32,
    },
}

/// How fast stock guest kernels (a Debian kernel, say) run on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestSpeed {
    /// Hardware virtualization: native speed.
    Native,
    /// PVM: only PVM-aware guest kernels run natively; others are emulated (far too slow).
    PvmEmulated,
    /// KVM cannot run guests here; the reason says how to fix it.
    Unavailable(String),
}

impl fmt::Display for GuestSpeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Native => f.write_str("stock guest kernels run at native speed"),
            Self::PvmEmulated => f.write_str(
                "PVM: only PVM-aware guest kernels run natively; stock guests run under \
                 instruction emulation (far too slow) — use the nested test host (tests/) for real guests",
            ),
            Self::Unavailable(reason) => f.write_str(reason),
        }
    }
}

/// KVM on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmStatus {
    /// The device node, normally `/dev/kvm`.
    pub path: PathBuf,
    /// What opening it gave.
    pub device: KvmDevice,
    /// Hardware virtualization in the CPU flags, if any.
    pub cpu_virt: Option<CpuVirt>,
    /// Whether KVM is PVM (`/sys/module/kvm_pvm` exists).
    pub pvm: bool,
    /// Loaded KVM modules (`kvm`, `kvm_amd`, `kvm_intel`, `kvm_pvm`).
    pub modules: Vec<String>,
    /// The verdict.
    pub speed: GuestSpeed,
}

impl KvmStatus {
    /// Whether stock guest kernels run at native speed here.
    pub fn can_run_stock_guests(&self) -> bool {
        self.speed == GuestSpeed::Native
    }
}

impl Host {
    /// Probes `/dev/kvm`, the CPU flags and the KVM modules.
    pub fn kvm_status(&self) -> KvmStatus {
        let path = self.dev("kvm");
        let device = probe_device(&path);
        let flags = self.cpu_flags().unwrap_or_default();
        let cpu_virt = if flags.contains("svm") {
            Some(CpuVirt::Svm)
        } else if flags.contains("vmx") {
            Some(CpuVirt::Vmx)
        } else {
            None
        };
        let modules: Vec<String> = KVM_MODULES
            .iter()
            .filter(|m| self.sys(&format!("module/{m}")).exists())
            .map(|m| (*m).to_owned())
            .collect();
        let pvm = modules.iter().any(|m| m == "kvm_pvm");
        let speed = classify(&device, cpu_virt, pvm);
        KvmStatus {
            path,
            device,
            cpu_virt,
            pvm,
            modules,
            speed,
        }
    }
}

/// Opens the device read-write and asks its API version.
fn probe_device(path: &std::path::Path) -> KvmDevice {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return KvmDevice::Failed("the path has a NUL byte".to_owned());
    };
    match kvm_ioctls::Kvm::new_with_path(c_path) {
        Ok(kvm) => KvmDevice::Open {
            api_version: kvm.get_api_version(),
        },
        Err(e) => {
            let error = io::Error::from_raw_os_error(e.errno());
            match error.kind() {
                io::ErrorKind::NotFound => KvmDevice::Missing,
                io::ErrorKind::PermissionDenied => KvmDevice::PermissionDenied,
                _ => KvmDevice::Failed(crate::config::io_reason(&error)),
            }
        }
    }
}

/// The verdict from what was probed.
pub(crate) fn classify(device: &KvmDevice, cpu_virt: Option<CpuVirt>, pvm: bool) -> GuestSpeed {
    let enable_virt = "enable virtualization (AMD SVM / Intel VT-x) in the firmware setup, \
                       or nested virtualization if this host is itself a VM";
    let unavailable = |reason: String| GuestSpeed::Unavailable(reason);
    match device {
        KvmDevice::Missing => unavailable(match cpu_virt {
            Some(virt) => format!(
                "/dev/kvm does not exist: load KVM with `modprobe {}` (if that fails, {enable_virt})",
                virt.module()
            ),
            None if pvm => "/dev/kvm does not exist although kvm_pvm is loaded: reload it with `modprobe -r kvm_pvm && modprobe kvm_pvm`".to_owned(),
            None => format!("/dev/kvm does not exist and the CPU shows neither svm nor vmx: {enable_virt}"),
        }),
        KvmDevice::PermissionDenied => unavailable(
            "/dev/kvm: permission denied: add yourself to the kvm group \
             (`sudo usermod -aG kvm $USER`, then log in again) or run as root"
                .to_owned(),
        ),
        KvmDevice::Failed(why) => unavailable(format!("/dev/kvm cannot be opened: {why}")),
        KvmDevice::Open { api_version } if *api_version < 0 => {
            unavailable("/dev/kvm is not a KVM device (KVM_GET_API_VERSION failed)".to_owned())
        }
        KvmDevice::Open { api_version } if *api_version != KVM_API_VERSION => unavailable(format!(
            "/dev/kvm has KVM API version {api_version}, ghost-vmm needs {KVM_API_VERSION}"
        )),
        KvmDevice::Open { .. } if pvm => GuestSpeed::PvmEmulated,
        KvmDevice::Open { .. } if cpu_virt.is_some() => GuestSpeed::Native,
        KvmDevice::Open { .. } => unavailable(format!(
            "/dev/kvm works but the CPU shows neither svm nor vmx, so guests would not run at \
             native speed: {enable_virt}"
        )),
    }
}
