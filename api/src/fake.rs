//! [`FakeVm`], a [`VmOps`] that keeps a state and records calls, for tests and fuzzing
//! (feature `fake`).

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::ops::{OpError, VmOps};
use crate::types::{Action, ConsoleInfo, ConsoleMode, DeviceInfo, ExitCounters, VmInfo, VmState};

/// A pretend VM: pause/resume/shutdown/stop move its state as the VMM's would, with the
/// same conflicts; every accepted action is recorded.
#[derive(Debug)]
pub struct FakeVm {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: VmState,
    calls: Vec<Action>,
    fail_next: Option<OpError>,
}

impl Default for FakeVm {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeVm {
    /// A running VM.
    pub fn new() -> FakeVm {
        FakeVm {
            inner: Mutex::new(Inner {
                state: VmState::Running,
                calls: Vec::new(),
                fail_next: None,
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> VmState {
        self.lock().state
    }

    /// The actions accepted so far, in order.
    pub fn calls(&self) -> Vec<Action> {
        self.lock().calls.clone()
    }

    /// Makes the next action fail with `error`.
    pub fn fail_next(&self, error: OpError) {
        self.lock().fail_next = Some(error);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn act(&self, action: Action) -> Result<(), OpError> {
        let mut inner = self.lock();
        if let Some(e) = inner.fail_next.take() {
            return Err(e);
        }
        let conflict = |m: &str| Err(OpError::Conflict(m.into()));
        let next = match (action, inner.state) {
            (_, VmState::Stopping) => return conflict("the VM is stopping"),
            (Action::Pause, VmState::Paused) => return conflict("the VM is already paused"),
            (Action::Pause, VmState::ShuttingDown) => return conflict("the VM is shutting down"),
            (Action::Resume, VmState::Running | VmState::ShuttingDown) => {
                return conflict("the VM is not paused")
            }
            (Action::Pause, _) => VmState::Paused,
            (Action::Resume, _) | (Action::Reboot, _) => VmState::Running,
            (Action::Shutdown, _) => VmState::ShuttingDown,
            (Action::Stop, _) => VmState::Stopping,
        };
        inner.state = next;
        inner.calls.push(action);
        Ok(())
    }
}

impl VmOps for FakeVm {
    fn info(&self) -> VmInfo {
        VmInfo {
            name: "fake".into(),
            pid: std::process::id(),
            state: self.state(),
            uptime_secs: 42,
            vcpus: 2,
            memory_bytes: 512 << 20,
            devices: vec![
                DeviceInfo::Disk {
                    guest: "vda".into(),
                    backend: "/var/lib/ghost/root.img".into(),
                    readonly: false,
                },
                DeviceInfo::Net {
                    tap: "tap0".into(),
                    mac: "52:54:00:12:34:56".into(),
                },
                DeviceInfo::Vfio {
                    host: "0000:01:00.0".into(),
                },
            ],
            exits: ExitCounters {
                pio_in: 10,
                pio_out: 20,
                mmio_read: 30,
                mmio_write: 40,
                intr: 5,
                unclaimed: 1,
            },
            console: ConsoleInfo {
                mode: ConsoleMode::Stdio,
                path: None,
            },
        }
    }

    fn shutdown(&self) -> Result<(), OpError> {
        self.act(Action::Shutdown)
    }

    fn stop(&self) -> Result<(), OpError> {
        self.act(Action::Stop)
    }

    fn reboot(&self) -> Result<(), OpError> {
        self.act(Action::Reboot)
    }

    fn pause(&self) -> Result<(), OpError> {
        self.act(Action::Pause)
    }

    fn resume(&self) -> Result<(), OpError> {
        self.act(Action::Resume)
    }
}
