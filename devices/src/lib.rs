//! Device models for ghost-vmm.
//!
//! This crate owns what the guest touches through port I/O and MMIO exits: the [`bus::Bus`]
//! that dispatches an exit to a device by address, and the emulated platform devices
//! ([`serial::SerialDevice`], [`power::AcpiPowerDevice`], [`ged::GedDevice`] (the ACPI power
//! button's event device), [`i8042::I8042Device`], [`boot_timer::BootTimer`], the CMOS clock
//! and NVRAM [`rtc::Rtc`], QEMU's firmware configuration device [`fw_cfg::FwCfg`] that
//! OVMF reads the machine from, the CFI flash [`pflash::Pflash`] that holds UEFI firmware and
//! its variable store), and the q35 chipset personality UEFI firmware expects ([`q35`]: MCH,
//! ICH9 LPC, its ACPI PM block, the 0xCF9 reset register) with the firmware's debug console
//! ([`debugcon`]).
//! It never links KVM: interrupts leave a device through `EventFd`s that the VMM wires to
//! KVM (irqfd), and power actions through a [`power::PowerHandler`].
//!
//! Everything in here sees guest-controlled values; no input may panic or block a vCPU (the
//! one deliberate wait is the flash writing a completed UEFI variable update to its file).

pub mod boot_timer;
pub mod bus;
pub mod debugcon;
pub mod fw_cfg;
pub mod ged;
pub mod i8042;
pub mod pci;
pub mod pflash;
pub mod power;
pub mod q35;
pub mod rtc;
pub mod serial;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};
