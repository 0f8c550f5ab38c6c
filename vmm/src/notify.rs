//! systemd service notifications (`Type=notify`, `sd_notify(3)`) through the `sd-notify`
//! crate: `READY=1` once the vCPUs run, `STOPPING=1` when a stop begins, and
//! `EXTEND_TIMEOUT_USEC` while the guest shuts down, so `systemctl stop` waits for it.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call does nothing. A failure to notify is
//! logged, never fatal: the VM matters more than its supervisor's bookkeeping.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    // `false`: keep $NOTIFY_SOCKET, later notifications need it too.
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("cannot notify systemd ({states:?}): {e}");
    }
}

/// The VM runs: `READY=1`.
pub(crate) fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("running")]);
}

/// A stop began: `STOPPING=1`.
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The stop needs up to `more` beyond now: `EXTEND_TIMEOUT_USEC`.
pub(crate) fn extend_timeout(more: Duration) {
    let usec = u32::try_from(more.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}
