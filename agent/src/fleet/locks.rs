//! The fleet-lock keeper: one task owns this agent's [`LeaseTable`].
//!
//! Inputs: commands from the `FleetLock` gRPC adapter over a bounded channel
//! (acquire, renew, release, list, break), each with a oneshot reply; the
//! clock, for lapses. Outputs: `state_dir/leases.json`, written durably
//! before a change is acknowledged (a failed write changes nothing); an
//! event and an audit record for every acquire, refusal, release, lapse and
//! break (renewals are neither: a holder renews every few seconds). A lease
//! lapses on its own: the keeper wakes at the next expiry, drops what
//! lapsed and reports it, so `berthctl events` shows a stranded holder at
//! once rather than when the next caller looks.
//!
//! Stops on cancel; a command that arrives later is refused as
//! "shutting down". Leases on disk stay, so a restarted agent keeps them.

use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::audit::Audit;
use crate::clock::{format_utc, now_ms};
use crate::events::{EventBus, Severity};
use crate::leases::{self, Acquire, Lease, LeaseError, LeaseTable, Loaded};

/// Commands waiting for the keeper. Each is a handful of microseconds plus
/// one fsync; a berthctl renews every few seconds per lease, so a short
/// queue never fills in practice, and a full one makes callers wait rather
/// than lose a command.
const QUEUE: usize = 32;

/// Why a lock call failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Refused by the table (held by another, not the holder, bad request).
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The lease file could not be written; nothing changed.
    #[error("cannot record the lease: {0}")]
    Disk(String),
    /// The agent is stopping.
    #[error("the agent is shutting down")]
    Stopping,
}

/// Who asks, for the audit log and the lease's holder: the caller's
/// certificate name, role and fingerprint.
pub use crate::audit::Actor as Caller;

enum Command {
    Acquire(Acquire, Caller, oneshot::Sender<Result<Lease, LockError>>),
    Renew {
        caller: Caller,
        name: String,
        lease_id: String,
        ttl_ms: u64,
        reply: oneshot::Sender<Result<Lease, LockError>>,
    },
    Release {
        caller: Caller,
        name: String,
        lease_id: String,
        reply: oneshot::Sender<Result<Option<Lease>, LockError>>,
    },
    List(oneshot::Sender<Vec<Lease>>),
    Break {
        caller: Caller,
        name: String,
        reason: String,
        reply: oneshot::Sender<Result<Option<Lease>, LockError>>,
    },
}

/// The handle the gRPC adapter holds; cheap to clone.
#[derive(Clone)]
pub struct Locks {
    tx: mpsc::Sender<Command>,
}

