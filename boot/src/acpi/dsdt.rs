//! The DSDT: `\_S5_` and the devices of the platform under `\_SB_`, as AML.
//!
//! - `COM1`: the 16550 UART.
//! - `RTC_`: the CMOS RTC (PNP0B00).
//! - `MBRD`: motherboard resources reserving the ECAM.
//! - `PCI0`: the PCIe host bridge with its windows and INTx routing.
//! - Direct boot only (hardware-reduced ACPI): `GED_` and `PWRB`, the ACPI Generic Event
//!   Device (ACPI0013) and the power button (PNP0C0C) it notifies. Hardware-reduced ACPI has no
//!   fixed power button (no PM1 block, no SCI), so the button is a control-method device: the
//!   VMM sets [`GED_EVENT_POWER_BUTTON`] in the GED's event register ([`GED_MMIO_START`]) and
//!   raises [`GED_GSI`]; Linux's `acpi-ged` driver runs `_EVT`, which reads (and so clears) the
//!   register and sends `Notify (PWRB, 0x80)`; the `button` driver turns that into a KEY_POWER
//!   input event that systemd-logind acts on. The q35 platform has the fixed-feature button in
//!   its PM1 block instead, and no GED.

use acpi_tables::aml::{
    self, AddressSpaceCacheable, Device, EISAName, Equal, Field, FieldAccessType, FieldEntry,
    FieldLockRule, FieldUpdateRule, If, Interrupt, Local, Memory32Fixed, Method, Name, Notify,
    OpRegion, OpRegionSpace, Package, Path, ResourceTemplate, Scope, Store, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::{
    table_id, u32_field, AcpiError, PciWindows, DSDT_REVISION, LAST_BUS, OEM_ID, OEM_REVISION,
    SDT_HEADER_LEN,
};
use crate::layout::{
    CMOS_PORT, CMOS_PORT_LEN, COM1_GSI, COM1_PORT, GED_EVENT_POWER_BUTTON, GED_EVENT_REGISTER_LEN,
    GED_GSI, GED_MMIO_START, RTC_GSI,
};

/// How the platform's power button reaches the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PowerButton {
    /// A control-method button behind the GED (hardware-reduced ACPI).
    Ged,
    /// The fixed-feature button in the PM1 block (nothing in the DSDT).
    Fixed,
}

/// ACPI notification value for a control-method power button: "button pressed".
const NOTIFY_BUTTON_PRESSED: u8 = 0x80;

/// DSDT: `\_S5_` (soft-off with sleep type `s5_slp_typ`) and the devices under `\_SB_`.
pub(super) fn dsdt(
    pci: &PciWindows,
    s5_slp_typ: u8,
    button: PowerButton,
) -> Result<Vec<u8>, AcpiError> {
    let mut dsdt = Sdt::new(
        *b"DSDT",
        SDT_HEADER_LEN,
        DSDT_REVISION,
        OEM_ID,
        table_id(b"DSDT"),
        OEM_REVISION,
    );
    let mut body = Vec::new();
    // \_S5_: Package { SLP_TYPa, SLP_TYPb, reserved, reserved }.
    Name::new(
        Path::new("_S5_"),
        &Package::new(vec![&s5_slp_typ, &aml::ZERO, &aml::ZERO, &aml::ZERO]),
    )
    .to_aml_bytes(&mut body);
    body.extend(Scope::raw(
        Path::new("\\_SB_"),
        system_bus_devices(pci, button)?,
    ));
    dsdt.append_slice(&body);
    Ok(dsdt.as_slice().to_vec())
}

/// AML of the devices in `\_SB_`.
fn system_bus_devices(pci: &PciWindows, button: PowerButton) -> Result<Vec<u8>, AcpiError> {
    let mut sb = Vec::new();
    com1(&mut sb);
    cmos_rtc(&mut sb);
    motherboard_resources(&mut sb, pci)?;
    pci_host_bridge(&mut sb, pci)?;
    if button == PowerButton::Ged {
        generic_event_device(&mut sb)?;
        power_button(&mut sb);
    }
    Ok(sb)
}

