//! A fleet lock held by this berthctl: one named lease on every selected
//! agent, taken all-or-nothing, kept alive in the background, given back
//! at the end.
//!
//! Owns [`acquire_all`] (hosts in a fixed order — by address — one after
//! the other, so two berthctls racing for overlapping fleets cannot each
//! hold half; when any host refuses, the leases already taken are released
//! and the refusal names the host, the holder, what for and until when),
//! the renewal task behind [`HeldLocks`] (every TTL/3, all hosts at once;
//! a host that says the lease is gone, or one not renewed within a TTL,
//! makes the lock *lost*, which the holder sees through
//! [`HeldLocks::lost`] or [`HeldLocks::watch`] and must treat as "stop
//! starting work"), and giving the leases back ([`HeldLocks::release`]).
//!
//! Ctrl-C while the lock is held: the renewal task releases every lease at
//! once (best effort, each host under the call deadline) and the state
//! becomes [`LockState::Interrupted`], so the holder stops; a second
//! Ctrl-C exits berthctl at once (code 130). Dropping a `HeldLocks` without
//! releasing stops renewal; the leases lapse after their TTL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::v1::fleet_lock_client::FleetLockClient;
use berth_proto::v1::{AcquireLockRequest, Lease, ListLocksRequest, ReleaseLockRequest, RenewLockRequest};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::fanout::{HostError, Outcome, fan_out};
use super::selection::SelectedHost;

/// A lease's time to live unless asked otherwise (the agent's default too).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The state of a held fleet lock, as its renewal task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// Every lease is live.
    Held,
    /// The lease on `host` is gone (lapsed, broken, or not renewed within
    /// its TTL): the fleet is no longer protected there.
    Lost {
        /// The host's display name.
        host: String,
        /// Why, in words.
        reason: String,
    },
    /// Ctrl-C: every lease was given back.
    Interrupted,
}

/// Who holds a lock that refused us, from the refusing agent's `ListLocks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's certificate name.
    pub holder: String,
    /// Where it runs (`laptop pid 4242`).
    pub client: String,
    /// What for.
    pub purpose: String,
    /// Since when, ms since the epoch (the agent's clock).
    pub acquired_at_ms: u64,
    /// Until when unless renewed, ms since the epoch (the agent's clock).
    pub expires_at_ms: u64,
}

/// Why the lock could not be taken on every host. Nothing stays held:
/// the leases taken before the refusal were released.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot take lock {lock:?} on {host}: {message}{}", released_note(.released))]
pub struct LockRefusal {
    /// The lock's name.
    pub lock: String,
    /// The host that refused (display name).
    pub host: String,
    /// Its answer in words (it names holder, purpose and until when), or
    /// why it could not be reached.
    pub message: String,
    /// The holder, when the host is held by someone else.
    pub holder: Option<Holder>,
    /// Hosts whose lease was taken and then given back.
    pub released: Vec<String>,
}

fn released_note(released: &[String]) -> String {
    match released.len() {
        0 => String::new(),
        n => format!(
            " (released it again on the {n} host{} already taken)",
            if n == 1 { "" } else { "s" }
        ),
    }
}

/// One host's lease.
#[derive(Debug, Clone)]
struct Held {
    host: SelectedHost,
    lease_id: String,
}

/// A lock held on every selected host, renewed in the background until
/// [`release`](HeldLocks::release)d.
pub struct HeldLocks {
    name: String,
    leases: Arc<Vec<Held>>,
    parallel: usize,
    call_timeout: Duration,
    state: watch::Receiver<LockState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// `host pid N`, shown next to the holder.
fn client_text() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "berthctl".to_owned());
    format!("{host} pid {}", std::process::id())
}

fn ttl_seconds(ttl: Duration) -> u32 {
    u32::try_from(ttl.as_secs().max(1)).unwrap_or(u32::MAX)
}

