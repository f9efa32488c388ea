//! Edits of env files made outside the agent (a person, a config-management
//! tool), and the env loop that notices them.
//!
//! The loop runs on the tracker, fed by the env-dir watcher
//! ([`crate::envwatch`], a thread) and a slower resync. For each service
//! whose file's (or, for a layered env, files') fingerprint differs from
//! the last one handled (the owner keeps them), it runs one check — the
//! checks of one burst one after the other on one task, so a shared file
//! rolls its services one by one, health-gated — that takes the
//! service's permit, re-reads the file and either refuses it (event
//! `env-rejected`, naming the file and line), or records it as a revision
//! and applies it by the spec's `env_change` policy. The fingerprint is
//! updated before acting and after the agent's own writes, so no write —
//! the agent's, or a refused or failed edit — is handled twice. The loop
//! ends on cancel; checks that got their permit finish (they are short, or a
//! health-gated rollout that settles on shutdown), those still waiting for
//! one are refused.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use super::Supervisor;
use super::deploy::ProgressTx;
use crate::envfiles;
use crate::envwatch::{self, EnvWatch};
use crate::events::Severity;
use crate::state::{Revision, ServiceRecord};
use berth_core::envfile::{self, Vars};
use berth_core::spec::ServiceSpec;

/// How often every env file is looked at even without watcher events:
/// covers a watch that failed or lost events. Reading a few small files is
/// cheap, and nothing happens unless a file's fingerprint changed.
const ENV_RESYNC: Duration = Duration::from_secs(30);
/// Watcher messages queued for the env loop. Each one names files to check
/// and a check re-reads everything, so a short queue loses nothing: the
/// watcher thread waits (and merges later events) while it is full.
const WATCH_QUEUE: usize = 8;

/// Creates the env dir if needed and starts the watcher thread. `None`
/// when the dir cannot be watched; the resync still notices edits then.
pub(super) fn watch_env_dir(sup: &Supervisor, cancel: CancellationToken) -> Option<mpsc::Receiver<EnvWatch>> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = sup.env_dir();
    let started = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let (tx, rx) = mpsc::channel(WATCH_QUEUE);
            envwatch::spawn(dir.to_owned(), tx, sup.tracker(), cancel).map_err(|e| e.to_string())?;
            Ok(rx)
        });
    match started {
        Ok(rx) => {
            info!(env_dir = %dir.display(), "Watching env files.");
            Some(rx)
        }
        Err(e) => {
            sup.bus().publish(
                "env-watch-failed",
                "",
                0,
                Severity::Warning,
                format!(
                    "Cannot watch env dir {} ({e}); hand edits are noticed within {}s instead.",
                    dir.display(),
                    ENV_RESYNC.as_secs()
                ),
            );
            None
        }
    }
}

/// Turns watcher messages and the resync into env file checks. The first
/// resync tick is immediate: files edited while the agent was down are
/// handled at start.
pub(super) async fn run(sup: Supervisor, mut watch: Option<mpsc::Receiver<EnvWatch>>, cancel: CancellationToken) {
    let mut resync = tokio::time::interval(ENV_RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = async {
            match watch.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = resync.tick() => schedule(&sup, None).await,
            msg = next => match msg {
                Some(EnvWatch::Changed(files)) => schedule(&sup, Some(&files)).await,
                Some(EnvWatch::Rescan(why)) => {
                    info!(why, "Rescanning env files.");
                    schedule(&sup, None).await;
                }
                None => {
                    warn!("The env dir watcher stopped; relying on the periodic resync.");
                    watch = None;
                }
            },
        }
    }
}

/// Starts the checks of each service whose env file is among `files` (all
/// services when `None`) and differs from what was last handled. The
/// checks of one call run one after the other on one task, so an edit of
/// a file several services share rolls them service by service, each
/// health-gated; when one of them fails its gate, the others keep their
/// env (event `env-rollout-halted`) until the next edit.
async fn schedule(sup: &Supervisor, files: Option<&BTreeSet<String>>) {
    let snap = sup.snapshot();
    let mut wanted = Vec::new();
    for (name, record) in snap.records() {
        let Some(spec) = record.active_revision().map(|r| &r.spec) else {
            continue;
        };
        let names = spec.env_file_names();
        if files.is_some_and(|f| !names.iter().any(|n| f.contains(n))) {
            continue;
        }
        // A file that cannot be read counts as changed, so the check reports it.
        let print = env_print(sup, spec);
        // One waiting check per service is enough: it reads the file only
        // once it holds the permit.
        if !sup.env_check_wanted(name, print).await.unwrap_or(false) {
            continue;
        }
        wanted.push(name.clone());
    }
    if wanted.is_empty() {
        return;
    }
    let tracker = sup.tracker().clone();
    let sup = sup.clone();
    tracker.spawn(async move {
        let mut failed: Option<String> = None;
        for name in wanted {
            let span = info_span!("env-check", service = %name);
            match &failed {
                Some(first) => halt_env_check(&sup, &name, first).instrument(span).await,
                None => {
                    if check_env_file(sup.clone(), name.clone()).instrument(span).await == Checked::Failed {
                        failed = Some(name);
                    }
                }
            }
        }
    });
}

