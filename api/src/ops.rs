//! The VM operations the API calls: implemented by the VMM, faked in tests.

use crate::types::VmInfo;

/// What the control API can ask of a running VM. The VMM implements it; the API server calls
/// it from its own thread (`api`), one request at a time.
///
/// The actions return once the request is made: `shutdown`, `stop` and `reboot` may finish
/// after the API has answered 202 Accepted (the VMM should let the API thread write that
/// answer before the process exits); `pause` and `resume` should return once done (the API
/// answers 204 No Content). A request the VM's state does not allow (pause when paused,
/// resume when running, anything while stopping) is an [`OpError::Conflict`].
pub trait VmOps: Send + Sync {
    /// A snapshot of the VM for `GET /vm`.
    fn info(&self) -> VmInfo;
    /// Press the ACPI power button (`PUT /vm/shutdown`).
    fn shutdown(&self) -> Result<(), OpError>;
    /// Stop the VM now, flushing disks (`PUT /vm/stop`).
    fn stop(&self) -> Result<(), OpError>;
    /// Reset the guest (`PUT /vm/reboot`).
    fn reboot(&self) -> Result<(), OpError>;
    /// Pause the vCPUs (`PUT /vm/pause`).
    fn pause(&self) -> Result<(), OpError>;
    /// Resume the vCPUs (`PUT /vm/resume`).
    fn resume(&self) -> Result<(), OpError>;
}

/// Why a [`VmOps`] action was refused. The message is one line for `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The VM's current state does not allow it (409 Conflict): "the VM is already paused".
    #[error("{0}")]
    Conflict(String),
    /// This VM cannot do it at all, or not now for a reason other than its state
    /// (503 Service Unavailable): "pause is not supported with VFIO devices".
    #[error("{0}")]
    Unavailable(String),
    /// It was tried and failed (500 Internal Server Error).
    #[error("{0}")]
    Internal(String),
}

impl OpError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            OpError::Conflict(_) => 409,
            OpError::Unavailable(_) => 503,
            OpError::Internal(_) => 500,
        }
    }
}
