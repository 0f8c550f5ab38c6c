//! The control API's view of a running VM: [`ghost_api::VmOps`] on top of the lifecycle's
//! [`RunControl`]. The HTTP side lives in `ghost-api`; this module only translates.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ghost_api::{
    ConsoleInfo, ConsoleMode, DeviceInfo, ExitCounters as ApiExitCounters, OpError, VmInfo, VmOps,
    VmState,
};

use crate::config::{SerialMode, VmConfig};
use crate::lifecycle::{Refusal, Request, RunControl, RunState};

/// The VM as the control API sees it: what the file says (fixed for the run) and what the
/// lifecycle reports (state, uptime, exits).
#[derive(Debug)]
pub(crate) struct ControlApi {
    run: Arc<RunControl>,
    /// The fixed part of `GET /vm`'s answer.
    template: VmInfo,
}

impl ControlApi {
    pub(crate) fn new(config: &VmConfig, run: Arc<RunControl>) -> Self {
        Self {
            run,
            template: fixed_info(config),
        }
    }

    fn request(&self, request: Request) -> Result<(), OpError> {
        self.run.request(request).map_err(|refusal| match refusal {
            Refusal::Conflict(why) => OpError::Conflict(why),
            Refusal::Failed(why) => OpError::Internal(why),
        })
    }
}

/// What `GET /vm` says that does not change while the VM runs.
fn fixed_info(config: &VmConfig) -> VmInfo {
    let mut devices = Vec::new();
    for (index, disk) in config.disk.iter().enumerate() {
        devices.push(DeviceInfo::Disk {
            guest: guest_disk_name(index),
            backend: disk.path.to_string_lossy().into_owned(),
            readonly: disk.readonly,
        });
    }
    for (index, net) in config.net.iter().enumerate() {
        devices.push(DeviceInfo::Net {
            tap: net.tap.clone(),
            mac: net.effective_mac(&config.vm.name, index).to_string(),
        });
    }
    for vfio in &config.vfio {
        devices.push(DeviceInfo::Vfio {
            host: vfio.host.to_string(),
        });
    }
    let (mode, path) = match config.serial.mode {
        SerialMode::Stdio => (ConsoleMode::Stdio, None),
        SerialMode::File => (ConsoleMode::File, config.serial.path.clone()),
        SerialMode::Socket => (ConsoleMode::Socket, Some(config.vm.console_socket_path())),
        SerialMode::Off => (ConsoleMode::Off, None),
    };
    VmInfo {
        name: config.vm.name.clone(),
        pid: std::process::id(),
        state: VmState::Running,
        uptime_secs: 0,
        vcpus: u32::from(config.vm.vcpus),
        memory_bytes: config.memory.size.bytes(),
        devices,
        exits: ApiExitCounters::default(),
        console: ConsoleInfo {
            mode,
            path: path.map(|p| p.to_string_lossy().into_owned()),
        },
    }
}

/// `vda`, `vdb`, ..., `vdz`, `vdaa`, ... as Linux names virtio disks.
fn guest_disk_name(index: usize) -> String {
    let mut suffix = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        suffix.push(b'a' + u8::try_from(n % 26).unwrap_or(0));
        n /= 26;
    }
    suffix.reverse();
    format!("vd{}", String::from_utf8_lossy(&suffix))
}

impl VmOps for ControlApi {
    fn info(&self) -> VmInfo {
        let mut info = self.template.clone();
        info.state = match self.run.state() {
            RunState::Running => VmState::Running,
            RunState::Paused => VmState::Paused,
            RunState::ShuttingDown => VmState::ShuttingDown,
            RunState::Stopping => VmState::Stopping,
        };
        info.uptime_secs = self.run.uptime().as_secs();
        if let Some(c) = self.run.counters() {
            info.exits = ApiExitCounters {
                pio_in: c.pio_in.load(Ordering::Relaxed),
                pio_out: c.pio_out.load(Ordering::Relaxed),
                mmio_read: c.mmio_read.load(Ordering::Relaxed),
                mmio_write: c.mmio_write.load(Ordering::Relaxed),
                intr: c.intr.load(Ordering::Relaxed),
                unclaimed: c.unclaimed.load(Ordering::Relaxed),
            };
        }
        info
    }

    fn shutdown(&self) -> Result<(), OpError> {
        self.request(Request::Shutdown)
    }

    fn stop(&self) -> Result<(), OpError> {
        self.request(Request::Stop)
    }

    fn reboot(&self) -> Result<(), OpError> {
        self.request(Request::Reboot)
    }

    fn pause(&self) -> Result<(), OpError> {
        self.request(Request::Pause)
    }

    fn resume(&self) -> Result<(), OpError> {
        self.request(Request::Resume)
    }
}

/// The control socket of a run: bound at its start, served (the API thread started) once
/// the VMM thread is confined, so that the API thread starts confined too.
pub(crate) struct ControlSocket {
    state: std::cell::RefCell<ControlState>,
}

enum ControlState {
    Bound(ghost_api::ApiServer, Arc<dyn ghost_api::VmOps>),
    Serving(ghost_api::ApiThread),
    Gone,
}

impl ControlSocket {
    pub(crate) fn new(server: ghost_api::ApiServer, ops: Arc<dyn ghost_api::VmOps>) -> Self {
        Self {
            state: std::cell::RefCell::new(ControlState::Bound(server, ops)),
        }
    }

    /// Starts the API thread (once; later boots find it running).
    pub(crate) fn serve(&self) -> Result<(), crate::VmmError> {
        let mut state = self.state.borrow_mut();
        if let ControlState::Bound(..) = &*state {
            let ControlState::Bound(server, ops) =
                std::mem::replace(&mut *state, ControlState::Gone)
            else {
                return Ok(());
            };
            *state =
                ControlState::Serving(server.serve(ops).map_err(crate::VmmError::ControlSocket)?);
        }
        Ok(())
    }

    /// Stops the API thread and removes the socket (a socket never served is removed too).
    pub(crate) fn shutdown(&self) {
        match std::mem::replace(&mut *self.state.borrow_mut(), ControlState::Gone) {
            ControlState::Serving(thread) => thread.shutdown(),
            ControlState::Bound(server, _) => drop(server),
            ControlState::Gone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::guest_disk_name;

    #[test]
    fn disks_are_named_as_linux_names_them() {
        let names: Vec<String> = [0, 1, 25, 26, 27, 51, 52, 701, 702]
            .into_iter()
            .map(guest_disk_name)
            .collect();
        assert_eq!(
            names,
            ["vda", "vdb", "vdz", "vdaa", "vdab", "vdaz", "vdba", "vdzz", "vdaaa"]
        );
    }
}
