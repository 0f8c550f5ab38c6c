//! ghost-vmm's per-VM control API: HTTP/1.1 + JSON on a Unix socket (`docs/api.md`).
//!
//! - [`VmOps`]: what the API asks of the VM; the VMM implements it.
//! - [`ApiServer`]: binds the socket (mode 0600, stale sockets replaced, live ones
//!   refused) and answers on its own `api` thread, one connection at a time.
//! - [`ApiClient`] and [`list_vms`]: what the CLI uses.
//! - [`http`]: the pure request parser and router, tested and fuzzed without sockets.
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

/// Where control sockets live by default: `/run/ghost-vmm/NAME.sock`.
pub const DEFAULT_SOCKET_DIR: &str = "/run/ghost-vmm";

/// The default control socket of the VM called `name` (`vm.control_socket`'s default).
pub fn default_socket_path(name: &str) -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET_DIR).join(format!("{name}.sock"))
}