/// The fingerprint of what `spec`'s env is read from: its env file, or
/// all the files of a layered env. `None` when a file cannot be read.
fn env_print(sup: &Supervisor, spec: &ServiceSpec) -> Option<u64> {
    if spec.layered_env() {
        return sup
            .layered_files(spec)
            .ok()
            .map(|files| envfiles::fingerprint_all(&files));
    }
    envfiles::read_bytes(&sup.env_path(spec))
        .ok()
        .map(|bytes| envfiles::fingerprint(bytes.as_deref()))
}

/// What one env check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Nothing to do, refused, or applied.
    Done,
    /// The changed env was tried and failed its health gate (or could not
    /// be applied); the service keeps its earlier env.
    Failed,
}

/// A check not run because an earlier service of the same batch failed
/// with its changed env: this one's edit counts as handled, so it is not
/// retried until its files change again or it is deployed.
async fn halt_env_check(sup: &Supervisor, service: &str, failed: &str) {
    let _ = sup.env_check_started(service).await;
    let Some(spec) = sup
        .snapshot()
        .record(service)
        .and_then(|r| r.active_revision().map(|r| r.spec.clone()))
    else {
        return;
    };
    let Some(print) = env_print(sup, &spec) else { return };
    if !matches!(sup.env_seen(service, print).await, Ok(previous) if previous != Some(print)) {
        return;
    }
    let revision = sup.snapshot().record(service).map_or(0, |r| r.active);
    warn!(failed, "Not applying the env edit: an earlier service failed with it.");
    sup.bus().publish(
        "env-rollout-halted",
        service,
        revision,
        Severity::Warning,
        format!(
            "Did not apply the edit of {}: {failed} failed its health gate with the edited env just before. \
             {service} keeps the env of revision {revision}; fix the file (or deploy {service}) to apply it.",
            spec.env_file_names().join(", ")
        ),
    );
}

/// Handles a changed env file of `service`: refuses it if invalid, else
/// records and applies it by the `env_change` policy.
async fn check_env_file(sup: Supervisor, service: String) -> Checked {
    let progress = ProgressTx::new(None);
    let permit = sup.acquire(&service, &progress).await;
    // Waiting is over either way: a later edit schedules a new check.
    let _ = sup.env_check_started(&service).await;
    let Ok(_permit) = permit else { return Checked::Done };
    let Some(record) = sup.snapshot().record(&service).cloned() else {
        return Checked::Done;
    };
    let Some(active) = record.active_revision().cloned() else {
        return Checked::Done;
    };
    if active.spec.layered_env() {
        return check_layered(&sup, &service, &record, &active, progress).await;
    }
    let path = sup.env_path(&active.spec);
    let bytes = match read_settled(&path).await {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "Cannot read the env file; will look again at the next resync.");
            return Checked::Done;
        }
    };
    let print = envfiles::fingerprint(bytes.as_deref());
    match sup.env_seen(&service, print).await {
        Ok(previous) if previous != Some(print) => {}
        _ => return Checked::Done,
    }
    if bytes.is_some() {
        keep_private(&path);
    }
    let parsed = envfile::parse(bytes.as_deref().unwrap_or_default(), &path);
    let env_rev = record.env_revision().unwrap_or(&active).number;
    let vars = match parsed {
        Ok(v) => v,
        Err(e) => {
            reject(&sup, &service, &path.display().to_string(), &e.to_string(), env_rev);
            return Checked::Done;
        }
    };
    let Some(current) = current_kept_env(&record) else {
        // A revision from before envs were kept: its containers run with
        // this file, so it becomes the revision's env, with no restart.
        if let Err(e) = sup.adopt_env(&service, active.number, vars).await {
            warn!(error = %e, "Cannot record the env of the active revision.");
        }
        return Checked::Done;
    };
    if vars == current {
        return Checked::Done;
    }
    apply_edit(
        &sup,
        &service,
        &active.spec,
        current,
        vars,
        &path.display().to_string(),
        env_rev,
        progress,
    )
    .await
}