/// Takes lock `name` on every host in `hosts`, all or nothing, for
/// `purpose` (shown to anyone refused), each lease living `ttl` unless
/// renewed (renewed every `ttl`/3 from now on). Each call to a host is
/// bounded by `call_timeout`. Hosts are taken one by one in address order;
/// on the first refusal the leases taken are released and the refusal
/// returned.
pub async fn acquire_all(
    hosts: &[SelectedHost],
    name: &str,
    purpose: &str,
    ttl: Duration,
    call_timeout: Duration,
) -> Result<HeldLocks, LockRefusal> {
    let mut order: Vec<&SelectedHost> = hosts.iter().collect();
    order.sort_by(|a, b| (a.target().host.as_str(), a.target().port).cmp(&(b.target().host.as_str(), b.target().port)));
    let client = client_text();
    let mut taken: Vec<Held> = Vec::with_capacity(order.len());
    for host in order {
        let req = AcquireLockRequest {
            name: name.to_owned(),
            client: client.clone(),
            ttl_seconds: ttl_seconds(ttl),
            purpose: purpose.to_owned(),
        };
        let agent = host.agent.clone();
        let acquired = tokio::time::timeout(
            call_timeout,
            agent.call(|ch| async move { FleetLockClient::new(ch).acquire_lock(req).await }),
        )
        .await
        .map_err(|_| HostError::timed_out(call_timeout))
        .and_then(|r| r.map_err(HostError::from));
        match acquired {
            Ok(lease) => taken.push(Held {
                host: host.clone(),
                lease_id: lease.lease_id,
            }),
            Err(e) => {
                let holder = holder_of(host, name, call_timeout).await;
                let released: Vec<String> = taken.iter().map(|h| h.host.name.clone()).collect();
                release_leases(name, &taken, 64, call_timeout).await;
                return Err(LockRefusal {
                    lock: name.to_owned(),
                    host: host.name.clone(),
                    message: e.message,
                    holder,
                    released,
                });
            }
        }
    }
    // Keep the caller's host order for what we show.
    let rank: BTreeMap<String, usize> = hosts.iter().enumerate().map(|(i, h)| (h.name.clone(), i)).collect();
    taken.sort_by_key(|h| rank.get(&h.host.name).copied().unwrap_or(usize::MAX));
    let leases = Arc::new(taken);
    let (state_tx, state) = watch::channel(LockState::Held);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(renew(
        name.to_owned(),
        leases.clone(),
        ttl,
        call_timeout,
        state_tx,
        stopped,
    ));
    Ok(HeldLocks {
        name: name.to_owned(),
        leases,
        parallel: 64,
        call_timeout,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

/// The live lease called `name` on `host`, if it says.
async fn holder_of(host: &SelectedHost, name: &str, call_timeout: Duration) -> Option<Holder> {
    let listed = tokio::time::timeout(
        call_timeout,
        host.agent
            .call(|ch| async move { FleetLockClient::new(ch).list_locks(ListLocksRequest {}).await }),
    )
    .await
    .ok()?
    .ok()?;
    listed
        .leases
        .into_iter()
        .find(|l| l.name == name)
        .map(|l: Lease| Holder {
            holder: l.holder,
            client: l.client,
            purpose: l.purpose,
            acquired_at_ms: l.acquired_at_ms,
            expires_at_ms: l.expires_at_ms,
        })
}

/// Releases `leases`, all at once; `Ok(true)` where a live lease was given
/// back, `Ok(false)` where it had lapsed already.
async fn release_leases(name: &str, leases: &[Held], parallel: usize, call_timeout: Duration) -> Vec<Outcome<bool>> {
    let hosts: Vec<SelectedHost> = leases.iter().map(|l| l.host.clone()).collect();
    let ids: BTreeMap<String, String> = leases
        .iter()
        .map(|l| (l.host.name.clone(), l.lease_id.clone()))
        .collect();
    let ids = &ids;
    fan_out(&hosts, parallel, Some(call_timeout), |h| async move {
        let req = ReleaseLockRequest {
            name: name.to_owned(),
            lease_id: ids.get(&h.name).cloned().unwrap_or_default(),
        };
        let r = h
            .agent
            .call(|ch| async move { FleetLockClient::new(ch).release_lock(req).await })
            .await?;
        Ok(r.released)
    })
    .await
}

/// The renewal task: every `ttl`/3 renews every lease; reports a loss,
/// releases on Ctrl-C, ends when told to stop.
async fn renew(
    name: String,
    leases: Arc<Vec<Held>>,
    ttl: Duration,
    call_timeout: Duration,
    state: watch::Sender<LockState>,
    mut stop: oneshot::Receiver<()>,
) {
    let every = (ttl / 3).max(Duration::from_millis(300));
    // A renewal that takes longer than the gap to the next would pile up.
    let deadline = call_timeout.min(every);
    let mut renewed_at: Vec<Instant> = vec![Instant::now(); leases.len()];
    let mut gone = vec![false; leases.len()];
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One listener for the task's life, so a Ctrl-C during a renewal is
    // not missed. Without one (no signal support) renewal just goes on.
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Some(()) = next_interrupt(&mut interrupts) => {
                release_leases(&name, &leases, 64, call_timeout).await;
                state.send_replace(LockState::Interrupted);
                // The holder stops on its own; a second Ctrl-C is "now".
                tokio::select! {
                    _ = &mut stop => return,
                    Some(()) = next_interrupt(&mut interrupts) => std::process::exit(130),
                }
            }
            _ = ticker.tick() => {}
        }
        let live: Vec<SelectedHost> = leases
            .iter()
            .zip(&gone)
            .filter(|(_, g)| !**g)
            .map(|(l, _)| l.host.clone())
            .collect();
        let ids: BTreeMap<String, String> = leases
            .iter()
            .map(|l| (l.host.name.clone(), l.lease_id.clone()))
            .collect();
        let (ids, name_ref) = (&ids, &name);
        let outcomes = fan_out(&live, 64, Some(deadline), |h| async move {
            let req = RenewLockRequest {
                name: name_ref.clone(),
                lease_id: ids.get(&h.name).cloned().unwrap_or_default(),
                ttl_seconds: ttl_seconds(ttl),
            };
            h.agent
                .call(|ch| async move { FleetLockClient::new(ch).renew_lock(req).await })
                .await?;
            Ok(())
        })
        .await;
        for o in outcomes {
            let Some(i) = leases.iter().position(|l| l.host.name == o.host.name) else {
                continue;
            };
            let lost = match o.result {
                Ok(()) => {
                    renewed_at[i] = Instant::now();
                    None
                }
                Err(e) if e.kind == super::fanout::Failure::Failed => Some(e.message),
                Err(e) if renewed_at[i].elapsed() >= ttl => Some(format!(
                    "not renewed for {} ({}), so the lease has lapsed",
                    super::fanout::show_duration(ttl),
                    e.message
                )),
                // Unreachable for now: the lease still runs; try again.
                Err(_) => None,
            };
            if let Some(reason) = lost {
                gone[i] = true;
                // The first loss is what the holder needs to know.
                if *state.borrow() == LockState::Held {
                    state.send_replace(LockState::Lost {
                        host: o.host.name.clone(),
                        reason,
                    });
                }
            }
        }
    }
}

/// The next SIGINT; never, without a listener.
async fn next_interrupt(listener: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match listener {
        Some(l) => l.recv().await,
        None => std::future::pending().await,
    }
}

impl HeldLocks {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hosts it is held on, in the order they were given.
    pub fn hosts(&self) -> Vec<String> {
        self.leases.iter().map(|l| l.host.name.clone()).collect()
    }

    /// `None` while every lease is live; otherwise the loss (or the
    /// interrupt). A holder checks this before starting each piece of work.
    pub fn lost(&self) -> Option<LockState> {
        match &*self.state.borrow() {
            LockState::Held => None,
            other => Some(other.clone()),
        }
    }

    /// A receiver of the state, for `select!`ing on a loss
    /// (`rx.wait_for(|s| *s != LockState::Held).await`).
    pub fn watch(&self) -> watch::Receiver<LockState> {
        self.state.clone()
    }

    /// Stops renewing and gives every lease back, all hosts at once.
    /// `Ok(true)` where a live lease was released, `Ok(false)` where it had
    /// lapsed (or been broken) already, an error where the host could not
    /// be told (its lease lapses after the TTL).
    pub async fn release(mut self) -> Vec<Outcome<bool>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        release_leases(&self.name, &self.leases, self.parallel, self.call_timeout).await
    }
}

impl Drop for HeldLocks {
    fn drop(&mut self) {
        // Not released: stop renewing; the leases lapse after their TTL.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for HeldLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLocks")
            .field("name", &self.name)
            .field("hosts", &self.hosts())
            .field("state", &*self.state.borrow())
            .finish()
    }
}
