//! Direct kernel boot: the kernel, initramfs, boot_params and hardware-reduced ACPI tables
//! in guest memory, the ACPI power port and the GED power button.

use std::sync::{Arc, Mutex};

use ghost_boot::layout;
use ghost_devices::ged::GedDevice;
use ghost_devices::power::AcpiPowerDevice;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Board, BoardContext, GedButton};
use crate::{boot, VmmError};

/// KVM's identity-map page and TSS: three pages of the MMIO hole that are not RAM.
pub(crate) const KVM_PAGES: (u64, u64) = (0xfffb_c000, 0xfffb_d000);

pub(super) fn board(ctx: BoardContext<'_>) -> Result<Board, VmmError> {
    // Started by `Platform::start_loading`; started here if it was not.
    let load = match ctx.images {
        Some(load) => load,
        None => boot::ImageLoad::start(ctx.memory, ctx.config)?,
    };
    let images = load.wait()?;
    let entry = boot::load_guest(ctx.memory, ctx.config, images, ctx.mmio64)?;
    ctx.pio.insert(
        Arc::new(Mutex::new(AcpiPowerDevice::new(
            ctx.power.clone(),
            layout::ACPI_S5_SLP_TYP,
            layout::ACPI_RESET_VALUE,
        ))),
        u64::from(layout::ACPI_POWER_PORT),
        1,
    )?;
    // The power button: the GED's event register and its edge-triggered interrupt.
    let ged_irq = EventFd::new(EFD_NONBLOCK).map_err(VmmError::EventFd)?;
    ctx.vm_fd
        .register_irqfd(&ged_irq, layout::GED_GSI)
        .map_err(VmmError::kvm("KVM_IRQFD"))?;
    let ged = Arc::new(Mutex::new(GedDevice::new(ged_irq)));
    ctx.mmio
        .insert(ged.clone(), layout::GED_MMIO_START, layout::GED_MMIO_SIZE)?;
    Ok(Board {
        power_button: Arc::new(GedButton {
            ged,
            bit: layout::GED_EVENT_POWER_BUTTON,
        }),
        entry: Some(entry),
        keep: Vec::new(),
    })
}
