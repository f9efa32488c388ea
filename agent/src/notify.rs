//! Readiness and status reports to systemd (`sd_notify`), for the packaged
//! unit's `Type=notify`: `READY=1` once the agent listens and supervises,
//! `STATUS=` while it waits for Docker, `STOPPING=1` on shutdown.
//!
//! Each call is a no-op when `NOTIFY_SOCKET` is unset (not started by
//! systemd, or by a unit that is not `Type=notify`). A failed send is logged
//! and otherwise ignored: the agent works the same without a service manager.

use sd_notify::NotifyState;
use tracing::warn;

/// The agent accepts connections and its supervisor runs.
pub fn ready() {
    send(&[
        NotifyState::Ready,
        NotifyState::Status("Listening; supervising services."),
    ]);
}

/// A one-line status shown by `systemctl status berth-agent`. Newlines
/// would end the field early in the notify protocol, so they become spaces.
pub fn status(text: &str) {
    let line = text.replace('\n', " ");
    send(&[NotifyState::Status(&line)]);
}

/// The agent began its graceful shutdown.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("Shutting down.")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "Cannot notify systemd (NOTIFY_SOCKET).");
    }
}
