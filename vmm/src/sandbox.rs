//! When and how a `ghost-vmm run` confines itself ([`ghost_sandbox`] has the what).
//!
//! - At the start of the run, before any thread but the main one exists: the filters are
//!   compiled, the `SIGSYS` handler and the kill switch installed, `no_new_privs` set and the
//!   process made undumpable. Nothing is narrowed yet: setup opens what it needs.
//! - The API thread confines itself as it starts (its listener is already bound).
//! - Once the first boot's VM is built: the VMM thread restricts its file access with
//!   landlock to the VM's own files ([`file_rules`]) and installs its seccomp filter, before
//!   it starts the vCPUs. Every thread it starts from then on inherits both.
//! - Each vCPU thread confines itself before the guest's first instruction; each virtio
//!   worker before it touches its queues. The API thread's filter allows no `open` at all,
//!   so landlock (which it started too early to inherit) would add nothing there.

use std::path::{Path, PathBuf};

use ghost_sandbox::files::{self, Enforced, FileRules};
use ghost_sandbox::privileges::{self, Identity};
use ghost_sandbox::{process, SeccompFilters, ThreadKind};

use crate::config::{SerialMode, VmConfig};
use crate::keeper::{Keeper, KeeperPlan};
use crate::passthrough::HostBindings;
use crate::platform::Platform;
use crate::VmmError;

/// What `ghost-vmm check` says of the sandbox on this host: one line.
pub fn describe(config: &VmConfig) -> String {
    if !config.vm.sandbox {
        return "sandbox: off (vm.sandbox = false)".into();
    }
    let support = process::support();
    let landlock = match support.landlock_abi {
        Some(abi) => format!("landlock ABI {abi}"),
        None => "no landlock on this kernel (the VM's files are not fenced off)".into(),
    };
    let seccomp = if support.seccomp {
        "seccomp filters per thread"
    } else {
        "no seccomp on this kernel"
    };
    format!("sandbox: {seccomp}, {landlock}")
}

/// Fails when the file asks for the sandbox and the kernel cannot give its seccomp part.
pub(crate) fn check(config: &VmConfig) -> Result<(), VmmError> {
    if config.vm.sandbox && !process::support().seccomp {
        return Err(VmmError::Sandbox(ghost_sandbox::SandboxError::Unsupported));
    }
    Ok(())
}

/// Turns confinement on for this run, or says loudly that it is off.
pub(crate) fn enable(config: &VmConfig, off_by_flag: bool) -> Result<(), VmmError> {
    if !config.vm.sandbox || off_by_flag {
        let why = if off_by_flag {
            "--no-sandbox"
        } else {
            "vm.sandbox = false"
        };
        log::warn!(
            "{}: the sandbox is off ({why}): a guest that breaks a device model gets everything this process has",
            config.vm.name
        );
        return Ok(());
    }
    if ghost_sandbox::enabled() {
        return Ok(());
    }
    check(config)?;
    let filters = SeccompFilters::compile().map_err(VmmError::Sandbox)?;
    ghost_sandbox::enable(filters).map_err(VmmError::Sandbox)?;
    process::set_undumpable().map_err(VmmError::Sandbox)?;
    Ok(())
}

/// Confines the VMM thread once its first VM is built: landlock to the VM's files, then
/// its seccomp filter (landlock's own calls are not in it). Later boots find it done.
pub(crate) fn confine_vmm_thread(config: &VmConfig, platform: &Platform) -> Result<(), VmmError> {
    if !ghost_sandbox::enabled() || ghost_sandbox::confined_as().is_some() {
        return Ok(());
    }
    let rules = file_rules(config, platform);
    match files::restrict(&rules).map_err(VmmError::Sandbox)? {
        Enforced::Fully => {}
        Enforced::Partially => log::info!(
            "{}: landlock: this kernel governs only part of the file access rights",
            config.vm.name
        ),
        Enforced::Not => log::warn!(
            "{}: landlock is not available on this kernel: the VM's files are not fenced off (seccomp still applies)",
            config.vm.name
        ),
    }
    ghost_sandbox::confine_thread(ThreadKind::Vmm).map_err(VmmError::Sandbox)
}

