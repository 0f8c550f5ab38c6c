//! UEFI firmware boot on the q35 personality: the flash, the chipset and fw_cfg.
//!
//! Per run ([`FirmwareImages`]): the CODE image, and the VARS store (created from the template
//! when missing, then locked so that no second VM writes it). Per boot ([`board`]): both
//! images as CFI flash ending at 4 GiB (read-only KVM slots while in read-array mode, so the
//! firmware executes and reads its variables without exits), the MCH and LPC bridges on the
//! PCI root with the PM block and SCI, the debug console at 0x402, and fw_cfg.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use ghost_boot::acpi::{firmware_tables, FirmwareAcpi, PciWindows, Q35Platform};
use ghost_boot::firmware::{
    bootorder_blob, e820_blob, flash_layout, mmio64_size_blob, BootDevice, MMIO64_SIZE_FILE,
};
use ghost_boot::layout::{IOAPIC_START, RAM_HIGH_START};
use ghost_boot::smbios::{self, SmbiosInfo};
use ghost_devices::debugcon::{DebugConsole, DEBUGCON_PORT};
use ghost_devices::fw_cfg::{self, FwCfg, FwCfgFile};
use ghost_devices::pci::{DevFn, PciConfigMmio, PciRoot};
use ghost_devices::pflash::{FlashMapping, Pflash, OVMF_SECTOR_SIZE};
use ghost_devices::q35::{self, mch::pciexbar_window, pm, EcamHost, IrqLevel, PmHost};
use ghost_devices::q35::{Lpc, Mch, PmRegisters, ResetControl};
use ghost_devices::Bus;
use kvm_ioctls::VmFd;
use vm_memory::MmapRegion;

use super::{Board, BoardContext, PowerButton};
use crate::passthrough::KvmSlots;
use crate::pci::PciChipset;
use crate::vcpu::{PowerToControl, VmControl, VmExit};
use crate::VmmError;

/// The SCI's GSI (ISA IRQ 9, what the FADT and the MADT override say).
const SCI_GSI: u32 = 9;
/// Where the PM block is described when the firmware never enabled it (OVMF uses 0x600).
const DEFAULT_PM_BASE: u16 = 0x600;
/// The ECAM the tables describe when the firmware never enabled PCIEXBAR.
const DEFAULT_ECAM: (u64, u64) = (0xb000_0000, 0x1000_0000);