impl Locks {
    /// Loads `state_dir/leases.json` and starts the keeper on `tracker`.
    /// A corrupt file is set aside with a warning (and an event), never a
    /// refusal to start.
    pub fn start(
        state_dir: PathBuf,
        bus: EventBus,
        audit: Audit,
        tracker: &tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Locks, String> {
        let (table, loaded) = leases::load(&state_dir).map_err(|e| e.to_string())?;
        if let Loaded::SetAside(path, why) = loaded {
            bus.publish(
                "lock-file-corrupt",
                "",
                0,
                Severity::Error,
                format!(
                    "The fleet-lock file was unreadable ({why}); moved it to {} and started with no leases.",
                    path.display()
                ),
            );
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let keeper = Keeper {
            state_dir,
            table,
            bus,
            audit,
        };
        tracker.spawn(tracing::Instrument::instrument(
            keeper.run(rx, cancel),
            tracing::info_span!("fleet-lock"),
        ));
        Ok(Locks { tx })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, LockError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| LockError::Stopping)?;
        rx.await.map_err(|_| LockError::Stopping)
    }

    /// Takes a lease (see [`LeaseTable::acquire`]).
    pub async fn acquire(&self, req: Acquire, caller: Caller) -> Result<Lease, LockError> {
        self.ask(|r| Command::Acquire(req, caller, r)).await?
    }

    /// Extends a lease the caller holds.
    pub async fn renew(&self, caller: Caller, name: String, lease_id: String, ttl_ms: u64) -> Result<Lease, LockError> {
        self.ask(|reply| Command::Renew {
            caller,
            name,
            lease_id,
            ttl_ms,
            reply,
        })
        .await?
    }

    /// Gives a lease back; `None` when it had lapsed already.
    pub async fn release(&self, caller: Caller, name: String, lease_id: String) -> Result<Option<Lease>, LockError> {
        self.ask(|reply| Command::Release {
            caller,
            name,
            lease_id,
            reply,
        })
        .await?
    }

    /// The live leases.
    pub async fn list(&self) -> Result<Vec<Lease>, LockError> {
        self.ask(Command::List).await
    }

    /// Ends a lease whoever holds it; returns it, `None` when none was held.
    pub async fn break_lease(&self, caller: Caller, name: String, reason: String) -> Result<Option<Lease>, LockError> {
        self.ask(|reply| Command::Break {
            caller,
            name,
            reason,
            reply,
        })
        .await?
    }
}

/// The sentence a refused acquire gets: who holds it, for what, since and
/// until when (the agent's clock).
pub fn held_message(lease: &Lease, now_ms: u64) -> String {
    let left = lease.expires_at_ms.saturating_sub(now_ms).div_ceil(1000);
    let client = if lease.client.is_empty() {
        String::new()
    } else {
        format!(" ({})", lease.client)
    };
    format!(
        "lock {:?} is held by {}{client} for {:?} since {}, until {} (in {left}s unless renewed)",
        lease.name,
        lease.holder,
        lease.purpose,
        format_utc(lease.acquired_at_ms),
        format_utc(lease.expires_at_ms),
    )
}

struct Keeper {
    state_dir: PathBuf,
    table: LeaseTable,
    bus: EventBus,
    audit: Audit,
}

impl Keeper {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, cancel: CancellationToken) {
        // Leases that lapsed while the agent was down are reported now.
        self.expire().await;
        loop {
            let wake = self.table.next_expiry().map(|at| {
                let left = at.saturating_sub(now_ms());
                std::time::Instant::now() + std::time::Duration::from_millis(left)
            });
            let lapse = crate::clock::sleep_until(wake);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = lapse => self.expire().await,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
            }
        }
        debug!("Fleet-lock keeper stopped.");
    }

    /// Writes `next` and makes it the table, or leaves the table alone.
    async fn commit(&mut self, next: LeaseTable) -> Result<(), LockError> {
        let dir = self.state_dir.clone();
        let copy = next.clone();
        tokio::task::spawn_blocking(move || leases::save(&dir, &copy))
            .await
            .map_err(|e| LockError::Disk(e.to_string()))?
            .map_err(|e| LockError::Disk(e.to_string()))?;
        self.table = next;
        Ok(())
    }

    async fn expire(&mut self) {
        let mut next = self.table.clone();
        let lapsed = next.expire(now_ms());
        if lapsed.is_empty() {
            return;
        }
        if let Err(e) = self.commit(next).await {
            // Try again at the next wake-up; the lapse itself holds either way.
            warn!(error = %e, "Cannot record lapsed leases.");
            return;
        }
        for l in lapsed {
            let message = format!(
                "The lease on lock {:?} held by {} for {:?} lapsed at {} (not renewed).",
                l.name,
                l.holder,
                l.purpose,
                format_utc(l.expires_at_ms)
            );
            self.bus.publish("lock-expired", "", 0, Severity::Warning, message);
            self.audit
                .record(&Caller::agent(&l.holder), "lock expired", &l.name, &l.purpose, "lapsed");
        }
    }

    async fn handle(&mut self, cmd: Command) {
        let now = now_ms();
        match cmd {
            Command::Acquire(req, caller, reply) => {
                let _ = reply.send(self.acquire(req, &caller, now).await);
            }
            Command::Renew {
                caller,
                name,
                lease_id,
                ttl_ms,
                reply,
            } => {
                let mut next = self.table.clone();
                let result = match holder_check(&self.table, &caller, &name) {
                    Err(e) => Err(e),
                    Ok(()) => match next.renew(&name, &lease_id, ttl_ms, now) {
                        Ok(lease) => self.commit(next).await.map(|()| lease),
                        Err(e) => Err(e.into()),
                    },
                };
                let _ = reply.send(result);
            }
            Command::Release {
                caller,
                name,
                lease_id,
                reply,
            } => {
                let mut next = self.table.clone();
                let result = match next.release(&name, &lease_id, now) {
                    Ok(Some(lease)) => self.commit(next).await.map(|()| Some(lease)),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e.into()),
                };
                if let Ok(Some(lease)) = &result {
                    self.bus.publish(
                        "lock-released",
                        "",
                        0,
                        Severity::Info,
                        format!("{} released lock {:?} ({}).", caller.name, lease.name, lease.purpose),
                    );
                    self.audit
                        .record(&caller, "lock release", &lease.name, &lease.purpose, "ok");
                }
                let _ = reply.send(result);
            }
            Command::List(reply) => {
                let _ = reply.send(self.table.live(now));
            }
            Command::Break {
                caller,
                name,
                reason,
                reply,
            } => {
                let mut next = self.table.clone();
                let result = match next.break_lease(&name, now) {
                    Some(lease) => self.commit(next).await.map(|()| Some(lease)),
                    None => Ok(None),
                };
                match &result {
                    Ok(Some(lease)) => {
                        let why = if reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {reason}")
                        };
                        self.bus.publish(
                            "lock-broken",
                            "",
                            0,
                            Severity::Warning,
                            format!(
                                "{} broke lock {:?} held by {} for {:?}{why}.",
                                caller.name, lease.name, lease.holder, lease.purpose
                            ),
                        );
                        self.audit.record(
                            &caller,
                            "lock break",
                            &lease.name,
                            &format!("held by {} for {:?}{why}", lease.holder, lease.purpose),
                            "ok",
                        );
                    }
                    Ok(None) => {
                        self.audit.record(&caller, "lock break", &name, &reason, "not held");
                    }
                    Err(e) => {
                        self.audit
                            .record(&caller, "lock break", &name, &reason, &format!("failed: {e}"));
                    }
                }
                let _ = reply.send(result);
            }
        }
    }

    async fn acquire(&mut self, req: Acquire, caller: &Caller, now: u64) -> Result<Lease, LockError> {
        let lease_id = leases::new_lease_id().map_err(|e| LockError::Disk(format!("cannot make a lease id: {e}")))?;
        let mut next = self.table.clone();
        let (who, name, purpose) = (req.holder.clone(), req.name.clone(), req.purpose.clone());
        match next.acquire(req, lease_id, now) {
            Ok((lease, lapsed)) => {
                self.commit(next).await?;
                if let Some(old) = lapsed {
                    self.bus.publish(
                        "lock-expired",
                        "",
                        0,
                        Severity::Warning,
                        format!(
                            "The lease on lock {:?} held by {} for {:?} had lapsed; {who} takes it over.",
                            old.name, old.holder, old.purpose
                        ),
                    );
                    self.audit.record(
                        &Caller::agent(&old.holder),
                        "lock expired",
                        &old.name,
                        &old.purpose,
                        "lapsed",
                    );
                }
                self.bus.publish(
                    "lock-acquired",
                    "",
                    0,
                    Severity::Info,
                    format!(
                        "{who} holds lock {:?} for {:?} until {}.",
                        lease.name,
                        lease.purpose,
                        format_utc(lease.expires_at_ms)
                    ),
                );
                self.audit.record(caller, "lock acquire", &name, &purpose, "ok");
                Ok(lease)
            }
            Err(e) => {
                let outcome = match &e {
                    LeaseError::Held(held) => format!("refused: held by {} for {:?}", held.holder, held.purpose),
                    other => format!("refused: {other}"),
                };
                self.audit.record(caller, "lock acquire", &name, &purpose, &outcome);
                Err(e.into())
            }
        }
    }
}

