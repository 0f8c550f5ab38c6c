//! ghost-vmm's per-VM control API: HTTP/1.1 + JSON on a Unix socket (`docs/api.md`).
//!
//! - [`VmOps`]: what the API asks of the VM; the VMM implements it.
//! - [`ApiServer`]: binds the socket (mode 0600, stale sockets replaced, live ones
//!   refused) and answers on its own `api` thread, one connection at a time.
//! - [`ApiClient`] and [`list_vms`]: what the CLI uses.
//! - [`http`]: the pure request parser and router, tested and fuzzed without sockets.
//! - [`socket_file`]: 0600 socket files in a listable folder, removed when their owner goes
//!   (the console socket uses it too).
//! - The JSON types: [`VmInfo`] and what it holds, [`Action`].
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(ops: Arc<dyn ghost_api::VmOps>) -> Result<(), Box<dyn std::error::Error>> {
//! let path = ghost_api::default_socket_path("workstation");
//! let api = ghost_api::ApiServer::bind(&path)?.serve(ops)?;
//! let info = ghost_api::ApiClient::connect(&path)?.get_info()?;
//! println!("{} is {:?}", info.name, info.state);
//! api.shutdown(); // also on drop; removes the socket file
//! # Ok(()) }
//! ```

mod client;
pub mod http;
mod ops;
mod server;
pub mod socket_file;
mod sys;
mod types;

#[cfg(any(test, feature = "fake"))]
pub mod fake;

use std::path::PathBuf;

pub use client::{list_vms, ApiClient, ClientError, CLIENT_TIMEOUT};
pub use ops::{OpError, VmOps};
pub use server::{ApiError, ApiServer, ApiThread, ShutdownHandle, REQUEST_TIMEOUT};
pub use types::{
    Action, ConsoleInfo, ConsoleMode, DeviceInfo, ErrorBody, ExitCounters, VmInfo, VmState,
};

/// Where root's VMs keep their control sockets: `/run/ghost-vmm/NAME.sock`.
pub const DEFAULT_SOCKET_DIR: &str = "/run/ghost-vmm";

/// The folder of this user's control sockets: [`DEFAULT_SOCKET_DIR`] for root, and for
/// anyone else (who cannot write `/run`) `$XDG_RUNTIME_DIR/ghost-vmm` when that is set (as
/// systemd sets it for a login session, `/run/user/UID`).
pub fn socket_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !root && !dir.is_empty() => PathBuf::from(dir).join("ghost-vmm"),
        _ => PathBuf::from(DEFAULT_SOCKET_DIR),
    }
}

/// The default control socket of the VM called `name` (`vm.control_socket`'s default):
/// `NAME.sock` in [`socket_dir`].
pub fn default_socket_path(name: &str) -> PathBuf {
    socket_dir().join(format!("{name}.sock"))
}