/// `\_SB_.PCI0`: the PCIe host bridge of segment 0, bus 0. Its `_CRS` gives the windows the
/// OS may place BARs in: all I/O ports but the 0xCF8 config ports, the 32-bit windows and
/// the 64-bit window of `pci`. `_CBA` points at the ECAM (also in the MCFG) for OSes that look
/// there.
fn pci_host_bridge(sink: &mut Vec<u8>, pci: &PciWindows) -> Result<(), AcpiError> {
    let bus = aml::AddressSpace::<u16>::new_bus_number(0, u16::from(LAST_BUS));
    let config_ports = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = aml::AddressSpace::<u16>::new_io(0x0000, 0x0cf7, None);
    let io_high = aml::AddressSpace::<u16>::new_io(0x0d00, 0xffff, None);
    let mut mmio32 = Vec::with_capacity(pci.mmio32.len());
    for &(start, size) in &pci.mmio32 {
        mmio32.push(aml::AddressSpace::<u32>::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            u32_field("PCI 32-bit window", start)?,
            u32_field("PCI 32-bit window", start + size - 1)?,
            None,
        ));
    }
    let mmio64 = pci.mmio64.map(|(start, size)| {
        aml::AddressSpace::<u64>::new_memory(
            AddressSpaceCacheable::Cacheable,
            true,
            start,
            start + size - 1,
            None,
        )
    });
    let mut resources: Vec<&dyn Aml> = vec![&bus, &config_ports, &io_low, &io_high];
    resources.extend(mmio32.iter().map(|w| w as &dyn Aml));
    resources.extend(mmio64.iter().map(|w| w as &dyn Aml));
    let crs = ResourceTemplate::new(resources);
    // _PRT: every slot's INTA#..INTD# straight to IOAPIC GSIs (no link devices).
    let routes: Vec<(u32, u8, u32)> = (0..32u8)
        .flat_map(|slot| {
            (1..=4u8).map(move |pin| {
                (
                    (u32::from(slot) << 16) | 0xffff,
                    pin - 1,
                    crate::layout::pci_intx_gsi(slot, pin),
                )
            })
        })
        .collect();
    let entries: Vec<Package> = routes
        .iter()
        .map(|(address, pin, gsi)| Package::new(vec![address, pin, &aml::ZERO, gsi]))
        .collect();
    let prt = Package::new(entries.iter().map(|e| e as &dyn acpi_tables::Aml).collect());
    Device::new(
        Path::new("PCI0"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0A08")),
            &Name::new(Path::new("_CID"), &EISAName::new("PNP0A03")),
            &Name::new(Path::new("_ADR"), &aml::ZERO),
            &Name::new(Path::new("_SEG"), &aml::ZERO),
            &Name::new(Path::new("_UID"), &aml::ZERO),
            &Name::new(Path::new("_BBN"), &aml::ZERO),
            &Name::new(Path::new("_CBA"), &pci.ecam_base),
            &Name::new(Path::new("_CRS"), &crs),
            &Name::new(Path::new("_PRT"), &prt),
        ],
    )
    .to_aml_bytes(sink);
    Ok(())
}