/// A renew must come from the certificate that holds the lease, on top of
/// knowing its id.
fn holder_check(table: &LeaseTable, caller: &Caller, name: &str) -> Result<(), LockError> {
    match table.live(now_ms()).into_iter().find(|l| l.name == name) {
        Some(l) if l.holder != caller.name => Err(LeaseError::NotHolder {
            name: name.to_owned(),
            why: format!("it is held by {}, not by {}", l.holder, caller.name),
        }
        .into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeper_in(dir: &std::path::Path) -> (Locks, EventBus, CancellationToken, tokio_util::task::TaskTracker) {
        let bus = EventBus::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let cancel = CancellationToken::new();
        let locks = Locks::start(
            dir.to_owned(),
            bus.clone(),
            Audit::open(dir, &Default::default()).expect("audit"),
            &tracker,
            cancel.clone(),
        )
        .expect("start");
        (locks, bus, cancel, tracker)
    }

    fn req(holder: &str, ttl_ms: u64) -> Acquire {
        Acquire {
            name: "deploy".into(),
            holder: holder.into(),
            purpose: "rollout api".into(),
            client: "laptop pid 1".into(),
            ttl_ms,
        }
    }

    #[tokio::test]
    async fn leases_are_on_disk_before_acknowledged_and_lapse_with_an_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (locks, bus, cancel, tracker) = keeper_in(dir.path());
        let mut events = bus.subscribe();
        let lease = locks
            .acquire(req("alice", 1_000), Caller::agent("alice"))
            .await
            .expect("free");
        let (on_disk, _) = leases::load(dir.path()).expect("load");
        assert_eq!(on_disk.live(now_ms()).len(), 1, "written before the reply");
        assert_eq!(events.recv().await.expect("event").kind, "lock-acquired");
        let refused = locks
            .acquire(req("bob", 0), Caller::agent("bob"))
            .await
            .expect_err("held");
        let LockError::Lease(LeaseError::Held(held)) = &refused else {
            panic!("{refused}")
        };
        let text = held_message(held, now_ms());
        assert!(
            text.contains("held by alice (laptop pid 1)") && text.contains("until 20"),
            "{text}"
        );
        // Bob cannot renew alice's lease even with its id.
        let e = locks
            .renew(Caller::agent("bob"), "deploy".into(), lease.lease_id.clone(), 0)
            .await
            .expect_err("not bob's");
        assert!(e.to_string().contains("held by alice, not by bob"), "{e}");
        // Not renewed: it lapses on its own, with an event, and bob gets it.
        let lapsed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                if events.recv().await.expect("event").kind == "lock-expired" {
                    break;
                }
            }
        })
        .await;
        assert!(lapsed.is_ok(), "no lock-expired event");
        assert!(locks.list().await.expect("list").is_empty());
        locks
            .acquire(req("bob", 0), Caller::agent("bob"))
            .await
            .expect("free again");
        let audit = std::fs::read_to_string(dir.path().join("audit.log")).expect("audit");
        assert!(
            audit.contains("\"lock acquire\"") && audit.contains("refused: held by alice"),
            "{audit}"
        );
        assert!(audit.contains("\"lock expired\""), "{audit}");
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test]
    async fn a_restarted_keeper_keeps_live_leases_and_break_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (locks, _, cancel, tracker) = keeper_in(dir.path());
            locks
                .acquire(req("alice", 60_000), Caller::agent("alice"))
                .await
                .expect("free");
            cancel.cancel();
            tracker.close();
            tracker.wait().await;
        }
        let (locks, _, cancel, tracker) = keeper_in(dir.path());
        let held = locks.list().await.expect("list");
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].holder, "alice");
        let broken = locks
            .break_lease(Caller::agent("root"), "deploy".into(), "stuck".into())
            .await
            .expect("break");
        assert_eq!(broken.map(|l| l.holder), Some("alice".to_owned()));
        assert!(locks.list().await.expect("list").is_empty());
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
        assert!(matches!(locks.list().await, Err(LockError::Stopping)));
    }
}