/// Firmware setup that failed.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// A file named by `[boot]` cannot be used.
    #[error("{key}: {path}: {why}")]
    File {
        /// The key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A flash image cannot be emulated.
    #[error("{key}: {0}", key = .0)]
    Flash(&'static str, #[source] ghost_devices::pflash::PflashError),
    /// The images do not fit below 4 GiB.
    #[error("boot.firmware: the CODE and VARS images do not fit the flash area below 4 GiB")]
    Layout,
    /// A fw_cfg item could not be added (a bug in ghost-vmm).
    #[error("fw_cfg: {0}")]
    FwCfg(#[from] ghost_devices::fw_cfg::FwCfgError),
    /// The SMBIOS tables could not be built.
    #[error("SMBIOS: {0}")]
    Smbios(#[from] ghost_boot::smbios::SmbiosError),
}

impl FirmwareError {
    /// Whether the user's input is at fault (exit status 2).
    pub(crate) fn is_bad_input(&self) -> bool {
        matches!(self, Self::File { .. } | Self::Layout)
    }
}

fn file_error(key: &'static str, path: &Path, e: &std::io::Error) -> FirmwareError {
    FirmwareError::File {
        key,
        path: path.to_owned(),
        why: crate::config::io_reason(e),
    }
}

/// The run's firmware images.
#[derive(Debug)]
pub(crate) struct FirmwareImages {
    code: (File, PathBuf),
    vars: (File, PathBuf),
    /// Whether this run created the store from its template.
    created: bool,
}

impl FirmwareImages {
    /// Opens the CODE image and the VARS store, creating the store from `template` when it
    /// does not exist, and locks the store for this run.
    pub(crate) fn open(
        code: &Path,
        vars: &Path,
        template: Option<&Path>,
    ) -> Result<Self, FirmwareError> {
        let code_file = File::open(code).map_err(|e| file_error("boot.firmware", code, &e))?;
        let created = !vars.exists();
        if created {
            let template = template.ok_or_else(|| FirmwareError::File {
                key: "boot.firmware_vars_template",
                path: vars.to_owned(),
                why: "does not exist and there is no template to create it from".into(),
            })?;
            create_store(vars, template)?;
        }
        let vars_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(vars)
            .map_err(|e| file_error("boot.firmware_vars", vars, &e))?;
        // SAFETY: flock on a descriptor we own; it touches no memory.
        if unsafe { libc::flock(vars_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(FirmwareError::File {
                key: "boot.firmware_vars",
                path: vars.to_owned(),
                why: "in use by another VM (each VM needs its own variable store)".into(),
            });
        }
        Ok(Self {
            code: (code_file, code.to_owned()),
            vars: (vars_file, vars.to_owned()),
            created,
        })
    }

    /// What the sandbox must leave reachable: the CODE image (read each boot), the store,
    /// and the store's folder for removing a store this run created.
    pub(crate) fn file_rules(&self, rules: &mut ghost_sandbox::files::FileRules) {
        rules.read(&self.code.1).read_write(&self.vars.1);
        if self.created {
            if let Some(dir) = self.vars.1.parent() {
                rules.remove_in(dir);
            }
        }
    }

    /// The store, for the keeper to remove if this run created it and never booted.
    pub(crate) fn keeper_vars(&self, plan: &mut crate::keeper::KeeperPlan) {
        if self.created {
            plan.vars(&self.vars.1);
        }
    }

    /// Removes the store again if this run created it: for a run that never booted the
    /// firmware (it leaves nothing behind).
    pub(crate) fn discard_created_store(&self) {
        if self.created {
            let path = &self.vars.1;
            match std::fs::remove_file(path) {
                Ok(()) => log::info!("boot.firmware_vars: removed {} again", path.display()),
                Err(e) => log::warn!("boot.firmware_vars: cannot remove {}: {e}", path.display()),
            }
        }
    }
}

/// Copies `template` to a new `vars` file, on disk before it is used.
fn create_store(vars: &Path, template: &Path) -> Result<(), FirmwareError> {
    let bytes = std::fs::read(template)
        .map_err(|e| file_error("boot.firmware_vars_template", template, &e))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(vars)
        .map_err(|e| file_error("boot.firmware_vars", vars, &e))?;
    let written = out.write_all(&bytes).and_then(|()| out.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(vars);
        return Err(file_error("boot.firmware_vars", vars, &e));
    }
    log::info!(
        "boot.firmware_vars: created {} from {}",
        vars.display(),
        template.display()
    );
    Ok(())
}

/// The q35 config paths: no ECAM until the firmware programs PCIEXBAR, and 0xCF9.
pub(super) fn pci_chipset(power: &PowerToControl) -> PciChipset {
    PciChipset {
        ecam: None,
        reset: Some(ResetControl::new(Box::new(power.clone()))),
    }
}

/// A flash image's read-only KVM slot, present while the flash is in read-array mode.
struct FlashSlot {
    slots: Arc<KvmSlots>,
    gpa: u64,
    memory: Arc<MmapRegion>,
    slot: Option<u32>,
}

impl FlashSlot {
    fn set(&mut self, on: bool) {
        match (on, self.slot) {
            (true, None) => {
                // SAFETY: `memory` is kept alive by this struct, which the device keeps until
                // the VM is torn down; the slot is removed before that (on drop).
                let mapped = unsafe {
                    self.slots.map_readonly(
                        self.gpa,
                        self.memory.size() as u64,
                        self.memory.as_ptr(),
                    )
                };
                match mapped {
                    Ok(slot) => self.slot = Some(slot),
                    Err(e) => log::warn!("flash at {:#x}: cannot map: {e}", self.gpa),
                }
            }
            (false, Some(slot)) => {
                if let Err(e) = ghost_vfio::GuestMappings::unmap(&*self.slots, slot) {
                    log::warn!("flash at {:#x}: cannot unmap: {e}", self.gpa);
                }
                self.slot = None;
            }
            _ => {}
        }
    }
}

impl FlashMapping for FlashSlot {
    fn read_array(&mut self, on: bool) {
        self.set(on);
    }
}

impl Drop for FlashSlot {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Puts a flash image at `gpa`: the device on the MMIO bus, its memory as a read-only slot.
fn plug_flash(
    ctx: &BoardContext<'_>,
    mut flash: Pflash,
    gpa: u64,
) -> Result<Arc<Mutex<Pflash>>, VmmError> {
    let mut slot = FlashSlot {
        slots: ctx.slots.clone(),
        gpa,
        memory: flash.memory(),
        slot: None,
    };
    slot.set(true);
    flash.set_mapping(Box::new(slot));
    let size = flash.size();
    let flash = Arc::new(Mutex::new(flash));
    ctx.mmio.insert(flash.clone(), gpa, size)?;
    Ok(flash)
}

/// The ECAM follows PCIEXBAR; an SMM probe ends the VM with a message.
struct EcamMapper {
    mmio: Weak<Bus>,
    root: Weak<Mutex<PciRoot>>,
    at: Option<u64>,
    control: Arc<VmControl>,
}

impl EcamHost for EcamMapper {
    fn ecam_moved(&mut self, window: Option<(u64, u64)>) {
        let Some(mmio) = self.mmio.upgrade() else {
            return;
        };
        if let Some(old) = self.at.take() {
            let _ = mmio.remove(old);
        }
        let (Some((base, size)), Some(root)) = (window, self.root.upgrade()) else {
            return;
        };
        match mmio.insert(Arc::new(Mutex::new(PciConfigMmio::new(root))), base, size) {
            Ok(()) => {
                log::debug!("ECAM at {base:#x}+{size:#x}");
                self.at = Some(base);
            }
            Err(e) => log::warn!("the firmware's ECAM at {base:#x} cannot be mapped: {e}"),
        }
    }

    fn smm_requested(&mut self) {
        self.control.request_exit(VmExit::Unsupported(
            "boot.firmware: this firmware build needs SMM (System Management Mode), which \
             ghost-vmm does not emulate; use a build without it (Debian: OVMF_CODE_4M.fd, not \
             OVMF_CODE_4M.secboot.fd)"
                .into(),
        ));
    }
}

/// The PM block follows PMBASE/ACPI_CNTL.
struct PmMapper {
    pio: Weak<Bus>,
    pm: Arc<Mutex<PmRegisters>>,
    at: Option<u16>,
}

impl PmHost for PmMapper {
    fn pm_moved(&mut self, base: Option<u16>) {
        let Some(pio) = self.pio.upgrade() else {
            return;
        };
        if let Some(old) = self.at.take() {
            let _ = pio.remove(u64::from(old));
        }
        if let Some(base) = base {
            match pio.insert(self.pm.clone(), u64::from(base), pm::PM_BLOCK_LEN) {
                Ok(()) => self.at = Some(base),
                Err(e) => log::warn!("the firmware's PM block at {base:#x} cannot be placed: {e}"),
            }
        }
    }
}

/// The SCI, a level-triggered ISA IRQ driven with KVM_IRQ_LINE.
struct SciLine(Arc<VmFd>);

impl IrqLevel for SciLine {
    fn set_level(&self, asserted: bool) {
        if let Err(e) = self.0.set_irq_line(SCI_GSI, asserted) {
            log::warn!("SCI: KVM_IRQ_LINE failed: {e}");
        }
    }
}

/// The fixed-feature power button.
struct PmButton(Arc<Mutex<PmRegisters>>);

impl PowerButton for PmButton {
    fn press(&self) -> std::io::Result<()> {
        let enabled = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button();
        if !enabled {
            // Like a PC's button pressed while the OS is still starting: the status bit is set,
            // but an OS that initializes ACPI later clears it; the stop timeout still applies.
            log::warn!(
                "the guest has not enabled its power button (yet): it may not see this press"
            );
        }
        Ok(())
    }
}

/// What the ACPI generator reads from the chipset when the firmware asks for the tables.
struct AcpiSource {
    root: Weak<Mutex<PciRoot>>,
    vcpus: u8,
    low_ram_end: u64,
    mmio64: (u64, u64),
    cached: Option<FirmwareAcpi>,
}

fn read_config(root: &PciRoot, (device, function): (u8, u8), offset: u16) -> u32 {
    let mut data = [0u8; 4];
    if let Some(devfn) = DevFn::new(device, function) {
        root.config_read(devfn, offset, &mut data);
    }
    u32::from_le_bytes(data)
}

impl AcpiSource {
    fn platform(&self) -> Q35Platform {
        let (ecam, pm_base, bars) = match self.root.upgrade() {
            Some(root) => {
                let root = root.lock().unwrap_or_else(|e| e.into_inner());
                let ecam = pciexbar_window(
                    read_config(&root, q35::devfn::MCH, 0x60),
                    read_config(&root, q35::devfn::MCH, 0x64),
                );
                let pm = q35::lpc::pm_base(
                    read_config(&root, q35::devfn::LPC, q35::lpc::PMBASE),
                    read_config(&root, q35::devfn::LPC, q35::lpc::ACPI_CNTL),
                );
                (ecam, pm, root.bar_windows())
            }
            None => (None, None, Vec::new()),
        };
        let (ecam_base, ecam_size) = ecam.unwrap_or(DEFAULT_ECAM);
        let mut mmio32 = Vec::new();
        for (start, end) in [
            (self.low_ram_end, ecam_base),
            (ecam_base + ecam_size, IOAPIC_START),
        ] {
            if start < end {
                mmio32.push((start, end - start));
            }
        }
        const GIB: u64 = 1 << 30;
        let high: Vec<&(u64, u64)> = bars.iter().filter(|(b, _)| *b >= RAM_HIGH_START).collect();
        let mmio64 = match (high.first(), high.iter().map(|(b, s)| b + s).max()) {
            (Some(&&(first, _)), Some(end)) => {
                let start = first / GIB * GIB;
                (start, end.div_ceil(GIB) * GIB - start)
            }
            _ => self.mmio64,
        };
        Q35Platform {
            vcpus: self.vcpus,
            pm_base: pm_base.unwrap_or(DEFAULT_PM_BASE),
            reset: (q35::reset::RESET_CONTROL_PORT, q35::reset::RESET_VALUE),
            s5_slp_typ: pm::S5_SLP_TYP,
            pci: PciWindows {
                ecam_base,
                ecam_size,
                mmio32,
                mmio64: Some(mmio64),
            },
        }
    }

    /// The blobs: rebuilt when the firmware reads the loader script (it does so first),
    /// cached for the two blobs it then loads.
    fn blobs(&mut self, fresh: bool) -> &FirmwareAcpi {
        if fresh || self.cached.is_none() {
            let platform = self.platform();
            match firmware_tables(&platform) {
                Ok(blobs) => self.cached = Some(blobs),
                Err(e) => log::warn!("cannot build the ACPI tables: {e}"),
            }
        }
        static EMPTY: FirmwareAcpi = FirmwareAcpi {
            tables: Vec::new(),
            rsdp: Vec::new(),
            loader: Vec::new(),
        };
        self.cached.as_ref().unwrap_or(&EMPTY)
    }
}

fn acpi_files(fw_cfg: &mut FwCfg, source: AcpiSource) -> Result<(), FirmwareError> {
    let source = Arc::new(Mutex::new(source));
    // Sizes are fixed now; the content comes when the firmware reads it.
    let first = {
        let mut s = source.lock().unwrap_or_else(|e| e.into_inner());
        s.blobs(true).clone()
    };
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let tables_len = len(first.tables.len() + ghost_boot::acpi::firmware::TABLES_SLACK);
    type Pick = fn(&FirmwareAcpi) -> Vec<u8>;
    let files: [(&str, u32, bool, Pick); 3] = [
        (
            ghost_boot::acpi::loader::TABLE_LOADER_FILE,
            len(first.loader.len()),
            true,
            |b| b.loader.clone(),
        ),
        (
            ghost_boot::acpi::loader::ACPI_TABLES_FILE,
            tables_len,
            false,
            |b| b.tables.clone(),
        ),
        (
            ghost_boot::acpi::loader::ACPI_RSDP_FILE,
            len(first.rsdp.len()),
            false,
            |b| b.rsdp.clone(),
        ),
    ];
    for (name, size, fresh, pick) in files {
        let source = source.clone();
        fw_cfg.add_file(
            name,
            FwCfgFile::generated(
                size,
                Box::new(move || {
                    let mut s = source.lock().unwrap_or_else(|e| e.into_inner());
                    pick(s.blobs(fresh))
                }),
            ),
        )?;
    }
    Ok(())
}

pub(super) fn board(images: &FirmwareImages, ctx: BoardContext<'_>) -> Result<Board, VmmError> {
    let config = ctx.config;
    let clone = |(f, path): &(File, PathBuf), key: &'static str| {
        f.try_clone().map_err(|e| file_error(key, path, &e))
    };
    let code = Pflash::from_file(
        clone(&images.code, "boot.firmware")?,
        OVMF_SECTOR_SIZE,
        false,
    )
    .map_err(|e| FirmwareError::Flash("boot.firmware", e))?;
    let vars = Pflash::from_file(
        clone(&images.vars, "boot.firmware_vars")?,
        OVMF_SECTOR_SIZE,
        true,
    )
    .map_err(|e| FirmwareError::Flash("boot.firmware_vars", e))?;
    let (vars_at, code_at) = flash_layout(code.size(), vars.size()).ok_or(FirmwareError::Layout)?;
    let code = plug_flash(&ctx, code, code_at)?;
    let vars = plug_flash(&ctx, vars, vars_at)?;

    // The chipset: the MCH replaces the generic host bridge, the LPC takes 00:1f.0.
    let regions = ghost_boot::firmware::q35_ram_regions(config.memory.size.bytes());
    let (low_ram_end, _) = ghost_boot::firmware::q35_ram_split(config.memory.size.bytes());
    let pm = Arc::new(Mutex::new(PmRegisters::new(
        Box::new(SciLine(ctx.vm_fd.clone())),
        Box::new(ctx.power.clone()),
    )));
    {
        let root_arc = ctx.pci.root().clone();
        let mut root = root_arc.lock().unwrap_or_else(|e| e.into_inner());
        let mch = DevFn::new(0, 0).ok_or(FirmwareError::Layout)?;
        let lpc = DevFn::new(q35::devfn::LPC.0, q35::devfn::LPC.1).ok_or(FirmwareError::Layout)?;
        root.remove(mch);
        root.add(
            mch,
            Arc::new(Mutex::new(Mch::new(
                low_ram_end,
                Box::new(EcamMapper {
                    mmio: Arc::downgrade(ctx.mmio),
                    root: Arc::downgrade(&root_arc),
                    at: None,
                    control: ctx.power.0.clone(),
                }),
            ))),
        )
        .map_err(|e| VmmError::Pci(e.into()))?;
        root.add(
            lpc,
            Arc::new(Mutex::new(Lpc::new(Box::new(PmMapper {
                pio: Arc::downgrade(ctx.pio),
                pm: pm.clone(),
                at: None,
            })))),
        )
        .map_err(|e| VmmError::Pci(e.into()))?;
    }
    ctx.pio.insert(
        Arc::new(Mutex::new(DebugConsole::new(config.vm.name.clone()))),
        u64::from(DEBUGCON_PORT),
        1,
    )?;

    // fw_cfg.
    let mut fw_cfg = FwCfg::new(ctx.memory.clone());
    let vcpus = u16::from(config.vm.vcpus).to_le_bytes();
    let uuid = smbios::vm_uuid(&config.vm.name);
    fw_cfg
        .add_item(fw_cfg::FW_CFG_NB_CPUS, vcpus.to_vec())
        .map_err(FirmwareError::from)?;
    fw_cfg
        .add_item(fw_cfg::FW_CFG_MAX_CPUS, vcpus.to_vec())
        .map_err(FirmwareError::from)?;
    fw_cfg
        .add_item(
            fw_cfg::FW_CFG_RAM_SIZE,
            config.memory.size.bytes().to_le_bytes().to_vec(),
        )
        .map_err(FirmwareError::from)?;
    fw_cfg
        .add_item(fw_cfg::FW_CFG_UUID, uuid.to_vec())
        .map_err(FirmwareError::from)?;
    fw_cfg
        .add_file("etc/e820", FwCfgFile::fixed(e820_blob(&regions)))
        .map_err(FirmwareError::from)?;
    let ram: Vec<(u64, u64)> = regions.iter().map(|&(a, l)| (a.0, l as u64)).collect();
    let blobs = smbios::fw_cfg_blobs(&SmbiosInfo {
        vm_name: &config.vm.name,
        uuid,
        serial: "",
        vcpus: config.vm.vcpus,
        cpu_mhz: 0,
        processor_id: 0,
        ram_regions: &ram,
        bios: None,
    })
    .map_err(FirmwareError::from)?;
    fw_cfg
        .add_file(smbios::FW_CFG_TABLES_FILE, FwCfgFile::fixed(blobs.tables))
        .map_err(FirmwareError::from)?;
    fw_cfg
        .add_file(smbios::FW_CFG_ANCHOR_FILE, FwCfgFile::fixed(blobs.anchor))
        .map_err(FirmwareError::from)?;
    let order: Vec<BootDevice> = ctx
        .disks
        .iter()
        .map(|d| BootDevice::VirtioDisk { slot: d.device() })
        .chain(ctx.passthrough.iter().map(|d| BootDevice::Pci {
            slot: d.device(),
            function: d.function(),
        }))
        .collect();
    fw_cfg
        .add_file("bootorder", FwCfgFile::fixed(bootorder_blob(&order)))
        .map_err(FirmwareError::from)?;
    // Big BARs (a GPU's) need a 64-bit aperture as large as the window ghost-vmm sized.
    if let Some(blob) = mmio64_size_blob(ctx.high_bars) {
        fw_cfg
            .add_file(MMIO64_SIZE_FILE, FwCfgFile::fixed(blob))
            .map_err(FirmwareError::from)?;
    }
    acpi_files(
        &mut fw_cfg,
        AcpiSource {
            root: Arc::downgrade(ctx.pci.root()),
            vcpus: config.vm.vcpus,
            low_ram_end,
            mmio64: ctx.mmio64,
            cached: None,
        },
    )?;
    ctx.pio.insert(
        Arc::new(Mutex::new(fw_cfg)),
        fw_cfg::FW_CFG_PORT,
        fw_cfg::FW_CFG_PORT_LEN,
    )?;

    Ok(Board {
        power_button: Arc::new(PmButton(pm)),
        entry: None,
        keep: vec![Box::new(code), Box::new(vars)],
    })
}
