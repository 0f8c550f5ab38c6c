//! The platform a VM is built as, chosen once per run from `[boot]`: what differs between
//! direct kernel boot and UEFI firmware boot lives here, so the VM loop (`vm.rs`) has no
//! `if firmware` in it.
//!
//! - [`direct`]: ghost-vmm loads the kernel and writes boot_params and hardware-reduced ACPI
//!   tables itself; the power button is the GED; the boot vCPU starts in 64-bit mode.
//! - [`firmware`]: the q35 chipset (MCH, ICH9 LPC and its PM block, 0xCF9), the CODE and VARS
//!   flash below 4 GiB, fw_cfg with the e820 map, SMBIOS, boot order and the ACPI tables
//!   (generated when the firmware reads them, after it has enumerated PCI); the power button is
//!   the fixed-feature one in the PM block; every vCPU starts in the architectural reset state.

pub(crate) mod direct;
pub(crate) mod firmware;

use std::sync::{Arc, Mutex};

use ghost_devices::pci::DevFn;
use ghost_devices::Bus;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::config::{BootMode, VmConfig};
use crate::passthrough::KvmSlots;
use crate::pci::{PciChipset, PciPlatform};
use crate::vcpu::PowerToControl;
use crate::VmmError;

/// What presses the guest's power button.
pub(crate) trait PowerButton: Send + Sync {
    /// Presses it once.
    fn press(&self) -> std::io::Result<()>;
}

/// The run-level half of a platform: opened before the first boot, kept across reboots.
#[derive(Debug)]
pub(crate) enum Platform {
    /// Direct kernel boot.
    Direct,
    /// UEFI firmware boot, with its images opened (the variable store locked).
    Firmware(firmware::FirmwareImages),
}

/// What the boot's devices are plugged into, for [`Platform::board`].
pub(crate) struct BoardContext<'a> {
    pub config: &'a VmConfig,
    pub vm_fd: &'a Arc<VmFd>,
    pub memory: &'a GuestMemoryMmap,
    pub pio: &'a Arc<Bus>,
    pub mmio: &'a Arc<Bus>,
    pub pci: &'a mut PciPlatform,
    pub power: PowerToControl,
    pub slots: &'a Arc<KvmSlots>,
    /// The 64-bit PCI window the VMM placed BARs in.
    pub mmio64: (u64, u64),
    /// The passed-through functions' 64-bit BARs (sizes) that went into it.
    pub high_bars: &'a [u64],
    /// Where the virtio disks sit, in file order.
    pub disks: &'a [DevFn],
    /// Where the passed-through functions sit, in file order.
    pub passthrough: &'a [DevFn],
    /// The boot images being loaded since [`Platform::start_loading`], if they were.
    pub images: Option<crate::boot::ImageLoad>,
}

/// What a platform gives the boot once its devices are placed.
pub(crate) struct Board {
    /// The power button the lifecycle presses.
    pub power_button: Arc<dyn PowerButton>,
    /// The boot vCPU's 64-bit entry point, or `None`: every vCPU starts in the reset state.
    pub entry: Option<GuestAddress>,
    /// What must live as long as the VM (flash mappings).
    pub keep: Vec<Box<dyn Send>>,
}

impl Platform {
    /// The platform the VM file asks for, with its run-level resources opened.
    pub(crate) fn open(config: &VmConfig) -> Result<Self, VmmError> {
        match config.boot.mode() {
            BootMode::Kernel { .. } => Ok(Self::Direct),
            BootMode::Firmware {
                code,
                vars,
                template,
            } => Ok(Self::Firmware(firmware::FirmwareImages::open(
                code, vars, template,
            )?)),
        }
    }

    /// Adds the platform's files to the sandbox's rules (the firmware's images).
    pub(crate) fn file_rules(&self, rules: &mut ghost_sandbox::files::FileRules) {
        if let Self::Firmware(images) = self {
            images.file_rules(rules);
        }
    }

    /// Tells the keeper of a variable store this run created.
    pub(crate) fn keeper_vars(&self, plan: &mut crate::keeper::KeeperPlan) {
        if let Self::Firmware(images) = self {
            images.keeper_vars(plan);
        }
    }

    /// Undoes what opening created on the host (the firmware's new variable store), for a
    /// run whose guest never booted.
    pub(crate) fn discard_created(&self) {
        if let Self::Firmware(images) = self {
            images.discard_created_store();
        }
    }

    /// Guest RAM regions for `size` bytes.
    pub(crate) fn ram_regions(&self, size: u64) -> Vec<(GuestAddress, usize)> {
        match self {
            Self::Direct => ghost_boot::ram_regions(size),
            Self::Firmware(_) => ghost_boot::firmware::q35_ram_regions(size),
        }
    }

    /// RAM below and above 4 GiB (the CMOS memory bytes).
    pub(crate) fn ram_split(&self, size: u64) -> (u64, u64) {
        match self {
            Self::Direct => {
                let below = size.min(ghost_boot::layout::MMIO_HOLE_START);
                (below, size - below)
            }
            Self::Firmware(_) => ghost_boot::firmware::q35_ram_split(size),
        }
    }

    /// KVM's identity-map page and TSS addresses.
    pub(crate) fn kvm_pages(&self) -> (u64, u64) {
        match self {
            Self::Direct => direct::KVM_PAGES,
            Self::Firmware(_) => (
                ghost_boot::firmware::KVM_IDENTITY_MAP_ADDRESS,
                ghost_boot::firmware::KVM_TSS_ADDRESS,
            ),
        }
    }

    /// The chipset's part of the PCI config paths.
    pub(crate) fn pci_chipset(&self, power: &PowerToControl) -> PciChipset {
        match self {
            Self::Direct => PciChipset {
                ecam: Some(ghost_boot::layout::PCI_ECAM_START),
                reset: None,
            },
            Self::Firmware(_) => firmware::pci_chipset(power),
        }
    }

    /// Starts loading what the platform boots into `memory` (a direct boot's kernel and
    /// initramfs), for [`Self::board`] to wait for; `None` where there is nothing to load.
    pub(crate) fn start_loading(
        &self,
        config: &VmConfig,
        memory: &GuestMemoryMmap,
    ) -> Result<Option<crate::boot::ImageLoad>, VmmError> {
        match self {
            Self::Direct => crate::boot::ImageLoad::start(memory, config).map(Some),
            Self::Firmware(_) => Ok(None),
        }
    }

    /// Places the platform's own devices and describes the machine to the guest, once the
    /// PCI devices are plugged in.
    pub(crate) fn board(&self, ctx: BoardContext<'_>) -> Result<Board, VmmError> {
        match self {
            Self::Direct => direct::board(ctx),
            Self::Firmware(images) => firmware::board(images, ctx),
        }
    }
}

/// The hardware-reduced power button: a bit in the GED's event register.
pub(crate) struct GedButton {
    pub ged: Arc<Mutex<ghost_devices::ged::GedDevice>>,
    pub bit: u32,
}

impl PowerButton for GedButton {
    fn press(&self) -> std::io::Result<()> {
        self.ged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .notify(self.bit)
    }
}
