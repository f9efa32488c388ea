//! Running a rollout: batches in order, each host's own health-gated deploy,
//! the failure budget, bake, pause/resume/abort, and rolling back.
//!
//! Owns the loop over a record's batches. Per host it starts the agent's
//! deploy for the change ([`Change::start`]) and follows it under
//! `--host-timeout`; a host fails when its deploy fails, it cannot be
//! reached, or it runs out of time. A batch ends when all of its hosts
//! have. When failures exceed the budget (or the rollout is aborted) no
//! new host starts, and every host this rollout changed is rolled back to
//! the revision it had, or left as it is under `--on-failure pause`.
//!
//! Survives its own berthctl: the record goes to every host before the
//! first batch and after each, and to a host as its deploy starts, so
//! `rollout status` shows it from anywhere and `rollout resume` continues
//! where it stopped (an in-flight host's outcome is read back from its
//! agent's history; nothing is deployed twice). Control set by another
//! terminal (pause, resume, abort) comes back with each record write, so
//! it is acted on without a second round of calls: a host that hears of a
//! pause or abort as it starts does not start, and the loop obeys it; it
//! is read from the agents while waiting. Going straight from one batch to
//! the next, the record reaches the next batch's hosts with their start
//! and the others while that batch runs, so one call per host before its
//! deploy is all the bookkeeping that stands between two batches. The fleet lock is
//! held for the whole run; losing it (or Ctrl-C) stops starting hosts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use berth_proto::v1::rollouts_client::RolloutsClient;
use berth_proto::v1::services_client::ServicesClient;
use berth_proto::v1::{
    GetRequest, GetRolloutRequest, HistoryRequest, HostProgress, PutRolloutRequest, RolloutControl, RolloutRecord,
    SetRolloutControlRequest, WatchEventsRequest,
};

use super::change::{self, Change};
use super::record::{self, host, newest_control, status};
use super::view::{View, now_ms};
use crate::fleet::fanout::{HostError, fan_out};
use crate::fleet::lock::{HeldLocks, LockState};
use crate::fleet::selection::SelectedHost;

/// Event kinds that fail a canary while it bakes.
const BAKE_FAILURES: [&str; 4] = ["exited", "oom-killed", "unhealthy", "replaced"];

/// How often control and the lock are looked at while waiting.
const POLL: Duration = Duration::from_secs(1);

/// What to do when failures exceed the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailure {
    /// Roll every host this rollout changed back to its revision before.
    Rollback,
    /// Leave the hosts as they are and stop, paused, for a person.
    Pause,
}

/// How the runner runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Longest one host's deploy may take.
    pub host_timeout: Option<Duration>,
    /// Watch the canary this long before the next batch.
    pub bake: Option<Duration>,
    /// Pause after the canary batch until `rollout resume`.
    pub pause_after_canary: bool,
    /// Wait between batches.
    pub wait: Option<Duration>,
    /// On too many failures (and on abort).
    pub on_failure: OnFailure,
    /// Hosts deployed or rolled back at once, at most.
    pub parallel: usize,
    /// Deadline of one bookkeeping call (records, control).
    pub call_timeout: Duration,
    /// Failures allowed.
    pub budget: usize,
}

/// Why the loop stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stop {
    /// Failures exceeded the budget.
    Failures(String),
    /// Someone ran `rollout abort`.
    Aborted(String),
    /// The lease was lost or Ctrl-C: leave the record resumable.
    LockGone(String),
}

/// One rollout being run.
pub struct Runner<'a> {
    /// Hosts by name.
    hosts: BTreeMap<String, SelectedHost>,
    record: Mutex<RolloutRecord>,
    /// The newest control the hosts answered a record write with: every
    /// write returns the host's copy, control included, so the batch
    /// boundary needs no second fan-out to read it.
    seen_control: Mutex<Option<RolloutControl>>,
    /// Hosts whose copy of the record is a batch behind: written while the
    /// next batch runs (whose own hosts get it as each one starts).
    behind: Mutex<Vec<String>>,
    change: Change,
    settings: Settings,
    lock: &'a HeldLocks,
    view: &'a View,
}