/// [`check_env_file`] for a layered env: every file is re-read (once
/// settled), merged over the inline values and, if the result differs
/// from the revision's env, applied as a new revision.
async fn check_layered(
    sup: &Supervisor,
    service: &str,
    record: &ServiceRecord,
    active: &Revision,
    progress: ProgressTx,
) -> Checked {
    let mut files = Vec::new();
    for name in active.spec.env_file_names() {
        let path = sup.env_dir().join(name);
        match read_settled(&path).await {
            Ok(bytes) => files.push((path, bytes)),
            Err(e) => {
                warn!(error = %e, "Cannot read an env file; will look again at the next resync.");
                return Checked::Done;
            }
        }
    }
    let print = envfiles::fingerprint_all(&files);
    match sup.env_seen(service, print).await {
        Ok(previous) if previous != Some(print) => {}
        _ => return Checked::Done,
    }
    for (path, bytes) in &files {
        if bytes.is_some() {
            keep_private(path);
        }
    }
    let shown: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
    let env_rev = record.env_revision().unwrap_or(active).number;
    let vars = match envfiles::merge_layered(&active.spec.env, &files) {
        Ok(v) => v,
        Err(e) => {
            reject(sup, service, &shown.join(", "), &e.to_string(), env_rev);
            return Checked::Done;
        }
    };
    let current = match current_kept_env(record) {
        Some(current) => current,
        None => {
            if let Err(e) = sup.adopt_env(service, active.number, vars).await {
                warn!(error = %e, "Cannot record the env of the active revision.");
            }
            return Checked::Done;
        }
    };
    if vars == current {
        return Checked::Done;
    }
    apply_edit(
        sup,
        service,
        &active.spec,
        current,
        vars,
        &shown.join(", "),
        env_rev,
        progress,
    )
    .await
}

/// Refuses an edit that breaks the env-file syntax: event, audit record.
fn reject(sup: &Supervisor, service: &str, files: &str, error: &str, env_rev: u64) {
    let message = rejected_message(service, error, env_rev);
    sup.bus()
        .publish("env-rejected", service, env_rev, Severity::Warning, message);
    sup.audit().record(
        &crate::audit::Actor::agent("file"),
        "env file edited",
        service,
        files,
        &format!("rejected: {error}"),
    );
}

/// Applies an edited env by the spec's `env_change` policy.
#[allow(clippy::too_many_arguments)]
async fn apply_edit(
    sup: &Supervisor,
    service: &str,
    spec: &ServiceSpec,
    current: Vars,
    vars: Vars,
    files: &str,
    env_rev: u64,
    progress: ProgressTx,
) -> Checked {
    let keys = envfile::changed_keys(&current, &vars);
    info!(keys = ?keys, files, "The env file was edited; applying it.");
    match sup
        .apply_env_permitted(
            spec.clone(),
            current,
            vars,
            "env file edited",
            &crate::audit::Actor::agent("file"),
            progress,
        )
        .await
    {
        Ok(outcome) if outcome.success => Checked::Done,
        Ok(_) => Checked::Failed,
        Err(e) => {
            sup.bus().publish(
                "env-rejected",
                service,
                env_rev,
                Severity::Warning,
                format!("Cannot apply the edit of {files}: {e}. {service} keeps the env of revision {env_rev}."),
            );
            Checked::Failed
        }
    }
}

/// Reads an env file once it has not been modified for [`envwatch::QUIET`].
/// A writer that truncates and then writes (an editor, `cat > file`) can be
/// caught in between when an earlier burst's check lands there, and an
/// empty or half file is valid syntax: applying it would deploy a partial
/// env. The writer's own events bring a fresh check if it pauses longer.
async fn read_settled(path: &Path) -> Result<Option<Vec<u8>>, envfiles::EnvError> {
    for _ in 0..20 {
        let age = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        match age {
            Some(age) if age < envwatch::QUIET => tokio::time::sleep(envwatch::QUIET - age).await,
            // Old enough, missing, or dated in the future (clock change).
            _ => break,
        }
    }
    envfiles::read_bytes(path)
}

/// Puts a hand-written env file back to mode 0600 (an editor or tool that
/// replaces the file may have made it world-readable).
fn keep_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else { return };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Ok(()) => warn!(file = %path.display(), was = format!("{mode:o}"), "Set the env file's mode back to 0600."),
        Err(e) => warn!(file = %path.display(), error = %e, "Cannot set the env file's mode to 0600."),
    }
}

/// The env of the service's newest active or recorded revision, if kept.
fn current_kept_env(record: &ServiceRecord) -> Option<Vars> {
    record.env_revision().and_then(|r| r.env.clone())
}

/// The `env-rejected` message: file and line from the parse error, never a
/// value.
fn rejected_message(service: &str, e: &str, revision: u64) -> String {
    format!(
        "Refused the edit of the env file: {e}. {service} keeps the env of revision {revision}; \
         fix the file, or replace it with berthctl env import."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rejection_message_points_at_the_line() {
        let e = envfile::parse(b"A=1\nhunter2\n", Path::new("/etc/berth/env/web.env")).expect_err("bad");
        let m = rejected_message("web", &e.to_string(), 3);
        assert!(m.contains("/etc/berth/env/web.env:2"), "{m}");
        assert!(m.contains("revision 3"), "{m}");
        assert!(!m.contains("hunter2"), "{m}");
    }
}