/// `\_SB_.COM1`: the 16550 UART at [`COM1_PORT`], IRQ [`COM1_GSI`] (edge, active high).
fn com1(sink: &mut Vec<u8>) {
    let ports = IO::new(COM1_PORT, COM1_PORT, 1, 8);
    // Consumer, edge triggered, active high, exclusive.
    let irq = Interrupt::new(true, true, false, false, COM1_GSI);
    let crs = ResourceTemplate::new(vec![&ports, &irq]);
    Device::new(
        Path::new("COM1"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0501")),
            &Name::new(Path::new("_UID"), &aml::ZERO),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(sink);
}

/// `\_SB_.RTC_`: the MC146818 CMOS RTC at [`CMOS_PORT`], ISA IRQ 8 ([`RTC_GSI`], edge,
/// active high). Hardware-reduced Linux registers no legacy RTC platform device, so this
/// PNP0B00 device is what `rtc_cmos` binds to (`/dev/rtc0`).
fn cmos_rtc(sink: &mut Vec<u8>) {
    // The two ports are 8-bit: Length in the IO descriptor counts ports.
    const _: () = assert!(CMOS_PORT_LEN == 2);
    let ports = IO::new(CMOS_PORT, CMOS_PORT, 1, 2);
    let irq = Interrupt::new(true, true, false, false, RTC_GSI);
    let crs = ResourceTemplate::new(vec![&ports, &irq]);
    Device::new(
        Path::new("RTC_"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0B00")),
            &Name::new(Path::new("_UID"), &aml::ZERO),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(sink);
}

/// `\_SB_.MBRD`: motherboard resources (PNP0C02) reserving the ECAM window, which is how Linux
/// validates the MCFG once ACPI is up (`is_acpi_reserved()` in arch/x86/pci/mmconfig-shared.c).
fn motherboard_resources(sink: &mut Vec<u8>, pci: &PciWindows) -> Result<(), AcpiError> {
    let ecam = Memory32Fixed::new(
        false,
        u32_field("PCI ECAM base", pci.ecam_base)?,
        u32_field("PCI ECAM size", pci.ecam_size)?,
    );
    let crs = ResourceTemplate::new(vec![&ecam]);
    Device::new(
        Path::new("MBRD"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0C02")),
            &Name::new(Path::new("_UID"), &aml::ZERO),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(sink);
    Ok(())
}

/// `\_SB_.GED_`: the Generic Event Device. Its one interrupt ([`GED_GSI`], edge, active
/// high) makes the OS evaluate `_EVT`, which reads the event register (the read clears it on
/// the VMM's side) and notifies the device each set bit stands for.
fn generic_event_device(sink: &mut Vec<u8>) -> Result<(), AcpiError> {
    let irq = Interrupt::new(true, true, false, false, GED_GSI);
    let crs = ResourceTemplate::new(vec![&irq]);
    let base = GED_MMIO_START;
    let len = GED_EVENT_REGISTER_LEN;
    let region = OpRegion::new(Path::new("GDST"), OpRegionSpace::SystemMemory, &base, &len);
    let field = Field::new(
        Path::new("GDST"),
        FieldAccessType::DWord,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![FieldEntry::Named(*b"GDAT", 32)],
    );
    let pending = Local(0);
    let gdat = Path::new("GDAT");
    let read = Store::new(&pending, &gdat);
    let power_bit = GED_EVENT_POWER_BUTTON;
    let masked = aml::And::new(&aml::ZERO, &pending, &power_bit);
    let is_power = Equal::new(&masked, &power_bit);
    let button = Path::new("\\_SB_.PWRB");
    let notify_value = NOTIFY_BUTTON_PRESSED;
    let notify = Notify::new(&button, &notify_value);
    let on_power = If::new(&is_power, vec![&notify]);
    let evt = Method::new(Path::new("_EVT"), 1, true, vec![&read, &on_power]);
    Device::new(
        Path::new("GED_"),
        vec![
            &Name::new(Path::new("_HID"), &"ACPI0013"),
            &Name::new(Path::new("_UID"), &aml::ZERO),
            &Name::new(Path::new("_CRS"), &crs),
            &region,
            &field,
            &evt,
        ],
    )
    .to_aml_bytes(sink);
    Ok(())
}

/// `\_SB_.PWRB`: the control-method power button the GED notifies.
fn power_button(sink: &mut Vec<u8>) {
    Device::new(
        Path::new("PWRB"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0C0C")),
            &Name::new(Path::new("_UID"), &aml::ZERO),
        ],
    )
    .to_aml_bytes(sink);
}
