//! `ghost-vmm`: run one VM from its VM file, check a VM file, or report on the host.
//!
//! Exit status: 0 success (the guest powered off), 1 the VM failed while running,
//! 2 bad input (VM file, paths, host resources it asks for) or bad usage, 3 the VM was
//! stopped hard (the guest did not power off in time, a second stop signal, an API stop).

use std::path::Path;
use std::process::ExitCode;

use ghost_vmm::config::VmConfig;
use ghost_vmm::{RunOptions, VmExit};

mod console;
mod logger;
mod vfio;

const USAGE: &str = "usage: ghost-vmm <command>
  run [--exit-stats] FILE.toml
                    run the VM until it powers off; --exit-stats: on each stop, log its
                    exits by reason and the busiest ports and MMIO pages
  check FILE.toml   validate a VM file (and the host resources it needs) without running it
  console NAME | --socket PATH
                    attach to a VM's console ([serial] mode = \"socket\"); Ctrl-] detaches
  doctor [--native] report on this host; --native: exit 0 only if KVM runs stock guests natively
  vfio bind ADDR    move host PCI function ADDR (0000:01:00.0) to vfio-pci, remembering its driver
  vfio unbind ADDR  give ADDR back to the driver it had (or the kernel's default)
  version           print the version";

/// Exit status for bad input or usage.
pub(crate) const EXIT_BAD_INPUT: u8 = 2;
/// Exit status for a VM that failed while running.
pub(crate) const EXIT_VM_FAILED: u8 = 1;
/// Exit status for a VM that was stopped hard: it did not power off within `stop_timeout` of
/// its power button, a second stop signal came, or the control API asked for a hard stop.
/// Its disks were flushed and its host resources released.
pub(crate) const EXIT_STOPPED_HARD: u8 = 3;

fn main() -> ExitCode {
    logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["run", file] => run(Path::new(file), &RunOptions::default()),
        ["run", "--exit-stats", file] => run(Path::new(file), &RunOptions { exit_stats: true }),
        ["check", file] => check(Path::new(file)),
        ["console", rest @ ..] => console::main(rest),
        ["doctor"] => doctor(false),
        ["doctor", "--native"] => doctor(true),
        ["vfio", "bind", address] => vfio::bind(address),
        ["vfio", "unbind", address] => vfio::unbind(address),
        ["version" | "--version" | "-V"] => {
            println!("ghost-vmm {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// Prints an error and its sources on one line.
fn report(err: &dyn std::error::Error) {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    eprintln!("ghost-vmm: error: {}", line.replace('\n', " "));
}

fn load(file: &Path) -> Result<VmConfig, ExitCode> {
    VmConfig::from_file(file).map_err(|e| {
        report(&e);
        ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_BAD_INPUT))
    })
}

fn run(file: &Path, options: &RunOptions) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match ghost_vmm::run_with(&config, options) {
        Ok(VmExit::PowerOff) => ExitCode::SUCCESS,
        Ok(VmExit::Reset) => {
            log::info!("guest rebooted; exiting as on_reboot = \"exit\" asks");
            ExitCode::SUCCESS
        }
        Ok(VmExit::Stopped(why)) => {
            eprintln!("ghost-vmm: {}: stopped hard: {why}", config.vm.name);
            ExitCode::from(EXIT_STOPPED_HARD)
        }
        Ok(VmExit::Fatal(msg)) => {
            eprintln!("ghost-vmm: error: {msg}");
            ExitCode::from(EXIT_VM_FAILED)
        }
        Err(e) => {
            report(&e);
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_VM_FAILED))
        }
    }
}

fn check(file: &Path) -> ExitCode {
    let config = match load(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = ghost_vmm::preflight(&config) {
        report(&e);
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_BAD_INPUT));
    }
    println!(
        "{}: ok: VM \"{}\", {} vCPU(s), {} MiB RAM",
        file.display(),
        config.vm.name,
        config.vm.vcpus,
        config.memory.size.bytes() >> 20
    );
    ExitCode::SUCCESS
}

fn doctor(native_only: bool) -> ExitCode {
    let report = ghost_vmm::host::doctor_report();
    if native_only {
        return if report.can_run_stock_guests() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_VM_FAILED)
        };
    }
    print!("{report}");
    ExitCode::SUCCESS
}
