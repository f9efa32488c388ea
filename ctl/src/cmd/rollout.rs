//! `berthctl rollout`: one change to a service across a fleet, in
//! health-gated batches; and `rollout ls|status|pause|resume|abort`.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use berth_core::units;
use berth_proto::v1::fleet_lock_client::FleetLockClient;
use berth_proto::v1::rollouts_client::RolloutsClient;
use berth_proto::v1::{HostProgress, ListLocksRequest, ListRolloutsRequest, RolloutBatch, RolloutRecord, RolloutState};
use serde_json::json;

use super::{Exit, Global};
use crate::fleet::Selection;
use crate::fleet::fanout::HostError;
use crate::fleet::lock::{self, DEFAULT_TTL};
use crate::output::{Format, Sink, table};
use crate::rollout::change::Change;
use crate::rollout::plan::{self, Size};
use crate::rollout::record::{self, host, status};
use crate::rollout::run::{self, OnFailure, Runner, Settings};
use crate::rollout::view::{self, View, now_ms};

/// The fleet lock every rollout holds on the hosts it touches.
pub const LOCK: &str = "rollout";

/// Roll one change out to a fleet in health-gated batches.
///
/// Give the hosts with --fleet NAME (and --select KEY=VALUE), the service
/// with --service, and exactly one change: --image REF, -f SPEC.toml (a
/// whole spec; also a first deploy on hosts that do not run the service
/// yet), --env KEY=VALUE / --env-file FILE / --unset KEY, or --restart.
///
/// berthctl first asks every agent what the change would do there (image,
/// spec keys, env keys but never values, the nginx site diff) and prints
/// the plan: the canary batch, then batches of --batch hosts. Hosts already
/// at the target are skipped. --dry-run stops there (exit 0: nothing would
/// change, 2: something would, 1: error); otherwise it asks to go on (on a
/// terminal, unless --yes).
///
/// Each host runs its agent's own health-gated deploy. A host fails when
/// its deploy fails, it cannot be reached, or it passes --host-timeout.
/// When more hosts fail than --max-failures allows, no new host starts and
/// every host this rollout changed is rolled back to the revision it had
/// (--on-failure rollback, the default), or left as it is
/// (--on-failure pause).
///
/// The rollout holds the fleet lock "rollout" on every host for its whole
/// run, so a second rollout is refused with who holds it. Its record is
/// kept on every agent it touches: `berthctl rollout status` shows it from
/// any machine, `rollout pause|resume|abort ID` steer it from another
/// terminal, and if this berthctl dies, `rollout resume ID` continues
/// where it stopped without deploying any host twice.
///
/// Examples:
///
///   berthctl rollout --fleet prod --service api --image registry/api:1.4.3 --canary 1 --bake 2m --batch 25%
///
///   berthctl rollout --fleet prod --select role=web --service web --env LOG_LEVEL=debug --dry-run
///
///   berthctl rollout status --fleet prod
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,

    #[command(flatten)]
    start: Start,
}

