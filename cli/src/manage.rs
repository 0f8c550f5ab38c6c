//! `ghost-vmm list | status | shutdown | stop | reboot | pause | resume`: the control API's
//! client side. A VM is named by its `vm.name` (its socket is `/run/ghost-vmm/NAME.sock`, or
//! `$XDG_RUNTIME_DIR/ghost-vmm/NAME.sock` for a user other than root) or
//! by the path of its control socket (anything with a `/`, or ending in `.sock`).
//!
//! Exit status: 0 done, 2 no such VM (or bad usage), 1 the VM refused or failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use ghost_api::{list_vms, Action, ApiClient, ClientError, DeviceInfo, VmInfo, VmState};

use crate::{EXIT_BAD_INPUT, EXIT_VM_FAILED};

/// A VM, by name or control socket path.
#[derive(Debug, Args)]
pub struct VmArg {
    /// The VM's name (`vm.name`), or the path of its control socket
    vm: String,
}

/// `ghost-vmm list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Look for control sockets in DIR (default: /run/ghost-vmm; for a user other than root,
    /// $XDG_RUNTIME_DIR/ghost-vmm)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print JSON (one array of `GET /vm` answers)
    #[arg(long)]
    json: bool,
}

/// `ghost-vmm status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    vm: VmArg,
    /// Print the API's JSON
    #[arg(long)]
    json: bool,
}

/// `ghost-vmm shutdown`.
#[derive(Debug, Args)]
pub struct ShutdownArgs {
    #[command(flatten)]
    vm: VmArg,
    /// Wait until the VM has exited
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after SECONDS (exit 1; the VM keeps its own stop_timeout)
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    timeout: Option<u64>,
}

impl VmArg {
    fn socket(&self) -> PathBuf {
        if self.vm.contains('/') || self.vm.ends_with(".sock") {
            PathBuf::from(&self.vm)
        } else {
            ghost_api::default_socket_path(&self.vm)
        }
    }

    fn connect(&self) -> Result<ApiClient, ExitCode> {
        let socket = self.socket();
        ApiClient::connect(&socket).map_err(|e| self.fail(&socket, &e))
    }

    /// The one-line error for `e`, and its exit status.
    fn fail(&self, socket: &Path, e: &ClientError) -> ExitCode {
        match e {
            ClientError::NoSuchVm { .. } => {
                eprintln!(
                    "ghost-vmm: error: no VM named {} is running (no control socket at {})",
                    self.vm,
                    socket.display()
                );
                ExitCode::from(EXIT_BAD_INPUT)
            }
            ClientError::Api { message, .. } => {
                eprintln!("ghost-vmm: error: {}: {message}", self.vm);
                ExitCode::from(EXIT_VM_FAILED)
            }
            other => {
                eprintln!("ghost-vmm: error: {}: {other}", self.vm);
                ExitCode::from(EXIT_VM_FAILED)
            }
        }
    }
}

/// `ghost-vmm list`: one line per VM on this host.
pub fn list(args: &ListArgs) -> ExitCode {
    let dir = args.dir.clone().unwrap_or_else(ghost_api::socket_dir);
    let vms = match list_vms(&dir) {
        Ok(vms) => vms,
        Err(e) => {
            eprintln!("ghost-vmm: error: {}: {e}", dir.display());
            return ExitCode::from(EXIT_VM_FAILED);
        }
    };
    if args.json {
        let infos: Vec<&VmInfo> = vms.iter().filter_map(|(_, i)| i.as_ref().ok()).collect();
        println!("{}", serde_json_string(&infos));
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<20} {:>8} {:<14} {:>10} {:>5} {:>8}",
        "NAME", "PID", "STATE", "UPTIME", "VCPUS", "RAM"
    );
    for (name, info) in &vms {
        match info {
            Ok(i) => println!(
                "{:<20} {:>8} {:<14} {:>10} {:>5} {:>8}",
                i.name,
                i.pid,
                state_name(i.state),
                uptime(i.uptime_secs),
                i.vcpus,
                mib(i.memory_bytes)
            ),
            Err(e) => println!("{name:<20} {:>8} ({e})", "?"),
        }
    }
    ExitCode::SUCCESS
}