/// The files a VM may still open after setup, and what it may do with them.
fn file_rules(config: &VmConfig, platform: &Platform) -> FileRules {
    let mut rules = FileRules::default();
    // Each boot loads the kernel and initramfs again.
    for path in [&config.boot.kernel, &config.boot.initramfs]
        .into_iter()
        .flatten()
    {
        rules.read(path);
    }
    platform.file_rules(&mut rules);
    // Opened once for the run; listed so that nothing else of the host is reachable
    // through a reopen.
    for disk in &config.disk {
        rules.read_write(&disk.path);
    }
    if config.serial.mode == SerialMode::File {
        if let Some(path) = &config.serial.path {
            rules.read_write(path);
        }
    }
    // The sockets go at exit.
    for socket in [
        config.vm.control_socket_path(),
        config.vm.console_socket_path(),
    ] {
        if let Some(dir) = socket.parent() {
            rules.remove_in(dir);
        }
    }
    if config.memory.hugepages {
        // Each boot checks the pool again.
        rules.read("/sys/kernel/mm/hugepages");
    }
    if !config.vfio.is_empty() {
        // Each boot opens the container and the groups again, and reads the devices' sysfs;
        // the run's end gives bound devices back to their drivers.
        rules
            .read_write("/dev/vfio")
            .read("/sys/kernel/iommu_groups");
        for vfio in &config.vfio {
            rules.read_write(format!("/sys/bus/pci/devices/{}", vfio.host));
            if let Some(rom) = &vfio.rom {
                rules.read(rom);
            }
        }
        if config.vfio.iter().any(|v| v.bind) {
            rules
                .read_write("/sys/bus/pci/drivers")
                .read_write("/sys/bus/pci/drivers_probe");
        }
    }
    rules
}

/// Who the run becomes once root's part of setup is done (`--user` or `vm.user`), checked
/// before anything on the host changes. `None`: it stays who it is.
pub(crate) fn identity(
    config: &VmConfig,
    user: Option<&str>,
) -> Result<Option<Identity>, VmmError> {
    let Some(user) = user.or(config.vm.user.as_deref()) else {
        return Ok(None);
    };
    let id = Identity::resolve(user, config.vm.group.as_deref()).map_err(VmmError::User)?;
    if privileges::is_root() {
        return Ok(Some(id));
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if (uid, gid) == (id.uid, id.gid) {
        // Started as that user already (the unprivileged way): nothing to drop.
        return Ok(None);
    }
    Err(VmmError::User(ghost_sandbox::SandboxError::User {
        user: user.to_owned(),
        why: "only a ghost-vmm started as root can run as another user".into(),
    }))
}

/// Ends root's part of setup: the VFIO group nodes lent to the user, locked memory allowed,
/// the keeper started with what it must give back, then every thread switched to `id`.
/// From here the run holds no capability.
pub(crate) fn drop_privileges(
    config: &VmConfig,
    id: Option<&Identity>,
    bindings: &mut HostBindings,
    platform: &Platform,
) -> Result<Option<Keeper>, VmmError> {
    let Some(id) = id else {
        return Ok(None);
    };
    let err = |what: &'static str| {
        move |source| VmmError::Sandbox(ghost_sandbox::SandboxError::Drop { what, source })
    };
    let mut plan = KeeperPlan::default();
    bindings.hand_to(&mut plan);
    // Each boot opens the groups again, as the user.
    for node in vfio_group_nodes(config) {
        plan.lend(&node, id.uid, id.gid)
            .map_err(err("lending a VFIO group node"))?;
    }
    plan.socket(&config.vm.control_socket_path());
    if config.serial.mode == SerialMode::Socket {
        plan.socket(&config.vm.console_socket_path());
    }
    platform.keeper_vars(&mut plan);
    if !config.vfio.is_empty() {
        // VFIO pins all of guest RAM again at each boot, as the user.
        privileges::raise_memlock(libc::RLIM_INFINITY).map_err(VmmError::Sandbox)?;
    }
    let keeper = Keeper::start(&plan).map_err(err("starting the keeper"))?;
    privileges::drop_to(id).map_err(VmmError::Sandbox)?;
    if ghost_sandbox::enabled() {
        // A change of ids resets it.
        process::set_undumpable().map_err(VmmError::Sandbox)?;
    }
    log::info!(
        "{}: runs as {} ({}:{}) from here",
        config.vm.name,
        id.name,
        id.uid,
        id.gid
    );
    Ok(Some(keeper))
}

/// `/dev/vfio/GROUP` of every passed-through function, once each.
fn vfio_group_nodes(config: &VmConfig) -> Vec<PathBuf> {
    let host = crate::host::Host::system();
    let mut nodes: Vec<PathBuf> = config
        .vfio
        .iter()
        .filter_map(|v| {
            let group = host.pci_device(v.host).ok()??.iommu_group?;
            Some(Path::new("/dev/vfio").join(group.to_string()))
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}
