//! ghost-vmm's VMM: turns a [`config::VmConfig`] into a running KVM virtual machine.
//!
//! - [`config`]: the user's VM file, parsed and validated.
//! - [`host`]: facts about the host (KVM, hugepage pools, IOMMU) for `doctor` and pre-checks.
//! - [`run`]: builds the VM (memory, devices, vCPUs), runs it, restarts it on guest reboot.
//!
//! Only this crate holds KVM file descriptors; device models (`ghost-devices`) and boot-time
//! guest setup (`ghost-boot`) are plain libraries it wires together.

pub mod config;
pub mod host;

mod backends;
mod boot;
mod console;
mod control;
mod hyperv;
mod interrupt;
mod keeper;
mod lifecycle;
mod memory;
mod notify;
mod passthrough;
mod pci;
mod platform;
mod rtc;
mod sandbox;
mod vcpu;
mod vm;

use std::path::PathBuf;

pub use console::RawTerminal;
pub use hyperv::HypervSetupError;
pub use keeper::{main as keeper_main, KEEPER_COMMAND};
pub use lifecycle::{Refusal, Request, RunState};
pub use memory::{MemoryBacking, MemoryError};
pub use sandbox::describe as describe_sandbox;
pub use vcpu::{ExitStats, VmExit};
pub use vm::preflight;
pub use vm::{run, run_with, RunOptions};

/// Errors running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm: {0} (run `ghost-vmm doctor`)")]
    KvmOpen(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("{op} failed: {source}")]
    Kvm {
        /// The ioctl.
        op: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A memory region could not be registered.
    #[error("cannot register guest memory region at {0:#x} with KVM")]
    MemorySlot(u64),
    /// A host resource the VM file asks for is not available.
    #[error(transparent)]
    Host(crate::host::HostError),
    /// The kernel image cannot be loaded.
    #[error("boot.kernel: {path}: {source}")]
    Kernel {
        /// The kernel path.
        path: PathBuf,
        /// Why.
        #[source]
        source: ghost_boot::loader::LoaderError,
    },
    /// The initramfs cannot be loaded.
    #[error("boot.initramfs: {path}: {source}")]
    Initramfs {
        /// The initramfs path.
        path: PathBuf,
        /// Why.
        #[source]
        source: ghost_boot::loader::LoaderError,
    },
    /// The command line or zero page cannot be written.
    #[error("boot.cmdline: {0}")]
    BootParams(#[source] ghost_boot::bootparams::BootParamsError),
    /// Writing boot structures (ACPI, page tables, CPUID) failed.
    #[error(transparent)]
    Boot(#[from] ghost_boot::BootError),
    /// Opening a guest file named in the VM file failed.
    #[error("{key}: cannot open {path}: {source}")]
    GuestFile {
        /// The VM file key.
        key: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The console file could not be opened.
    #[error("serial.path: cannot open {0}: {1}")]
    ConsoleFile(PathBuf, #[source] std::io::Error),
    /// The console socket (`serial.mode = "socket"`) could not be created.
    #[error("serial.mode = \"socket\": cannot create the console socket {0}: {1}")]
    ConsoleSocket(PathBuf, #[source] std::io::Error),
    /// A device could not be placed on a bus.
    #[error("device bus: {0}")]
    Bus(#[from] ghost_devices::BusError),
    /// eventfd creation failed.
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// Signal handler setup failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// A setup thread (the image loader) could not be started, or died.
    #[error("cannot load the boot images: {0}")]
    Thread(#[source] std::io::Error),
    /// A `[[disk]]` image cannot be used (missing, unreadable, or locked by another VM).
    #[error("disk[{index}].path: {source}")]
    Disk {
        /// Index of the `[[disk]]` entry.
        index: usize,
        /// Why.
        #[source]
        source: ghost_devices::virtio::block::BlockError,
    },
    /// A `[[net]]` TAP cannot be opened or created.
    #[error("net[{index}].tap: {source}")]
    Net {
        /// Index of the `[[net]]` entry.
        index: usize,
        /// Why.
        #[source]
        source: ghost_devices::virtio::net::NetError,
    },
    /// The PCI platform or a PCI device could not be built.
    #[error(transparent)]
    Pci(#[from] crate::pci::PciSetupError),
    /// Guest RAM or the passed-through devices' BARs do not fit the guest's physical address
    /// space.
    #[error(transparent)]
    AddressSpace(#[from] ghost_boot::layout::AddressSpaceError),
    /// The control API's socket cannot be set up (or another VM of this name runs).
    #[error("vm.control_socket: {0}")]
    ControlSocket(#[source] ghost_api::ApiError),
    /// The firmware's images or its devices could not be set up.
    #[error(transparent)]
    Firmware(#[from] crate::platform::firmware::FirmwareError),
    /// `vm.hyperv` cannot be honoured on this host.
    #[error(transparent)]
    Hyperv(#[from] HypervSetupError),
    /// The device event loop could not be created.
    #[error("cannot create the device event loop: {0}")]
    EventManager(#[source] event_manager::Error),
    /// `vm.user` (or `--user`) cannot be used.
    #[error("vm.user: {0}")]
    User(#[source] ghost_sandbox::SandboxError),
    /// The sandbox could not be set up (`vm.sandbox = false` runs without it).
    #[error("vm.sandbox: {0}")]
    Sandbox(#[source] ghost_sandbox::SandboxError),
}

impl VmmError {
    /// The process exit status for this error: 2 for problems with the user's input or the
    /// host resources it asks for, 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Host(_)
            | Self::GuestFile { .. }
            | Self::ConsoleFile(..)
            | Self::ConsoleSocket(..)
            | Self::Kernel { .. }
            | Self::Initramfs { .. }
            | Self::BootParams(_)
            | Self::Disk { .. }
            | Self::Net { .. }
            | Self::ControlSocket(_)
            | Self::AddressSpace(_)
            | Self::Sandbox(_)
            | Self::User(_) => 2,
            Self::Firmware(e) if e.is_bad_input() => 2,
            Self::Hyperv(HypervSetupError::Unsupported) => 2,
            _ => 1,
        }
    }

    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
        move |source| VmmError::Kvm { op, source }
    }
}
