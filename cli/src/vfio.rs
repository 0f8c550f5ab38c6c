//! `ghost-vmm vfio bind|unbind ADDR`: move a host PCI function to vfio-pci and back by hand,
//! remembering the driver it had in a state file so `unbind` can give it back.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ghost_vfio::bind::{
    bind_to_vfio, driver_of, probe_default_driver, restore_driver, BindError, SYSFS_TIMEOUT,
};
use ghost_vmm::config::PciAddress;

use crate::{EXIT_BAD_INPUT, EXIT_VM_FAILED};

/// Overrides where the original drivers are remembered (default `/run/ghost-vmm/vfio`).
const STATE_DIR_ENV: &str = "GHOST_VMM_STATE_DIR";
const SYS: &str = "/sys";

fn state_file(address: &str) -> PathBuf {
    let dir = std::env::var_os(STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/ghost-vmm"));
    dir.join("vfio").join(format!("{address}.driver"))
}

fn fail(e: &BindError) -> ExitCode {
    eprintln!("ghost-vmm: error: {e}");
    match e {
        BindError::NoDevice(_) | BindError::NoVfioPci => ExitCode::from(EXIT_BAD_INPUT),
        _ => ExitCode::from(EXIT_VM_FAILED),
    }
}

fn parse(address: &str) -> Result<String, ExitCode> {
    address
        .parse::<PciAddress>()
        .map(|a| a.to_string())
        .map_err(|e| {
            eprintln!("ghost-vmm: error: {address:?}: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        })
}

/// `vfio bind ADDR`.
pub fn bind(address: &str) -> ExitCode {
    let address = match parse(address) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let binding = match bind_to_vfio(Path::new(SYS), &address, SYSFS_TIMEOUT) {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    if !binding.changed() {
        println!("{address}: already on vfio-pci");
        return ExitCode::SUCCESS;
    }
    let original = binding.keep();
    let file = state_file(&address);
    let saved = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&file, original.as_deref().unwrap_or("")));
    if let Err(e) = saved {
        // Still bound; `unbind` will fall back to the kernel's default driver.
        eprintln!(
            "ghost-vmm: warning: cannot remember {address}'s driver in {}: {e}",
            file.display()
        );
    }
    println!(
        "{address}: {} -> vfio-pci",
        original.as_deref().unwrap_or("no driver")
    );
    ExitCode::SUCCESS
}

/// `vfio unbind ADDR`.
pub fn unbind(address: &str) -> ExitCode {
    let address = match parse(address) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let file = state_file(&address);
    let result = match std::fs::read_to_string(&file) {
        Ok(original) => {
            let original = Some(original.trim()).filter(|d| !d.is_empty());
            restore_driver(Path::new(SYS), &address, original, SYSFS_TIMEOUT)
                .map(|()| original.map(str::to_owned))
        }
        // Not bound by ghost-vmm: let the kernel choose, as at boot.
        Err(_) => probe_default_driver(Path::new(SYS), &address, SYSFS_TIMEOUT),
    };
    match result {
        Ok(driver) => {
            let _ = std::fs::remove_file(&file);
            let now = driver.or_else(|| driver_of(Path::new(SYS), &address));
            println!(
                "{address}: vfio-pci -> {}",
                now.as_deref().unwrap_or("no driver")
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
