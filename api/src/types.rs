//! The JSON shapes of the API: what `GET /vm` returns and the actions `PUT /vm/<action>` takes.
//!
//! The VMM fills [`VmInfo`]; the client reads it back. Readers accept unknown fields, so an
//! older CLI keeps working against a newer VMM that reports more.

use serde::{Deserialize, Serialize};

/// What `GET /vm` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// `vm.name` from the VM file.
    pub name: String,
    /// The VMM's process id.
    pub pid: u32,
    /// What the VM is doing.
    pub state: VmState,
    /// Seconds since `ghost-vmm run` started this VM (not reset by guest reboots).
    pub uptime_secs: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// The guest's devices and the host resources behind them, in VM-file order.
    pub devices: Vec<DeviceInfo>,
    /// VM exits so far, all vCPUs together.
    pub exits: ExitCounters,
    /// Where the serial console goes.
    pub console: ConsoleInfo,
}

/// The VM's run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    /// vCPUs are running the guest.
    Running,
    /// vCPUs are paused (`PUT /vm/pause`).
    Paused,
    /// The power button was pressed; waiting for the guest to power off (until `stop_timeout`).
    ShuttingDown,
    /// The VMM is stopping the vCPUs and tearing the VM down.
    Stopping,
}

/// One guest device and its host backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DeviceInfo {
    /// A virtio-blk disk.
    Disk {
        /// Guest name (`vda`, `vdb`, ...).
        guest: String,
        /// Host image file or block device (lossy UTF-8).
        backend: String,
        /// Whether the guest sees it read-only.
        readonly: bool,
    },
    /// A virtio-net device.
    Net {
        /// Host TAP device.
        tap: String,
        /// Guest MAC address, `52:54:00:12:34:56`.
        mac: String,
    },
    /// A passed-through host PCI function.
    Vfio {
        /// Host PCI address, `0000:01:00.0`.
        host: String,
    },
}

/// VM exit totals by reason (the sums of the vCPUs' exit statistics). Missing fields read as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExitCounters {
    /// Port reads (`in`).
    pub pio_in: u64,
    /// Port writes (`out`).
    pub pio_out: u64,
    /// MMIO reads.
    pub mmio_read: u64,
    /// MMIO writes.
    pub mmio_write: u64,
    /// `KVM_RUN` interrupted (a kick or another signal).
    pub intr: u64,
    /// PIO or MMIO accesses no device claimed (also counted in their own reason).
    pub unclaimed: u64,
}

/// The serial console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleInfo {
    /// `serial.mode`.
    pub mode: ConsoleMode,
    /// `serial.path` (file mode) or the console socket (socket mode), lossy UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `serial.mode` from the VM file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleMode {
    /// The VMM's terminal.
    Stdio,
    /// Appended to a file.
    File,
    /// A Unix socket (`ghost-vmm console NAME`).
    Socket,
    /// Discarded.
    Off,
}

/// An action on the VM: `PUT /vm/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Press the ACPI power button; the guest decides (answers 202 Accepted).
    Shutdown,
    /// Hard stop: vCPUs stopped, disks flushed, the VMM exits (202 Accepted).
    Stop,
    /// Reset the guest: the VM is rebuilt as on a guest reboot (202 Accepted).
    Reboot,
    /// Pause the vCPUs (204 No Content once paused).
    Pause,
    /// Resume paused vCPUs (204 No Content once running).
    Resume,
}

impl Action {
    /// Every action, in documentation order.
    pub const ALL: [Action; 5] = [
        Action::Shutdown,
        Action::Stop,
        Action::Reboot,
        Action::Pause,
        Action::Resume,
    ];

    /// The name in the URL and on the command line: `shutdown`, `stop`, ...
    pub fn name(self) -> &'static str {
        match self {
            Action::Shutdown => "shutdown",
            Action::Stop => "stop",
            Action::Reboot => "reboot",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }

    /// The action called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The request path, `/vm/<name>`.
    pub fn path(self) -> &'static str {
        match self {
            Action::Shutdown => "/vm/shutdown",
            Action::Stop => "/vm/stop",
            Action::Reboot => "/vm/reboot",
            Action::Pause => "/vm/pause",
            Action::Resume => "/vm/resume",
        }
    }

    /// The status of a successful request: 202 for the actions the VM carries out after
    /// answering, 204 for those done before it answers.
    pub fn success_status(self) -> u16 {
        match self {
            Action::Shutdown | Action::Stop | Action::Reboot => 202,
            Action::Pause | Action::Resume => 204,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The body of every error response: `{"error": "one line"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, one line.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn devices_are_tagged_by_kind() {
        let devices = vec![
            DeviceInfo::Disk {
                guest: "vda".into(),
                backend: "/img".into(),
                readonly: false,
            },
            DeviceInfo::Net {
                tap: "tap0".into(),
                mac: "52:54:00:00:00:01".into(),
            },
            DeviceInfo::Vfio {
                host: "0000:01:00.0".into(),
            },
        ];
        assert_eq!(
            serde_json::to_value(&devices).unwrap(),
            json!([
                {"kind": "disk", "guest": "vda", "backend": "/img", "readonly": false},
                {"kind": "net", "tap": "tap0", "mac": "52:54:00:00:00:01"},
                {"kind": "vfio", "host": "0000:01:00.0"},
            ])
        );
    }

    #[test]
    fn states_are_kebab_case() {
        let names: Vec<_> = [
            VmState::Running,
            VmState::Paused,
            VmState::ShuttingDown,
            VmState::Stopping,
        ]
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
        assert_eq!(
            names,
            [
                json!("running"),
                json!("paused"),
                json!("shutting-down"),
                json!("stopping")
            ]
        );
    }

    #[test]
    fn readers_accept_unknown_and_missing_counter_fields() {
        let c: ExitCounters = serde_json::from_value(json!({"pio_in": 3, "hlt": 9})).unwrap();
        assert_eq!(c.pio_in, 3);
        assert_eq!(c.mmio_write, 0);
    }

    #[test]
    fn action_names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
            assert_eq!(a.path(), format!("/vm/{a}"));
        }
        assert_eq!(Action::from_name("explode"), None);
    }
}
