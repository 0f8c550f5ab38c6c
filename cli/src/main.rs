//! `ghost-vmm`: run one VM from its VM file, check a VM file, or report on the host.
//!
//! Exit status: 0 success (the guest powered off), 1 the VM failed while running,
//! 2 bad input (VM file, paths, host resources it asks for) or bad usage, 3 the VM was
//! stopped hard (the guest did not power off in time, a second stop signal, an API stop).
//! A sandbox violation (a thread made a system call its seccomp filter does not allow)
//! kills the process with SIGSYS after one line naming the thread and the call: status 159
//! in a shell, `status=31/SYS` under systemd.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ghost_api::Action;
use ghost_vmm::config::VmConfig;
use ghost_vmm::{RunOptions, VmExit};

mod console;
mod logger;
mod manage;
mod vfio;

/// Exit status for bad input or usage.
pub(crate) const EXIT_BAD_INPUT: u8 = 2;
/// Exit status for a VM that failed while running.
pub(crate) const EXIT_VM_FAILED: u8 = 1;
/// Exit status for a VM that was stopped hard: it did not power off within `stop_timeout` of
/// its power button, a second stop signal came, or the control API asked for a hard stop.
/// Its disks were flushed and its host resources released.
pub(crate) const EXIT_STOPPED_HARD: u8 = 3;

/// ghost-vmm: one VM per process, one TOML file per VM.
#[derive(Debug, Parser)]
#[command(name = "ghost-vmm", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the VM until it powers off (SIGTERM presses its power button)
    Run {
        /// On each stop, log its exits by reason and the busiest ports and MMIO pages
        #[arg(long)]
        exit_stats: bool,
        /// Run without the sandbox (seccomp filters, no_new_privs), whatever the file says:
        /// for debugging only
        #[arg(long)]
        no_sandbox: bool,
        /// Run as this user (name or number) once root's part of setup is done, whatever
        /// the file's vm.user says
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// The VM file
        file: PathBuf,
    },
    /// Validate a VM file (and the host resources it needs) without running it
    Check {
        /// The VM file
        file: PathBuf,
    },
    /// Report on this host: KVM, guest speed, hugepages, IOMMU groups
    Doctor {
        /// Exit 0 only if KVM runs stock guests natively
        #[arg(long)]
        native: bool,
    },
    /// Move host PCI functions to vfio-pci and back
    #[command(subcommand)]
    Vfio(VfioCommand),
    /// List the VMs running on this host
    List(manage::ListArgs),
    /// Show one VM: state, uptime, vCPUs, memory, devices, exits
    Status(manage::StatusArgs),
    /// Press the VM's power button (the guest powers off; hard stop after its stop_timeout)
    Shutdown(manage::ShutdownArgs),
    /// Stop the VM hard now (disks flushed, devices released)
    Stop(manage::VmArg),
    /// Reset the guest and boot it again
    Reboot(manage::VmArg),
    /// Park the VM's vCPUs; the guest's clock stands still
    Pause(manage::VmArg),
    /// Let a paused VM run again
    Resume(manage::VmArg),
    /// Attach this terminal to a VM's console ([serial] mode = "socket"); Ctrl-] detaches
    Console(console::ConsoleArgs),
    /// Print the version
    Version,
    /// The keeper of a run that dropped root (started by `run` itself)
    #[command(name = "__keeper", hide = true)]
    Keeper,
}

#[derive(Debug, Subcommand)]
enum VfioCommand {
    /// Move host PCI function ADDR (0000:01:00.0) to vfio-pci, remembering its driver
    Bind {
        /// The PCI address
        address: String,
    },
    /// Give ADDR back to the driver it had (or the kernel's default)
    Unbind {
        /// The PCI address
        address: String,
    },
}

fn main() -> ExitCode {
    logger::init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_INPUT } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Run {
            exit_stats,
            no_sandbox,
            user,
            file,
        } => run(
            &file,
            &RunOptions {
                exit_stats,
                no_sandbox,
                user,
            },
        ),
        Command::Keeper => ghost_vmm::keeper_main(),
        Command::Check { file } => check(&file),
        Command::Doctor { native } => doctor(native),
        Command::Vfio(VfioCommand::Bind { address }) => vfio::bind(&address),
        Command::Vfio(VfioCommand::Unbind { address }) => vfio::unbind(&address),
        Command::List(args) => manage::list(&args),
        Command::Status(args) => manage::status(&args),
        Command::Shutdown(args) => manage::shutdown(&args),
        Command::Stop(vm) => manage::act(&vm, Action::Stop),
        Command::Reboot(vm) => manage::act(&vm, Action::Reboot),
        Command::Pause(vm) => manage::act(&vm, Action::Pause),
        Command::Resume(vm) => manage::act(&vm, Action::Resume),
        Command::Console(args) => console::main(&args),
        Command::Version => {
            println!("ghost-vmm {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
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
        Ok(VmExit::Unsupported(msg)) => {
            eprintln!("ghost-vmm: error: {msg}");
            ExitCode::from(EXIT_BAD_INPUT)
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
    println!("{}", ghost_vmm::describe_sandbox(&config));
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