/// `ghost-vmm status NAME`.
pub fn status(args: &StatusArgs) -> ExitCode {
    let socket = args.vm.socket();
    let info = match args.vm.connect().map(|mut c| c.get_info()) {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => return args.vm.fail(&socket, &e),
        Err(code) => return code,
    };
    if args.json {
        println!("{}", serde_json_string(&info));
        return ExitCode::SUCCESS;
    }
    println!("name:    {}", info.name);
    println!("pid:     {}", info.pid);
    println!("state:   {}", state_name(info.state));
    println!("uptime:  {}", uptime(info.uptime_secs));
    println!("vcpus:   {}", info.vcpus);
    println!("memory:  {}", mib(info.memory_bytes));
    for device in &info.devices {
        match device {
            DeviceInfo::Disk {
                guest,
                backend,
                readonly,
            } => println!(
                "disk:    {guest} <- {backend}{}",
                if *readonly { " (read-only)" } else { "" }
            ),
            DeviceInfo::Net { tap, mac } => println!("net:     {mac} <- TAP {tap}"),
            DeviceInfo::Vfio { host } => println!("vfio:    {host}"),
        }
    }
    let console = match &info.console.path {
        Some(path) => format!("{:?} ({path})", info.console.mode),
        None => format!("{:?}", info.console.mode),
    };
    println!("console: {}", console.to_lowercase());
    let e = &info.exits;
    println!(
        "exits:   pio in {}, pio out {}, mmio read {}, mmio write {}, interrupted {}, unclaimed {}",
        e.pio_in, e.pio_out, e.mmio_read, e.mmio_write, e.intr, e.unclaimed
    );
    ExitCode::SUCCESS
}

/// `ghost-vmm stop|reboot|pause|resume NAME`.
pub fn act(vm: &VmArg, action: Action) -> ExitCode {
    let socket = vm.socket();
    match vm.connect().map(|mut c| c.put(action)) {
        Ok(Ok(())) => {
            let done = match action {
                Action::Shutdown => "power button pressed",
                Action::Stop => "stopping",
                Action::Reboot => "rebooting",
                Action::Pause => "paused",
                Action::Resume => "resumed",
            };
            eprintln!("ghost-vmm: {}: {done}", vm.vm);
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => vm.fail(&socket, &e),
        Err(code) => code,
    }
}

/// How often `shutdown --wait` looks whether the VM is gone.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// `ghost-vmm shutdown NAME [--wait [--timeout S]]`.
pub fn shutdown(args: &ShutdownArgs) -> ExitCode {
    let code = act(&args.vm, Action::Shutdown);
    if code != ExitCode::SUCCESS || !args.wait {
        return code;
    }
    let socket = args.vm.socket();
    let started = Instant::now();
    let limit = args.timeout.map(Duration::from_secs);
    loop {
        match ApiClient::connect(&socket) {
            Err(e) if e.is_no_such_vm() => {
                eprintln!(
                    "ghost-vmm: {}: exited after {:.1} s",
                    args.vm.vm,
                    started.elapsed().as_secs_f64()
                );
                return ExitCode::SUCCESS;
            }
            _ if limit.is_some_and(|l| started.elapsed() >= l) => {
                eprintln!(
                    "ghost-vmm: error: {}: still running after {} s (`ghost-vmm stop {}` stops it hard)",
                    args.vm.vm,
                    limit.map_or(0, |l| l.as_secs()),
                    args.vm.vm
                );
                return ExitCode::from(EXIT_VM_FAILED);
            }
            _ => std::thread::sleep(WAIT_POLL),
        }
    }
}

fn state_name(state: VmState) -> &'static str {
    match state {
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::ShuttingDown => "shutting-down",
        VmState::Stopping => "stopping",
    }
}

/// `3d 04:05:06`, `04:05:06`.
fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

fn mib(bytes: u64) -> String {
    format!("{}M", bytes >> 20)
}

fn serde_json_string<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_pick_the_socket() {
        let vm = |s: &str| VmArg { vm: s.into() };
        assert_eq!(
            vm("forge").socket(),
            ghost_api::socket_dir().join("forge.sock")
        );
        assert_eq!(vm("./ctl.sock").socket(), Path::new("./ctl.sock"));
        assert_eq!(vm("/tmp/x/ctl").socket(), Path::new("/tmp/x/ctl"));
        assert_eq!(vm("ctl.sock").socket(), Path::new("ctl.sock"));
    }

    #[test]
    fn uptimes_read_as_clocks() {
        assert_eq!(uptime(0), "00:00:00");
        assert_eq!(uptime(3661), "01:01:01");
        assert_eq!(uptime(90061), "1d 01:01:01");
    }
}