/// Steer or inspect rollouts.
#[derive(Debug, clap::Subcommand)]
enum Action {
    /// The recent rollouts on the selected hosts, newest first.
    Ls,
    /// One rollout, host by host (default: the newest).
    Status {
        /// The rollout's id (see `rollout ls`).
        id: Option<String>,
    },
    /// Start no new host until `rollout resume` (the running ones finish).
    Pause {
        /// The rollout's id.
        id: String,
    },
    /// Clear a pause; or continue a rollout whose berthctl stopped.
    Resume {
        /// The rollout's id.
        id: String,
        /// Do not ask before taking it over.
        #[arg(long, short)]
        yes: bool,
    },
    /// Stop: no new host starts, then --on-failure (roll back, or leave).
    Abort {
        /// The rollout's id.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
struct Start {
    /// The service to change (default with -f: the spec's name).
    #[arg(long)]
    service: Option<String>,

    /// The change: a new image for the service's current spec.
    #[arg(long, group = "change")]
    image: Option<String>,

    /// The change: a whole spec (TOML); hosts without the service get it.
    #[arg(short = 'f', long = "file", value_name = "SPEC.toml", group = "change")]
    file: Option<PathBuf>,

    /// The change: set env keys (repeatable): KEY=VALUE.
    #[arg(long = "env", value_name = "KEY=VALUE", group = "change")]
    env: Vec<String>,

    /// The change: set the env keys of a file (Docker env-file syntax).
    #[arg(long, value_name = "FILE", group = "change")]
    env_file: Option<PathBuf>,

    /// The change: remove env keys (repeatable).
    #[arg(long, value_name = "KEY", group = "change")]
    unset: Vec<String>,

    /// The change: fresh containers of the same revision.
    #[arg(long, group = "change")]
    restart: bool,

    /// Hosts per batch after the canary: N, or N% of the selection
    /// (rounded up, at least 1).
    #[arg(long, default_value = "1")]
    batch: Size,

    /// Hosts in the canary batch, which goes first and alone.
    #[arg(long, default_value_t = 0)]
    canary: usize,

    /// Watch the canary this long (a crash, an OOM kill or turning
    /// unhealthy fails it) before the next batch, e.g. 2m.
    #[arg(long)]
    bake: Option<units::Duration>,

    /// Pause after the canary batch until `berthctl rollout resume ID`.
    #[arg(long)]
    pause_after_canary: bool,

    /// Wait this long between batches.
    #[arg(long)]
    wait: Option<units::Duration>,

    /// Failures allowed before the rollout stops: N or N% of the hosts.
    #[arg(long, default_value = "0")]
    max_failures: Size,

    /// What happens when failures exceed --max-failures (or on abort).
    #[arg(long, value_enum, default_value_t = OnFailure::Rollback)]
    on_failure: OnFailure,

    /// Longest one host's deploy may take before it counts as failed.
    #[arg(long, default_value = "10m")]
    host_timeout: units::Duration,

    /// Print the plan and what would change on each host; change nothing.
    #[arg(long)]
    dry_run: bool,

    /// Do not ask before starting.
    #[arg(long, short)]
    yes: bool,
}

/// Runs `berthctl rollout`.
pub async fn run(global: &Global, out: &Sink, args: Args) -> anyhow::Result<()> {
    match args.action {
        None => start(global, out, args.start).await,
        Some(Action::Ls) => ls(global, out).await,
        Some(Action::Status { id }) => show(global, out, id).await,
        Some(Action::Pause { id }) => control(global, out, &id, "pause").await,
        Some(Action::Abort { id }) => control(global, out, &id, "abort").await,
        Some(Action::Resume { id, yes }) => resume(global, out, &id, yes).await,
    }
}

/// The change the flags ask for, and the service.
fn change_of(s: &Start) -> anyhow::Result<(Change, String, Option<String>)> {
    let named = |what: &str| -> anyhow::Result<String> {
        s.service
            .clone()
            .ok_or_else(|| anyhow!("{what} needs --service SERVICE: which service to change"))
    };
    if let Some(image) = &s.image {
        return Ok((Change::Image(image.clone()), named("--image")?, None));
    }
    if let Some(path) = &s.file {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let spec = berth_core::spec::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let name = spec.name.as_str().to_owned();
        if let Some(service) = s.service.as_ref().filter(|s| **s != name) {
            bail!("{} is the spec of {name}, not of --service {service}", path.display());
        }
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
        return Ok((Change::Spec(text), name, file));
    }
    if !s.env.is_empty() || s.env_file.is_some() {
        let mut set = BTreeMap::new();
        if let Some(path) = &s.env_file {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let vars = berth_core::envfile::parse(&bytes, path).map_err(|e| anyhow!("{e}"))?;
            for (k, v) in vars.iter() {
                set.insert(k.to_owned(), v.to_owned());
            }
        }
        for kv in &s.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("--env takes KEY=VALUE; got a value without '=' (key or value not shown)"))?;
            set.insert(k.to_owned(), v.to_owned());
        }
        return Ok((
            Change::Env {
                set,
                unset: Vec::new(),
                replace: false,
            },
            named("--env")?,
            None,
        ));
    }
    if !s.unset.is_empty() {
        return Ok((
            Change::Env {
                set: BTreeMap::new(),
                unset: s.unset.clone(),
                replace: false,
            },
            named("--unset")?,
            None,
        ));
    }
    if s.restart {
        return Ok((Change::Restart, named("--restart")?, None));
    }
    bail!("give one change: --image REF, -f SPEC.toml, --env KEY=VALUE, --env-file FILE, --unset KEY or --restart")
}