impl<'a> Runner<'a> {
    /// A runner of `record` over `hosts` (every host the record names must
    /// be among them).
    pub fn new(
        record: RolloutRecord,
        hosts: &[SelectedHost],
        change: Change,
        settings: Settings,
        lock: &'a HeldLocks,
        view: &'a View,
    ) -> Result<Runner<'a>, String> {
        let by_name: BTreeMap<String, SelectedHost> = hosts.iter().map(|h| (h.name.clone(), h.clone())).collect();
        let missing: Vec<&str> = record
            .hosts
            .iter()
            .map(|h| h.host.as_str())
            .filter(|h| !by_name.contains_key(*h))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "rollout {} runs on hosts the selection does not include: {}; select its fleet",
                record.id,
                missing.join(", ")
            ));
        }
        Ok(Runner {
            hosts: by_name,
            record: Mutex::new(record),
            seen_control: Mutex::new(None),
            behind: Mutex::new(Vec::new()),
            change,
            settings,
            lock,
            view,
        })
    }

    fn snapshot(&self) -> RolloutRecord {
        self.record.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn update<T>(&self, f: impl FnOnce(&mut RolloutRecord) -> T) -> T {
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        r.updated_at_ms = now_ms();
        f(&mut r)
    }

    fn host_entry(&self, name: &str) -> HostProgress {
        self.snapshot()
            .hosts
            .into_iter()
            .find(|h| h.host == name)
            .unwrap_or_default()
    }

    fn set_host(&self, p: HostProgress) {
        self.update(|r| {
            if let Some(h) = r.hosts.iter_mut().find(|h| h.host == p.host) {
                *h = p;
            }
        });
    }

    fn set_status(&self, s: &str, detail: &str) {
        self.update(|r| {
            r.status = s.to_owned();
            r.detail = detail.to_owned();
        });
    }

    /// Writes the record to `names` (best effort: a host that does not take
    /// it is said so, and the rollout goes on).
    async fn put(&self, names: &[String]) {
        let record = self.snapshot();
        let hosts: Vec<SelectedHost> = names.iter().filter_map(|n| self.hosts.get(n).cloned()).collect();
        let record = &record;
        let outcomes = fan_out(
            &hosts,
            self.settings.parallel,
            Some(self.settings.call_timeout),
            |h| async move {
                let req = PutRolloutRequest {
                    record: Some(record.clone()),
                };
                let state = h
                    .agent
                    .call(|ch| async move { RolloutsClient::new(ch).put_rollout(req).await })
                    .await?;
                Ok::<_, HostError>(state.control)
            },
        )
        .await;
        let mut controls = Vec::new();
        for o in outcomes {
            match o.result {
                Ok(control) => controls.extend(control),
                Err(e) => self
                    .view
                    .note("record", &format!("could not record progress on {}: {e}", o.host.name)),
            }
        }
        let mut seen = self.seen_control.lock().unwrap_or_else(|p| p.into_inner());
        *seen = newest_control(seen.take().into_iter().chain(controls));
    }

    async fn put_all(&self) {
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        self.put(&names).await;
    }

    /// The newest control set on any host of the rollout.
    async fn control(&self) -> Option<RolloutControl> {
        let id = self.snapshot().id;
        let hosts: Vec<SelectedHost> = self.hosts.values().cloned().collect();
        let copies = copies(&hosts, self.settings.parallel, self.settings.call_timeout, &id).await;
        newest_control(copies.into_iter().filter_map(|c| c.state.control))
    }

    /// Why the lock no longer protects the run, if it does not. A lease
    /// lost on a host that failed (an agent that died) leaves the others
    /// protected: that host gets nothing more from this rollout.
    fn lock_gone(&self) -> Option<Stop> {
        match self.lock.lost()? {
            LockState::Held => None,
            LockState::Lost { host: h, .. } if self.host_entry(&h).state == host::FAILED => None,
            LockState::Lost { host, reason } => Some(Stop::LockGone(format!("lost on {host}: {reason}"))),
            LockState::Interrupted => Some(Stop::LockGone(
                "interrupted (Ctrl-C); the leases were given back".into(),
            )),
        }
    }

    /// Waits until someone resumes (a `resume` newer than `since_ms`), the
    /// rollout is aborted, or the lock goes.
    async fn wait_for_resume(&self, since_ms: u64) -> Result<(), Stop> {
        loop {
            if let Some(stop) = self.lock_gone() {
                return Err(stop);
            }
            if let Some(c) = self.control().await {
                match c.action.as_str() {
                    "abort" if c.at_ms >= since_ms => return Err(Stop::Aborted(format!("aborted by {}", c.by))),
                    "resume" if c.at_ms > since_ms => {
                        self.view.note("resumed", &format!("resumed by {}", c.by));
                        return Ok(());
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Acts on control set since the last look (asking every host): a
    /// pause waits here.
    async fn obey(&self) -> Result<(), Stop> {
        let control = self.control().await;
        self.obey_control(control).await
    }

    /// [`Runner::obey`] with the control the last record write saw: at a
    /// batch boundary, right after the whole record was written.
    async fn obey_seen(&self) -> Result<(), Stop> {
        let control = self.seen_control.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.obey_control(control).await
    }

    async fn obey_control(&self, control: Option<RolloutControl>) -> Result<(), Stop> {
        let Some(c) = control else {
            return Ok(());
        };
        match c.action.as_str() {
            "abort" => Err(Stop::Aborted(format!("aborted by {}", c.by))),
            "pause" => {
                let id = self.snapshot().id;
                self.set_status(status::PAUSED, &format!("paused by {}", c.by));
                self.put_all().await;
                self.view.note(
                    "paused",
                    &format!(
                        "paused by {}; no new host starts until `berthctl rollout resume {id}`",
                        c.by
                    ),
                );
                self.wait_for_resume(c.at_ms).await?;
                self.set_status(status::RUNNING, "");
                self.put_all().await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Sleeps `d`, obeying control meanwhile.
    async fn wait(&self, d: Duration) -> Result<(), Stop> {
        let until = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < until {
            if let Some(stop) = self.lock_gone() {
                return Err(stop);
            }
            self.obey().await?;
            tokio::time::sleep_until(until.min(tokio::time::Instant::now() + POLL)).await;
        }
        Ok(())
    }

    /// Runs the rollout from its current batch to the end, then rolls
    /// back or pauses on failure. Returns the final record.
    pub async fn run(&self) -> RolloutRecord {
        self.set_status(status::RUNNING, "");
        self.put_all().await;
        let stop = self.batches().await;
        match stop {
            None => {
                let r = self.snapshot();
                let failed = record::failures(&r);
                if failed == 0 {
                    self.set_status(status::SUCCEEDED, &record::counts_line(&r));
                } else {
                    self.set_status(
                        status::FAILED,
                        &format!("{failed} host(s) failed, within the budget of {}", self.settings.budget),
                    );
                }
            }
            Some(Stop::LockGone(why)) => {
                let id = self.snapshot().id;
                self.set_status(
                    status::PAUSED,
                    &format!("stopped: the fleet lock is gone ({why}); continue with `berthctl rollout resume {id}`"),
                );
            }
            Some(Stop::Failures(why) | Stop::Aborted(why)) => {
                let aborted = self.snapshot().status == status::ABORTED || why.starts_with("aborted");
                self.skip_pending();
                match self.settings.on_failure {
                    OnFailure::Rollback => {
                        self.set_status(status::ROLLING_BACK, &why);
                        self.put_all().await;
                        self.view
                            .note("rollback", &format!("{why}: rolling back the changed hosts"));
                        let ok = self.roll_back().await;
                        let end = if aborted { status::ABORTED } else { status::ROLLED_BACK };
                        let detail = if ok {
                            format!("{why}; every changed host rolled back")
                        } else {
                            format!("{why}; some rollbacks FAILED: see the table")
                        };
                        self.set_status(end, &detail);
                    }
                    OnFailure::Pause => {
                        let end = if aborted { status::ABORTED } else { status::FAILED };
                        self.set_status(end, &format!("{why}; hosts left as they are (--on-failure pause)"));
                    }
                }
            }
        }
        self.put_all().await;
        self.snapshot()
    }

    fn skip_pending(&self) {
        self.update(|r| {
            for h in &mut r.hosts {
                if h.state == host::PENDING {
                    h.state = host::SKIPPED.into();
                }
            }
        });
    }

    async fn batches(&self) -> Option<Stop> {
        let total = self.snapshot().batches.len();
        loop {
            let r = self.snapshot();
            let b = r.batch as usize;
            if b >= total {
                return None;
            }
            if let Some(stop) = self.lock_gone() {
                return Some(stop);
            }
            if let Err(stop) = self.obey_seen().await {
                return Some(stop);
            }
            let batch = r.batches[b].clone();
            let todo: Vec<String> = batch
                .hosts
                .iter()
                .filter(|h| {
                    r.hosts
                        .iter()
                        .any(|p| &p.host == *h && matches!(p.state.as_str(), host::PENDING | host::RUNNING))
                })
                .cloned()
                .collect();
            let kind = if batch.canary { " (canary)" } else { "" };
            self.view.note(
                "batch",
                &format!("batch {}/{total}{kind}: {}", b + 1, batch.hosts.join(", ")),
            );
            let mut lost = self.lock.watch();
            let behind = std::mem::take(&mut *self.behind.lock().unwrap_or_else(|p| p.into_inner()));
            let run = async {
                tokio::join!(self.put(&behind), self.run_hosts(&todo));
            };
            tokio::pin!(run);
            let finished = tokio::select! {
                () = &mut run => true,
                _ = lost.wait_for(|s| *s != LockState::Held) => false,
            };
            if !finished {
                if let Some(stop) = self.lock_gone() {
                    return Some(stop);
                }
                // Lost only on a host that failed already: carry on.
                run.await;
            }
            let failed = record::failures(&self.snapshot());
            if failed > self.settings.budget {
                self.update(|r| r.batch = b as u32 + 1);
                return Some(Stop::Failures(format!(
                    "{failed} host(s) failed, over the budget of {}",
                    self.settings.budget
                )));
            }
            if self.held_back(&todo) {
                // Control came back with a host's start: the loop's top
                // obeys it, then runs what is left of this batch.
                continue;
            }
            if let Some(bake) = self.settings.bake.filter(|_| batch.canary) {
                self.bake(&batch.hosts, bake).await;
                let failed = record::failures(&self.snapshot());
                if failed > self.settings.budget {
                    self.update(|r| r.batch = b as u32 + 1);
                    return Some(Stop::Failures(format!(
                        "the canary failed while baking ({failed} failure(s), budget {})",
                        self.settings.budget
                    )));
                }
            }
            self.update(|r| r.batch = b as u32 + 1);
            if b + 1 == total {
                // The run's end writes the whole record right away.
                return None;
            }
            let pausing = batch.canary && self.settings.pause_after_canary;
            if pausing || self.settings.wait.is_some() {
                self.put_all().await;
            } else {
                // Straight on: the next batch's hosts get the record (and
                // answer with control) as each starts; the rest while it runs.
                let next = &r.batches[b + 1].hosts;
                *self.behind.lock().unwrap_or_else(|p| p.into_inner()) =
                    self.hosts.keys().filter(|h| !next.contains(h)).cloned().collect();
            }
            if pausing {
                let since = now_ms();
                let id = self.snapshot().id;
                self.set_status(status::PAUSED, "paused after the canary");
                self.put_all().await;
                self.view.note(
                    "paused",
                    &format!("canary done; paused until `berthctl rollout resume {id}`"),
                );
                if let Err(stop) = self.wait_for_resume(since).await {
                    return Some(stop);
                }
                self.set_status(status::RUNNING, "");
                self.put_all().await;
            }
            if let Some(w) = self.settings.wait {
                self.view
                    .note("wait", &format!("waiting {}s before the next batch", w.as_secs()));
                if let Err(stop) = self.wait(w).await {
                    return Some(stop);
                }
            }
        }
    }

    /// The newest control seen says pause or abort.
    fn stopping(&self) -> bool {
        let seen = self.seen_control.lock().unwrap_or_else(|p| p.into_inner());
        seen.as_ref()
            .is_some_and(|c| matches!(c.action.as_str(), "pause" | "abort"))
    }

    /// Some of `todo` did not start because of [`Runner::stopping`].
    fn held_back(&self, todo: &[String]) -> bool {
        let r = self.snapshot();
        r.hosts
            .iter()
            .any(|p| todo.contains(&p.host) && p.state == host::PENDING)
    }

    /// Runs `names` at once (bounded), each under the host timeout.
    async fn run_hosts(&self, names: &[String]) {
        let hosts: Vec<SelectedHost> = names.iter().filter_map(|n| self.hosts.get(n).cloned()).collect();
        let _ = fan_out(&hosts, self.settings.parallel, None, |h| async move {
            self.run_host(&h).await;
            Ok::<_, HostError>(())
        })
        .await;
    }

    async fn run_host(&self, h: &SelectedHost) {
        let mut p = self.host_entry(&h.name);
        if p.state == host::RUNNING {
            // It was in flight when an earlier berthctl stopped: its agent
            // knows how it went.
            if self.read_back(h, &mut p).await {
                self.set_host(p.clone());
                self.put(std::slice::from_ref(&h.name)).await;
                self.view.done(&p);
                return;
            }
        }
        p.state = host::RUNNING.into();
        p.started_at_ms = now_ms();
        p.phase = "start".into();
        self.set_host(p.clone());
        self.put(std::slice::from_ref(&h.name)).await;
        if self.stopping() {
            // Paused or aborted meanwhile: no new host starts.
            p.state = host::PENDING.into();
            p.started_at_ms = 0;
            p.phase.clear();
            self.set_host(p);
            return;
        }
        let service = self.snapshot().service;
        let deploy = async {
            let stream = self.change.start(&h.agent, &service).await?;
            change::follow(&h.agent, stream, |phase, message| {
                self.view.phase(&h.name, phase, message)
            })
            .await
        };
        let outcome = match self.settings.host_timeout {
            Some(t) => tokio::time::timeout(t, deploy).await.unwrap_or_else(|_| {
                Err(crate::client::ConnectError::Unreachable {
                    target: h.target().to_string(),
                    message: format!("passed --host-timeout ({}s)", t.as_secs()),
                })
            }),
            None => deploy.await,
        };
        p.finished_at_ms = now_ms();
        p.phase.clear();
        match outcome {
            Ok(r) if r.success => {
                p.state = if r.changed { host::SUCCEEDED } else { host::UNCHANGED }.into();
                p.revision_after = r.revision;
                p.version = serving_version(h, &service).await;
            }
            Ok(r) => {
                p.state = host::FAILED.into();
                p.revision_after = r.revision;
                p.error = if r.rolled_back {
                    format!("{} (the agent put revision {} back)", r.error, r.revision)
                } else {
                    r.error
                };
            }
            Err(e) => {
                p.state = host::FAILED.into();
                p.error = e.message().to_owned();
            }
        }
        // Written with the whole record when the batch ends; a berthctl
        // that dies before that finds the host in flight and reads the
        // outcome back from its agent.
        self.set_host(p.clone());
        self.view.done(&p);
    }

    /// Settles a host found in flight from the agent's history; false when
    /// its deploy never began (so it runs now). Waits while a revision of
    /// this rollout is still being deployed there.
    async fn read_back(&self, h: &SelectedHost, p: &mut HostProgress) -> bool {
        let service = self.snapshot().service;
        let deadline = tokio::time::Instant::now() + self.settings.host_timeout.unwrap_or(Duration::from_secs(600));
        loop {
            let req = HistoryRequest {
                service: service.clone(),
            };
            let history = h
                .agent
                .call(|ch| async move { ServicesClient::new(ch).history(req).await })
                .await;
            let newer: Vec<_> = match &history {
                Ok(hist) => hist
                    .revisions
                    .iter()
                    .filter(|r| r.number > p.revision_before && r.created_at_ms + 1000 >= p.started_at_ms)
                    .cloned()
                    .collect(),
                Err(e) => {
                    p.state = host::FAILED.into();
                    p.error = format!("in flight when berthctl stopped, and now: {}", e.message());
                    p.finished_at_ms = now_ms();
                    return true;
                }
            };
            let Some(latest) = newer.iter().max_by_key(|r| r.number) else {
                return false;
            };
            match latest.status.as_str() {
                "active" | "superseded" | "recorded" => {
                    p.state = host::SUCCEEDED.into();
                    p.revision_after = latest.number;
                    p.finished_at_ms = now_ms();
                    p.error.clear();
                    self.view.note(
                        "read-back",
                        &format!("{}: revision {} took over", h.name, latest.number),
                    );
                    return true;
                }
                "pending" if tokio::time::Instant::now() < deadline => {
                    self.view
                        .phase(&h.name, "wait", "its deploy is still running on the agent");
                    tokio::time::sleep(POLL).await;
                }
                other => {
                    p.state = host::FAILED.into();
                    p.revision_after = p.revision_before;
                    p.error = format!("revision {} ended {other} (read back from the agent)", latest.number);
                    p.finished_at_ms = now_ms();
                    return true;
                }
            }
        }
    }

    /// Watches the canaries' events for `bake`: a crash, an OOM kill or
    /// turning unhealthy fails that canary.
    async fn bake(&self, names: &[String], bake: Duration) {
        let service = self.snapshot().service;
        self.view
            .note("bake", &format!("watching the canary for {}s", bake.as_secs()));
        let hosts: Vec<SelectedHost> = names
            .iter()
            .filter(|n| self.host_entry(n).state == host::SUCCEEDED)
            .filter_map(|n| self.hosts.get(n).cloned())
            .collect();
        let service = &service;
        let outcomes = fan_out(&hosts, self.settings.parallel, None, |h| async move {
            let req = WatchEventsRequest {
                services: vec![service.clone()],
                ..Default::default()
            };
            let mut stream = h
                .agent
                .call(|ch| async move { ServicesClient::new(ch).watch_events(req).await })
                .await?;
            let until = tokio::time::Instant::now() + bake;
            loop {
                let next = tokio::time::timeout_at(until, h.agent.next(&mut stream)).await;
                match next {
                    Err(_) => return Ok(None),
                    Ok(Err(e)) => return Ok(Some(format!("lost during the bake: {}", e.message()))),
                    Ok(Ok(None)) => return Ok(Some("the agent ended its event stream during the bake".into())),
                    Ok(Ok(Some(ev))) if BAKE_FAILURES.contains(&ev.kind.as_str()) => {
                        return Ok(Some(format!("during the bake: {} ({})", ev.message, ev.kind)));
                    }
                    Ok(Ok(Some(_))) => {}
                }
            }
        })
        .await;
        for o in outcomes {
            let why = match o.result {
                Ok(None) => continue,
                Ok(Some(why)) => why,
                Err(e) => format!("cannot watch it during the bake: {e}"),
            };
            let mut p = self.host_entry(&o.host.name);
            p.state = host::FAILED.into();
            p.error = why;
            self.set_host(p.clone());
            self.view.done(&p);
        }
    }

    /// Rolls every host this rollout changed back. True when all made it.
    async fn roll_back(&self) -> bool {
        let r = self.snapshot();
        let service = r.service.clone();
        let targets: Vec<SelectedHost> = r
            .hosts
            .iter()
            .filter(|p| needs_rollback(p))
            .filter_map(|p| self.hosts.get(&p.host).cloned())
            .collect();
        let service = &service;
        let outcomes = fan_out(
            &targets,
            self.settings.parallel,
            self.settings.host_timeout,
            |h| async move {
                let mut p = self.host_entry(&h.name);
                p.state = host::ROLLING_BACK.into();
                self.set_host(p.clone());
                self.view
                    .phase(&h.name, "rollback", &format!("back to revision {}", p.revision_before));
                let outcome = match change::roll_back(&h.agent, service, p.revision_before).await {
                    Ok(Some(stream)) => change::follow(&h.agent, stream, |phase, m| self.view.phase(&h.name, phase, m))
                        .await
                        .map(|r| (r.success, r.revision, r.error)),
                    Ok(None) => Ok((true, 0, String::new())),
                    Err(e) if e.message().contains("is already active") => Ok((true, p.revision_before, String::new())),
                    Err(e) => Err(e),
                };
                Ok::<_, HostError>(outcome)
            },
        )
        .await;
        let mut all_ok = true;
        for o in outcomes {
            let mut p = self.host_entry(&o.host.name);
            match o.result {
                Ok(Ok((true, revision, _))) => {
                    p.state = host::ROLLED_BACK.into();
                    p.revision_after = revision;
                }
                Ok(Ok((false, _, error))) => {
                    all_ok = false;
                    p.state = host::ROLLBACK_FAILED.into();
                    p.error = format!("rollback failed: {error}");
                }
                Ok(Err(e)) => {
                    all_ok = false;
                    p.state = host::ROLLBACK_FAILED.into();
                    p.error = format!("rollback failed: {}", e.message());
                }
                Err(e) => {
                    all_ok = false;
                    p.state = host::ROLLBACK_FAILED.into();
                    p.error = format!("rollback failed: {e}");
                }
            }
            p.finished_at_ms = now_ms();
            self.set_host(p.clone());
            self.view.done(&p);
        }
        all_ok
    }
}

/// Whether rolling back must touch host `p`: it took the change, or it
/// failed without its agent putting the old revision back (unreachable,
/// too slow).
/// What `service` on `h` reports serving after its deploy
/// (`[health.version]`); empty when the spec asserts no version or the agent
/// cannot say. Only shown, so a failed read is not the host failing.
async fn serving_version(h: &SelectedHost, service: &str) -> String {
    let req = GetRequest {
        service: service.to_owned(),
    };
    h.agent
        .call(|ch| async move { ServicesClient::new(ch).get(req).await })
        .await
        .map(|s| s.version)
        .unwrap_or_default()
}

fn needs_rollback(p: &HostProgress) -> bool {
    match p.state.as_str() {
        host::SUCCEEDED => true,
        // A failed deploy the agent undid itself reports the old revision
        // running; a canary that failed its bake, or a host that timed out
        // or dropped out (revision unknown), does not.
        host::FAILED => p.revision_after != p.revision_before,
        _ => false,
    }
}

/// Asks every host in `hosts` to `action` rollout `id`; the hosts that took
/// it.
pub async fn set_control(
    hosts: &[SelectedHost],
    parallel: usize,
    timeout: Duration,
    id: &str,
    action: &str,
) -> Vec<(String, Result<(), HostError>)> {
    let outcomes = fan_out(hosts, parallel, Some(timeout), |h| async move {
        let req = SetRolloutControlRequest {
            id: id.to_owned(),
            action: action.to_owned(),
        };
        h.agent
            .call(|ch| async move { RolloutsClient::new(ch).set_rollout_control(req).await })
            .await?;
        Ok::<_, HostError>(())
    })
    .await;
    outcomes.into_iter().map(|o| (o.host.name, o.result)).collect()
}

/// Every host's copy of rollout `id` (hosts that do not keep it are left
/// out), as [`record::Copy`]s.
pub async fn copies(hosts: &[SelectedHost], parallel: usize, timeout: Duration, id: &str) -> Vec<record::Copy> {
    let outcomes = fan_out(hosts, parallel, Some(timeout), |h| async move {
        let req = GetRolloutRequest { id: id.to_owned() };
        let state = h
            .agent
            .call(|ch| async move { RolloutsClient::new(ch).get_rollout(req).await })
            .await?;
        Ok::<_, HostError>(state)
    })
    .await;
    outcomes
        .into_iter()
        .filter_map(|o| {
            o.result.ok().map(|state| record::Copy {
                host: o.host.name,
                state,
            })
        })
        .collect()
}