/// Who we are, for records: the client certificate's name.
fn me(sel: &Selection) -> String {
    sel.hosts
        .first()
        .and_then(|h| h.agent.files.cert.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

fn settings_of(s: &Start, sel: &Selection, budget: usize) -> Settings {
    Settings {
        host_timeout: Some(s.host_timeout.as_std()),
        bake: s.bake.map(units::Duration::as_std).filter(|d| !d.is_zero()),
        pause_after_canary: s.pause_after_canary,
        wait: s.wait.map(units::Duration::as_std).filter(|d| !d.is_zero()),
        on_failure: s.on_failure,
        parallel: sel.parallel,
        call_timeout: sel.timeout,
        budget,
    }
}

/// The settings as a record keeps them, so `resume` runs the same way.
fn options_of(s: &Settings, batch: Size, canary: usize, max_failures: Size) -> BTreeMap<String, String> {
    let secs = |d: Option<Duration>| d.map_or_else(String::new, |d| format!("{}ms", d.as_millis()));
    BTreeMap::from([
        ("batch".to_owned(), batch.to_string()),
        ("canary".to_owned(), canary.to_string()),
        ("max_failures".to_owned(), max_failures.to_string()),
        ("budget".to_owned(), s.budget.to_string()),
        ("bake".to_owned(), secs(s.bake)),
        ("wait".to_owned(), secs(s.wait)),
        ("host_timeout".to_owned(), secs(s.host_timeout)),
        ("pause_after_canary".to_owned(), s.pause_after_canary.to_string()),
        (
            "on_failure".to_owned(),
            match s.on_failure {
                OnFailure::Rollback => "rollback",
                OnFailure::Pause => "pause",
            }
            .to_owned(),
        ),
    ])
}

/// Settings back from a record's options.
fn settings_from(options: &BTreeMap<String, String>, sel: &Selection) -> Settings {
    let dur = |k: &str| {
        options
            .get(k)
            .and_then(|v| v.strip_suffix("ms"))
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    Settings {
        host_timeout: dur("host_timeout"),
        bake: dur("bake"),
        pause_after_canary: options.get("pause_after_canary").is_some_and(|v| v == "true"),
        wait: dur("wait"),
        on_failure: if options.get("on_failure").is_some_and(|v| v == "pause") {
            OnFailure::Pause
        } else {
            OnFailure::Rollback
        },
        parallel: sel.parallel,
        call_timeout: sel.timeout,
        budget: options.get("budget").and_then(|v| v.parse().ok()).unwrap_or(0),
    }
}

async fn start(global: &Global, out: &Sink, s: Start) -> anyhow::Result<()> {
    let (change, service, file) = change_of(&s)?;
    let sel = global.selection().await?;
    let names = sel.names();
    let options = plan::Options {
        batch: s.batch,
        canary: s.canary,
        max_failures: s.max_failures,
    };
    let batches = plan::plan(&names, &options).map_err(|e| anyhow!(e))?;

    // What each agent would do: the plan is theirs.
    let (change_ref, service_ref) = (&change, &service);
    let plans = sel
        .fan_out(|h| async move { Ok::<_, HostError>(change_ref.plan(&h.agent, service_ref).await?) })
        .await;
    let mut failed = Vec::new();
    let mut per_host = Vec::new();
    for o in plans {
        match o.result {
            Ok(p) => per_host.push((o.host.name.clone(), p)),
            Err(e) => failed.push(format!("{}: {e}", o.host.name)),
        }
    }
    if !failed.is_empty() {
        bail!(
            "cannot plan the rollout on {} of {} hosts (nothing changed):\n  {}",
            failed.len(),
            names.len(),
            failed.join("\n  ")
        );
    }

    let settings = settings_of(&s, &sel, batches.budget);
    let id = record::new_id(now_ms(), rand_u16());
    let mut record = RolloutRecord {
        id: id.clone(),
        fleet: sel.origin.clone(),
        service: service.clone(),
        change: change.describe(file.as_deref()),
        options: options_of(&settings, s.batch, s.canary, s.max_failures)
            .into_iter()
            .collect(),
        created_at_ms: now_ms(),
        created_by: me(&sel),
        status: status::PLANNED.into(),
        lock: LOCK.into(),
        batches: batches
            .batches
            .iter()
            .map(|b| RolloutBatch {
                hosts: b.hosts.clone(),
                canary: b.canary,
            })
            .collect(),
        ..RolloutRecord::default()
    };
    change.write_into(&mut record);
    let batch_of: BTreeMap<&str, u32> = batches
        .batches
        .iter()
        .enumerate()
        .flat_map(|(i, b)| b.hosts.iter().map(move |h| (h.as_str(), i as u32)))
        .collect();
    for h in &sel.hosts {
        let p = per_host.iter().find(|(n, _)| *n == h.name).map(|(_, p)| p);
        record.hosts.push(HostProgress {
            host: h.name.clone(),
            address: h.target().to_string(),
            batch: batch_of.get(h.name.as_str()).copied().unwrap_or(0),
            state: if p.is_some_and(|p| p.would_change) {
                host::PENDING
            } else {
                host::UNCHANGED
            }
            .into(),
            revision_before: p.map_or(0, |p| p.revision),
            ..HostProgress::default()
        });
    }
    let view = View::new(out.clone(), global.output);
    view.plan(&record, &per_host, batches.budget)?;
    let would_change = per_host.iter().any(|(_, p)| p.would_change);
    if s.dry_run {
        return if would_change { Err(Exit(2).into()) } else { Ok(()) };
    }
    if !would_change {
        out.err("Nothing to do: every host is at the target already.")?;
        return Ok(());
    }
    if !s.yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() && !confirm("Start the rollout?")? {
        bail!("not started");
    }

    let purpose = format!("rollout {id}: {service} {}", record.change);
    let held = lock::acquire_all(&sel.hosts, LOCK, &purpose, DEFAULT_TTL, sel.timeout)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    view.note(
        "start",
        &format!("rollout {id} holds lock \"{LOCK}\" on {} hosts", sel.hosts.len()),
    );
    let runner = Runner::new(record, &sel.hosts, change, settings, &held, &view).map_err(|e| anyhow!(e))?;
    let done = runner.run().await;
    let _ = held.release().await;
    finish(&view, &done)
}

/// Prints the result; an error unless every host made it.
fn finish(view: &View, done: &RolloutRecord) -> anyhow::Result<()> {
    view.result(done)?;
    if done.status == status::SUCCEEDED {
        Ok(())
    } else {
        Err(anyhow!("rollout {} {}: {}", done.id, done.status, done.detail))
    }
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    if getrandom(&mut b).is_err() {
        let t = now_ms();
        return (t ^ u64::from(std::process::id())) as u16;
    }
    u16::from_le_bytes(b)
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Copies of rollout `id` on the selection, merged; an error naming the
/// selection when none has it.
async fn find(sel: &Selection, id: &str) -> anyhow::Result<(RolloutState, Vec<String>)> {
    let copies = run::copies(&sel.hosts, sel.parallel, sel.timeout, id).await;
    let holders: Vec<String> = copies.iter().map(|c| c.host.clone()).collect();
    let merged = record::merge(&copies).ok_or_else(|| {
        anyhow!(
            "no host of {} keeps rollout {id}; see `berthctl rollout ls`",
            sel.origin
        )
    })?;
    Ok((merged, holders))
}

async fn show(global: &Global, out: &Sink, id: Option<String>) -> anyhow::Result<()> {
    let sel = global.selection().await?;
    let id = match id {
        Some(id) => id,
        None => newest(&sel)
            .await?
            .ok_or_else(|| anyhow!("no rollout is recorded on {}", sel.origin))?,
    };
    let (state, holders) = find(&sel, &id).await?;
    let r = state.record.unwrap_or_default();
    if global.output == Format::Json {
        return Ok(out.document(&json!({
            "id": r.id,
            "fleet": r.fleet,
            "service": r.service,
            "change": r.change,
            "status": r.status,
            "detail": r.detail,
            "created_at_ms": r.created_at_ms,
            "created_by": r.created_by,
            "updated_at_ms": r.updated_at_ms,
            "batch": r.batch,
            "batches": r.batches.iter().map(|b| json!({"hosts": b.hosts, "canary": b.canary})).collect::<Vec<_>>(),
            "control": state.control.as_ref().map(|c| json!({"action": c.action, "by": c.by, "at_ms": c.at_ms})),
            "kept_on": holders,
            "hosts": r.hosts.iter().map(view::host_json).collect::<Vec<_>>(),
        }))?);
    }
    let mut text = format!(
        "Rollout {} of {} ({}) by {}: {}{}\n",
        r.id,
        r.service,
        r.change,
        r.created_by,
        r.status,
        if r.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.detail)
        }
    );
    text.push_str(&format!(
        "batch {}/{}; recorded on {} hosts; updated {}\n",
        (r.batch as usize + 1).min(r.batches.len()),
        r.batches.len(),
        holders.len(),
        view::clock(r.updated_at_ms)
    ));
    if let Some(c) = &state.control {
        text.push_str(&format!(
            "control: {} by {} at {}\n",
            c.action,
            c.by,
            view::clock(c.at_ms)
        ));
    }
    text.push('\n');
    text.push_str(&view::hosts_table(&r));
    out.text(&text)?;
    Ok(())
}

/// Every rollout on the selection, one per id (the newest copy).
async fn all(sel: &Selection) -> anyhow::Result<Vec<(RolloutRecord, usize)>> {
    let outcomes = sel
        .fan_out(|h| async move {
            Ok::<_, HostError>(
                h.agent
                    .call(|ch| async move { RolloutsClient::new(ch).list_rollouts(ListRolloutsRequest {}).await })
                    .await?,
            )
        })
        .await;
    let mut by_id: BTreeMap<String, (RolloutRecord, usize)> = BTreeMap::new();
    for o in outcomes {
        let Ok(list) = o.result else { continue };
        for s in list.rollouts {
            let Some(r) = s.record else { continue };
            let entry = by_id.entry(r.id.clone()).or_insert_with(|| (r.clone(), 0));
            entry.1 += 1;
            if r.updated_at_ms > entry.0.updated_at_ms {
                entry.0 = r;
            }
        }
    }
    let mut v: Vec<(RolloutRecord, usize)> = by_id.into_values().collect();
    v.sort_by(|a, b| (b.0.created_at_ms, &b.0.id).cmp(&(a.0.created_at_ms, &a.0.id)));
    Ok(v)
}

async fn newest(sel: &Selection) -> anyhow::Result<Option<String>> {
    Ok(all(sel).await?.into_iter().next().map(|(r, _)| r.id))
}

async fn ls(global: &Global, out: &Sink) -> anyhow::Result<()> {
    let sel = global.selection().await?;
    let list = all(&sel).await?;
    if global.output == Format::Json {
        let docs: Vec<_> = list
            .iter()
            .map(|(r, n)| {
                json!({
                    "id": r.id, "service": r.service, "change": r.change, "status": r.status,
                    "detail": r.detail, "created_at_ms": r.created_at_ms, "created_by": r.created_by,
                    "fleet": r.fleet, "kept_on": n,
                })
            })
            .collect();
        return Ok(out.document(&json!(docs))?);
    }
    if list.is_empty() {
        out.err(&format!("No rollouts recorded on {}.", sel.origin))?;
        return Ok(());
    }
    let mut rows = vec![vec![
        "ID".into(),
        "SERVICE".into(),
        "CHANGE".into(),
        "STATUS".into(),
        "STARTED".into(),
        "BY".into(),
        "DETAIL".into(),
    ]];
    for (r, _) in &list {
        rows.push(vec![
            r.id.clone(),
            r.service.clone(),
            r.change.clone(),
            r.status.clone(),
            view::clock(r.created_at_ms),
            r.created_by.clone(),
            r.detail.clone(),
        ]);
    }
    out.text(&table(&rows))?;
    Ok(())
}

async fn control(global: &Global, out: &Sink, id: &str, action: &str) -> anyhow::Result<()> {
    let sel = global.selection().await?;
    let (state, holders) = find(&sel, id).await?;
    let r = state.record.unwrap_or_default();
    if record::is_final(&r.status) {
        bail!("rollout {id} has ended ({}); nothing to {action}", r.status);
    }
    let hosts: Vec<_> = sel
        .hosts
        .iter()
        .filter(|h| holders.contains(&h.name))
        .cloned()
        .collect();
    let results = run::set_control(&hosts, sel.parallel, sel.timeout, id, action).await;
    let ok = results.iter().filter(|(_, r)| r.is_ok()).count();
    for (h, r) in &results {
        if let Err(e) = r {
            out.err(&format!("{h}: {e}"))?;
        }
    }
    if ok == 0 {
        bail!("no host took the {action}");
    }
    let what = match action {
        "pause" => "no new host starts until `berthctl rollout resume`",
        "abort" => "it stops, then rolls back or leaves the hosts (its --on-failure)",
        _ => "it goes on",
    };
    out.out(&format!(
        "Asked rollout {id} to {action} on {ok} of {} hosts: {what}.",
        results.len()
    ))?;
    Ok(())
}

/// Whether a live berthctl runs rollout `id`: its lease on some host is
/// renewed within one TTL. Waits at most that long to tell; `false` once
/// the lease lapsed (its berthctl died) or when there is none.
async fn runner_alive(sel: &Selection, id: &str, out: &Sink) -> anyhow::Result<bool> {
    let tag = format!("rollout {id}:");
    let mut first_seen: Option<u64> = None;
    let give_up = tokio::time::Instant::now() + DEFAULT_TTL + Duration::from_secs(2);
    loop {
        let outcomes = sel
            .fan_out(|h| async move {
                Ok::<_, HostError>(
                    h.agent
                        .call(|ch| async move { FleetLockClient::new(ch).list_locks(ListLocksRequest {}).await })
                        .await?,
                )
            })
            .await;
        let lease = outcomes
            .into_iter()
            .filter_map(|o| o.result.ok())
            .flat_map(|l| l.leases)
            .filter(|l| l.name == LOCK && l.purpose.starts_with(&tag))
            .max_by_key(|l| l.renewed_at_ms.max(l.acquired_at_ms));
        let Some(lease) = lease else {
            return Ok(false);
        };
        let renewed = lease.renewed_at_ms.max(lease.acquired_at_ms);
        match first_seen {
            None => {
                out.err(&format!(
                    "Rollout {id}'s lease is held by {} ({}); waiting to see whether that berthctl still renews it...",
                    lease.holder, lease.client
                ))?;
                first_seen = Some(renewed);
            }
            Some(seen) if renewed > seen => return Ok(true),
            Some(_) => {}
        }
        if tokio::time::Instant::now() > give_up {
            // Not renewed for a whole TTL: its holder is gone.
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn resume(global: &Global, out: &Sink, id: &str, yes: bool) -> anyhow::Result<()> {
    let sel = global.selection().await?;
    let (state, holders) = find(&sel, id).await?;
    let mut r = state.record.unwrap_or_default();
    if record::is_final(&r.status) {
        bail!("rollout {id} has ended ({}); nothing to resume", r.status);
    }
    let hosts: Vec<_> = sel
        .hosts
        .iter()
        .filter(|h| holders.contains(&h.name))
        .cloned()
        .collect();
    run::set_control(&hosts, sel.parallel, sel.timeout, id, "resume").await;
    if runner_alive(&sel, id, out).await? {
        out.out(&format!(
            "Resumed rollout {id}: the berthctl running it goes on (`berthctl rollout status {id}`)."
        ))?;
        return Ok(());
    }
    // Nobody runs it: take it over here.
    let change = Change::from_record(&r).map_err(|e| anyhow!(e))?;
    let mut settings = settings_from(&r.options.clone().into_iter().collect(), &sel);
    // Failures already counted were accepted by whoever resumes.
    settings.budget = settings.budget.max(record::failures(&r));
    if !yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let q = format!(
            "Take over rollout {id} ({} of {}: {})?",
            r.change,
            r.service,
            record::counts_line(&r)
        );
        if !confirm(&q)? {
            bail!("not resumed");
        }
    }
    let purpose = format!("rollout {id}: {} {}", r.service, r.change);
    let members: Vec<_> = sel
        .hosts
        .iter()
        .filter(|h| r.hosts.iter().any(|p| p.host == h.name))
        .cloned()
        .collect();
    let held = lock::acquire_all(&members, LOCK, &purpose, DEFAULT_TTL, sel.timeout)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let view = View::new(out.clone(), global.output);
    view.note(
        "resume",
        &format!(
            "took over rollout {id} at batch {}/{}",
            r.batch as usize + 1,
            r.batches.len()
        ),
    );
    r.status = status::RUNNING.into();
    let runner = Runner::new(r, &members, change, settings, &held, &view).map_err(|e| anyhow!(e))?;
    let done = runner.run().await;
    let _ = held.release().await;
    finish(&view, &done)
}
