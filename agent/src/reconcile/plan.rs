//! The pure planner: desired state, what Docker shows and what nginx's
//! sites dir holds in, a list of [`Action`]s out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use crate::docker::{ContainerInfo, HolderState, SoftLimits};
use crate::nginx;
use crate::supervisor::{soft_limits, upstream_of};
use berth_core::spec::{RestartPolicy, ServiceSpec};

/// One service as it should be.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    /// The revision that should run.
    pub revision: u64,
    /// Its spec.
    pub spec: &'a ServiceSpec,
    /// Maintenance mode: its nginx site answers 503.
    pub maintenance: bool,
}

/// What nginx's sites dir holds, read just before planning.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SiteFiles {
    /// The content of each proxied desired service's site file, if it has one.
    pub current: BTreeMap<String, String>,
    /// Services with a site file berth wrote (it carries berth's header).
    pub managed: BTreeSet<String>,
}

/// What the supervisor knows beyond Docker's view.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// Services with a deploy, restart or removal under way.
    pub busy: HashSet<String>,
    /// Containers whose health check failed `retries` times in a row.
    pub unhealthy: HashSet<String>,
    /// Services that may not be restarted before this instant (backoff).
    pub not_before: HashMap<String, Instant>,
    /// Containers whose last counted health verdict was a pass.
    pub healthy: HashSet<String>,
}

/// How soon to look again while a stale container is kept running until
/// the desired one is up.
pub const HELD_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// One step toward the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No container of the desired revision exists: make and start one.
    Create {
        /// Service.
        service: String,
        /// Revision to run.
        revision: u64,
        /// Why, for events.
        why: String,
    },
    /// A stopped container of the desired revision: start it again.
    Start {
        /// Service.
        service: String,
        /// Container id.
        container: String,
        /// Why, for events.
        why: String,
    },
    /// A running container that stays unhealthy: replace it with a fresh one.
    Replace {
        /// Service.
        service: String,
        /// The unhealthy container.
        container: String,
        /// Revision to run.
        revision: u64,
        /// Why, for events.
        why: String,
    },
    /// Limits differ from the spec (changed by hand): set them back.
    UpdateLimits {
        /// Service.
        service: String,
        /// Container id.
        container: String,
        /// Memory limit in bytes, None = unlimited.
        memory: Option<u64>,
        /// CPU limit in nano-CPUs, None = unlimited.
        nano_cpus: Option<i64>,
        /// Memory reservation, memory+swap and pids limit.
        soft: SoftLimits,
        /// What was found, for events.
        why: String,
    },
    /// A berth container that should not exist.
    Remove {
        /// Its service, if labelled.
        service: Option<String>,
        /// Container id.
        container: String,
        /// Why, for events.
        why: String,
    },
    /// A proxied service's nginx site is missing or not what its running
    /// container needs (edited by hand, or the container moved): write it.
    WriteSite {
        /// Service.
        service: String,
        /// Its active revision, for events.
        revision: u64,
        /// The whole site file.
        content: String,
        /// Why, for events.
        why: String,
    },
    /// A berth site of a service that is no longer desired.
    RemoveSite {
        /// Service.
        service: String,
    },
}

impl Action {
    /// The service the action is about; `None` for an unlabelled container.
    pub fn service(&self) -> Option<&str> {
        match self {
            Action::Create { service, .. }
            | Action::Start { service, .. }
            | Action::Replace { service, .. }
            | Action::UpdateLimits { service, .. }
            | Action::WriteSite { service, .. }
            | Action::RemoveSite { service } => Some(service),
            Action::Remove { service, .. } => service.as_deref(),
        }
    }
}

/// The actions to take now, and when to look again if a backoff is pending.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// In order.
    pub actions: Vec<Action>,
    /// Earliest instant a backoff expires, if any.
    pub wake_at: Option<Instant>,
}

/// Decides what to do: containers first, then nginx sites. Pure: same
/// inputs, same plan.
pub fn plan(
    desired: &BTreeMap<String, Desired<'_>>,
    observed: &[ContainerInfo],
    ctx: &Context,
    sites: &SiteFiles,
    now: Instant,
) -> Plan {
    let mut out = Plan::default();
    let mut by_service: BTreeMap<&str, Vec<&ContainerInfo>> = BTreeMap::new();
    let mut holders = Vec::new();
    for c in observed {
        match (c.service.as_deref(), c.holder_of.as_deref()) {
            (Some(s), _) => by_service.entry(s).or_default().push(c),
            (None, Some(of)) => holders.push((of, c)),
            (None, None) => out.actions.push(Action::Remove {
                service: None,
                container: c.id.clone(),
                why: format!("container {} is labelled berth.managed but names no service", c.name),
            }),
        }
    }

    for (name, containers) in &by_service {
        if ctx.busy.contains(*name) {
            continue;
        }
        if !desired.contains_key(*name) {
            for c in containers {
                out.actions.push(Action::Remove {
                    service: Some((*name).to_owned()),
                    container: c.id.clone(),
                    why: format!("service {name} is no longer desired"),
                });
            }
        }
    }

    let site_actions = plan_sites(desired, observed, ctx, sites);
    for (name, want) in desired {
        if ctx.busy.contains(name) {
            continue;
        }
        let mine = by_service.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let (keep, stale): (Vec<&ContainerInfo>, Vec<&ContainerInfo>) =
            mine.iter().partition(|c| c.revision == Some(want.revision));
        // A stale container that still runs (left by a deploy the agent
        // did not live to finish) may be all that serves: it is stopped only
        // once the desired one is up, and nginx points at it, so its stop
        // timeout is never an outage. Unless it holds a host port the
        // desired one pins: then it has to go first.
        let up = keep.iter().any(|c| {
            c.running && (want.spec.health.is_none() || ctx.healthy.contains(&c.id)) && !ctx.unhealthy.contains(&c.id)
        });
        let switching = site_actions.iter().any(|a| a.service() == Some(name.as_str()));
        // A desired container that is never started again (restart =
        // "never") is not waited for.
        let coming = keep.iter().any(|c| c.running) || want.spec.restart != RestartPolicy::Never;
        let (stale, held): (Vec<&ContainerInfo>, Vec<&ContainerInfo>) = stale.into_iter().partition(|c| {
            // One that joined a network holder may share it with the
            // desired one (a recreate service), whose ports it holds.
            !c.running || !coming || (up && !switching) || holds_pinned_port(c, want.spec) || c.joined.is_some()
        });
        if !held.is_empty() {
            wake(&mut out, now + HELD_RECHECK);
        }
        for c in stale {
            out.actions.push(Action::Remove {
                service: Some(name.clone()),
                container: c.id.clone(),
                why: format!(
                    "revision {} is not the desired revision {}",
                    c.revision.map_or_else(|| "?".into(), |r| r.to_string()),
                    want.revision
                ),
            });
        }

        // Keep one: a running one if any (the longest-running, so an adopted
        // container survives an agent restart), else the newest.
        let mut keep = keep;
        keep.sort_by_key(|c| {
            (
                !c.running,
                if c.running {
                    c.started_at_ms.unwrap_or(0)
                } else {
                    -c.started_at_ms.unwrap_or(0)
                },
            )
        });
        let Some((primary, duplicates)) = keep.split_first() else {
            match ctx.not_before.get(name) {
                Some(t) if *t > now => wake(&mut out, *t),
                _ => out.actions.push(Action::Create {
                    service: name.clone(),
                    revision: want.revision,
                    why: "no container of the desired revision exists".into(),
                }),
            }
            continue;
        };
        for c in duplicates {
            out.actions.push(Action::Remove {
                service: Some(name.clone()),
                container: c.id.clone(),
                why: format!("duplicate container of revision {}", want.revision),
            });
        }

        if primary.running {
            // A joined container whose holder stopped (or was restarted
            // under it) has lost its network; it cannot get it back in
            // place.
            let why = if primary.network_lost() {
                Some("its network holder stopped or was restarted")
            } else if ctx.unhealthy.contains(&primary.id) {
                Some("the container stays unhealthy")
            } else {
                None
            };
            if let Some(why) = why {
                match ctx.not_before.get(name) {
                    Some(t) if *t > now => wake(&mut out, *t),
                    _ => out.actions.push(Action::Replace {
                        service: name.clone(),
                        container: primary.id.clone(),
                        revision: want.revision,
                        why: why.into(),
                    }),
                }
                continue;
            }
            let memory = want.spec.resources.memory.map(|m| m.bytes());
            let nano_cpus = want.spec.resources.cpus.map(|c| c.nano_cpus());
            let have_memory = u64::try_from(primary.memory_bytes).ok().filter(|m| *m > 0);
            let have_cpus = Some(primary.nano_cpus).filter(|n| *n > 0);
            let soft = soft_limits(want.spec);
            let have_soft = SoftLimits {
                memory_reservation: u64::try_from(primary.memory_reservation_bytes).ok().filter(|m| *m > 0),
                // Only compared when the spec sets it: by default it follows memory.
                memory_swap: soft
                    .memory_swap
                    .and(u64::try_from(primary.memory_swap_bytes).ok().filter(|m| *m > 0)),
                pids_limit: u32::try_from(primary.pids_limit).ok().filter(|n| *n > 0),
            };
            if have_memory != memory || have_cpus != nano_cpus || have_soft != soft {
                out.actions.push(Action::UpdateLimits {
                    service: name.clone(),
                    container: primary.id.clone(),
                    memory,
                    nano_cpus,
                    soft,
                    why: format!(
                        "limits drifted (memory {} → {}, cpus {} → {}, memory_reservation {} → {}, \
                         memory_swap {} → {}, pids_limit {} → {})",
                        show_bytes(have_memory),
                        show_bytes(memory),
                        show_cpus(have_cpus),
                        show_cpus(nano_cpus),
                        show_bytes(have_soft.memory_reservation),
                        show_bytes(soft.memory_reservation),
                        show_bytes(have_soft.memory_swap),
                        show_bytes(soft.memory_swap),
                        show_count(have_soft.pids_limit),
                        show_count(soft.pids_limit),
                    ),
                });
            }
            continue;
        }

        // Stopped: follow the restart policy.
        let restart = match want.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => primary.exit_code != Some(0),
            RestartPolicy::Never => false,
        };
        if !restart {
            continue;
        }
        match ctx.not_before.get(name) {
            Some(t) if *t > now => wake(&mut out, *t),
            _ => {
                let why = match (primary.oom_killed, primary.exit_code) {
                    (true, _) => "it was OOM-killed".to_owned(),
                    (false, Some(code)) => format!("it exited with code {code}"),
                    (false, None) => format!("it is {}", primary.state),
                };
                // Docker resolved its network to a holder that is gone: it
                // can never start again, a fresh one can.
                if primary.joined.as_ref().is_some_and(|j| j.state == HolderState::Gone) {
                    out.actions.push(Action::Replace {
                        service: name.clone(),
                        container: primary.id.clone(),
                        revision: want.revision,
                        why: format!("{why} and its network holder is gone"),
                    });
                    continue;
                }
                out.actions.push(Action::Start {
                    service: name.clone(),
                    container: primary.id.clone(),
                    why,
                });
            }
        }
    }
    out.actions.extend(site_actions);
    // A network holder goes once no container joins it (the service was
    // removed, or a deploy changed its ports or network), after the
    // containers removed above.
    for (of, holder) in holders {
        let joined = observed
            .iter()
            .any(|c| c.joined.as_ref().is_some_and(|j| j.holder == holder.id));
        if !joined && !ctx.busy.contains(of) {
            out.actions.push(Action::Remove {
                service: Some(of.to_owned()),
                container: holder.id.clone(),
                why: format!("no container of {of} joins its network holder {}", holder.name),
            });
        }
    }
    out
}

/// Whether `c` has a host port bound that `spec` pins, so a container of
/// `spec` cannot start while `c` runs.
fn holds_pinned_port(c: &ContainerInfo, spec: &ServiceSpec) -> bool {
    spec.ports
        .iter()
        .filter_map(|p| p.host_port)
        .any(|pinned| c.host_ports.iter().any(|bound| bound.host_port == pinned))
}

/// Makes each proxied service's nginx site match its running container
/// (restoring a site edited or removed by hand, following a container whose
/// address changed) and removes the sites of services no longer desired.
/// Services a change holds are left to it.
fn plan_sites(
    desired: &BTreeMap<String, Desired<'_>>,
    observed: &[ContainerInfo],
    ctx: &Context,
    sites: &SiteFiles,
) -> Vec<Action> {
    let mut out = Vec::new();
    for (name, want) in desired {
        if ctx.busy.contains(name) {
            continue;
        }
        let Some(proxy) = want.spec.proxy.as_ref() else {
            continue;
        };
        let Some(primary) = observed
            .iter()
            .find(|c| c.running && c.service.as_deref() == Some(name) && c.revision == Some(want.revision))
        else {
            continue;
        };
        let Some(upstream) = upstream_of(primary, want.spec) else {
            continue;
        };
        let content = nginx::render(want.spec, proxy, upstream, want.maintenance);
        let why = match sites.current.get(name) {
            Some(had) if *had == content => continue,
            Some(_) => "the site file differed from the spec (edited by hand, or the container moved)",
            None => "the site file was missing",
        };
        out.push(Action::WriteSite {
            service: name.clone(),
            revision: want.revision,
            content,
            why: why.to_owned(),
        });
    }
    for stale in &sites.managed {
        if !desired.contains_key(stale) && !ctx.busy.contains(stale) {
            out.push(Action::RemoveSite { service: stale.clone() });
        }
    }
    out
}

fn wake(plan: &mut Plan, at: Instant) {
    plan.wake_at = Some(plan.wake_at.map_or(at, |w| w.min(at)));
}

fn show_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "none".into(), |b| format!("{}m", b / (1024 * 1024)))
}

fn show_count(n: Option<u32>) -> String {
    n.map_or_else(|| "none".into(), |n| n.to_string())
}

fn show_cpus(n: Option<i64>) -> String {
    n.map_or_else(|| "none".into(), |n| format!("{}", n as f64 / 1e9))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use proptest::prelude::*;

    fn spec(text: &str) -> ServiceSpec {
        berth_core::spec::parse(&format!("name = \"web\"\nimage = \"app:v1\"\n{text}")).expect("spec")
    }

    fn container(id: &str, service: &str, revision: u64, running: bool) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: format!("{service}-r{revision}-{id}"),
            image: "app:v1".into(),
            labels: Default::default(),
            service: Some(service.into()),
            revision: Some(revision),
            state: if running { "running".into() } else { "exited".into() },
            running,
            exit_code: if running { None } else { Some(1) },
            oom_killed: false,
            started_at_ms: Some(1000),
            finished_at_ms: None,
            ip: None,
            host_ports: vec![],
            memory_bytes: 0,
            memory_swap_bytes: 0,
            nano_cpus: 0,
            restart_count: 0,
            ..ContainerInfo::default()
        }
    }

    fn desired<'a>(spec: &'a ServiceSpec, revision: u64) -> BTreeMap<String, Desired<'a>> {
        BTreeMap::from([(
            "web".to_owned(),
            Desired {
                revision,
                spec,
                maintenance: false,
            },
        )])
    }

    /// The container part of the plan: no nginx sites on disk.
    fn plan(desired: &BTreeMap<String, Desired<'_>>, observed: &[ContainerInfo], ctx: &Context, now: Instant) -> Plan {
        super::plan(desired, observed, ctx, &SiteFiles::default(), now)
    }

    fn proxied() -> ServiceSpec {
        spec("ports = [\"8000\"]\n[proxy]\nserver_names = [\"web.example\"]\nlisten = [80]\n")
    }

    fn with_ip(mut c: ContainerInfo, ip: [u8; 4]) -> ContainerInfo {
        c.ip = Some(std::net::IpAddr::from(ip));
        c
    }

    fn holder(id: &str, of: &str, running: bool) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: format!("{of}-net-0000"),
            service: None,
            revision: None,
            holder_of: Some(of.into()),
            running,
            ..ContainerInfo::default()
        }
    }

    fn joined(mut c: ContainerInfo, holder: &str, state: crate::docker::HolderState) -> ContainerInfo {
        c.joined = Some(crate::docker::Joined {
            holder: holder.into(),
            state,
        });
        c
    }

    #[test]
    fn network_holders_stay_while_joined_and_go_when_no_container_joins_them() {
        use crate::docker::HolderState::Running;
        let s = spec("");
        let now = Instant::now();
        let observed = [
            joined(container("a", "web", 1, true), "h1", Running),
            holder("h1", "web", true),
            holder("h2", "web", false),
            holder("h3", "gone", true),
        ];
        let p = plan(&desired(&s, 1), &observed, &Context::default(), now);
        let removed: Vec<(&str, &str)> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove { service, container, .. } => Some((service.as_deref()?, container.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(removed, [("web", "h2"), ("gone", "h3")], "{:?}", p.actions);
        assert_eq!(p.actions.len(), 2, "{:?}", p.actions);
        // A change under way may be about to join one: left alone.
        let ctx = Context {
            busy: HashSet::from(["web".to_owned(), "gone".to_owned()]),
            ..Context::default()
        };
        assert!(plan(&desired(&s, 1), &observed, &ctx, now).actions.is_empty());
    }

    #[test]
    fn a_container_whose_holder_stopped_or_went_is_replaced() {
        use crate::docker::HolderState::{Gone, Stopped};
        let s = spec("");
        let now = Instant::now();
        // Running without its network: replaced, not left running.
        let lost = [
            joined(container("a", "web", 1, true), "h1", Stopped),
            holder("h1", "web", false),
        ];
        assert!(matches!(
            &plan(&desired(&s, 1), &lost, &Context::default(), now).actions[..],
            [Action::Replace { container, why, .. }] if container == "a" && why.contains("network holder")
        ));
        // Stopped with its holder stopped: started (the start starts the holder first).
        let stopped = [
            joined(container("a", "web", 1, false), "h1", Stopped),
            holder("h1", "web", false),
        ];
        assert!(matches!(
            &plan(&desired(&s, 1), &stopped, &Context::default(), now).actions[..],
            [Action::Start { container, .. }] if container == "a"
        ));
        // Stopped with its holder gone: it can never start; replaced.
        let orphan = [joined(container("a", "web", 1, false), "h1", Gone)];
        assert!(matches!(
            &plan(&desired(&s, 1), &orphan, &Context::default(), now).actions[..],
            [Action::Replace { container, why, .. }] if container == "a" && why.contains("gone")
        ));
    }

    #[test]
    fn a_stale_container_in_a_holder_goes_before_the_desired_one_is_created() {
        use crate::docker::HolderState::Running;
        // They would share the holder's namespace, and so its ports.
        let s = spec("");
        let observed = [
            joined(container("old", "web", 1, true), "h1", Running),
            holder("h1", "web", true),
        ];
        let p = plan(&desired(&s, 2), &observed, &Context::default(), Instant::now());
        assert!(
            matches!(
                &p.actions[..],
                [Action::Remove { container, .. }, Action::Create { revision: 2, .. }] if container == "old"
            ),
            "{:?}",
            p.actions
        );
    }

    #[test]
    fn missing_and_edited_sites_are_written_and_stale_ones_removed() {
        let s = proxied();
        let running = [with_ip(container("a", "web", 2, true), [172, 17, 0, 3])];
        let mut files = SiteFiles::default();
        files.managed.insert("gone".into());
        let p = super::plan(&desired(&s, 2), &running, &Context::default(), &files, Instant::now());
        let content = match &p.actions[..] {
            [
                Action::WriteSite {
                    service,
                    revision: 2,
                    content,
                    why,
                },
                Action::RemoveSite { service: stale },
            ] if service == "web" && stale == "gone" => {
                assert!(why.contains("missing"), "{why}");
                content.clone()
            }
            other => panic!("{other:?}"),
        };
        assert!(content.contains("172.17.0.3:8000"), "{content}");

        // The right file is left alone; an edited one is written back.
        files.managed.clear();
        files.current.insert("web".into(), content.clone());
        assert!(
            super::plan(&desired(&s, 2), &running, &Context::default(), &files, Instant::now())
                .actions
                .is_empty()
        );
        files.current.insert("web".into(), format!("{content}# edited\n"));
        let p = super::plan(&desired(&s, 2), &running, &Context::default(), &files, Instant::now());
        assert!(matches!(&p.actions[..], [Action::WriteSite { why, .. }] if why.contains("differed")));

        // A container that moved gets the site moved after it.
        let moved = [with_ip(container("a", "web", 2, true), [172, 17, 0, 9])];
        files.current.insert("web".into(), content);
        let p = super::plan(&desired(&s, 2), &moved, &Context::default(), &files, Instant::now());
        assert!(matches!(&p.actions[..], [Action::WriteSite { content, .. }] if content.contains("172.17.0.9:8000")));
    }

    #[test]
    fn sites_of_busy_or_stopped_services_are_left_alone() {
        let s = proxied();
        let mut ctx = Context::default();
        ctx.busy.insert("web".into());
        let running = [with_ip(container("a", "web", 2, true), [172, 17, 0, 3])];
        let mut files = SiteFiles::default();
        files.managed.insert("web".into());
        let p = super::plan(&desired(&s, 2), &running, &ctx, &files, Instant::now());
        assert!(p.actions.is_empty(), "{p:?}");
        files.managed.clear();
        let stopped = [container("a", "web", 2, false)];
        let p = super::plan(&desired(&s, 2), &stopped, &Context::default(), &files, Instant::now());
        assert!(
            !p.actions.iter().any(|a| matches!(a, Action::WriteSite { .. })),
            "no running container, no site to point at it: {p:?}"
        );
    }

    #[test]
    fn healthy_host_needs_nothing() {
        let s = spec("");
        let p = plan(
            &desired(&s, 2),
            &[container("a", "web", 2, true)],
            &Context::default(),
            Instant::now(),
        );
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn missing_container_is_created_and_stale_revisions_removed() {
        let s = spec("");
        let p = plan(
            &desired(&s, 2),
            &[container("old", "web", 1, true)],
            &Context::default(),
            Instant::now(),
        );
        // The stale one may be what serves: it runs on until the new one is up.
        assert!(matches!(&p.actions[..], [Action::Create { revision: 2, .. }]), "{p:?}");
        assert!(p.wake_at.is_some(), "looks again soon");
        let p = plan(
            &desired(&s, 2),
            &[container("old", "web", 1, true), container("new", "web", 2, true)],
            &Context::default(),
            Instant::now(),
        );
        assert!(matches!(&p.actions[..], [Action::Remove { container, .. }] if container == "old"));
        // A stopped stale one goes at once.
        let p = plan(
            &desired(&s, 2),
            &[container("old", "web", 1, false)],
            &Context::default(),
            Instant::now(),
        );
        assert!(matches!(&p.actions[0], Action::Remove { container, .. } if container == "old"));
        assert!(matches!(&p.actions[1], Action::Create { revision: 2, .. }));
    }

    #[test]
    fn a_stale_container_stops_only_once_the_desired_one_is_healthy_and_switched_to() {
        let now = Instant::now();
        let s = spec(
            "ports = [\"8000\"]\n[health]\nexec = [\"true\"]\n[proxy]\nserver_names = [\"web.example\"]\nlisten = [80]\n",
        );
        let observed = [
            with_ip(container("old", "web", 1, true), [172, 17, 0, 2]),
            with_ip(container("new", "web", 2, false), [172, 17, 0, 3]),
        ];
        let p = plan(&desired(&s, 2), &observed, &Context::default(), now);
        assert!(
            matches!(&p.actions[..], [Action::Start { container, .. }] if container == "new"),
            "{p:?}"
        );
        let observed = [
            observed[0].clone(),
            with_ip(container("new", "web", 2, true), [172, 17, 0, 3]),
        ];
        // Running, not yet healthy: the stale one stays.
        let p = plan(&desired(&s, 2), &observed, &Context::default(), now);
        assert!(p.actions.iter().all(|a| !matches!(a, Action::Remove { .. })), "{p:?}");
        // Healthy, but nginx still points at the old one: switch first.
        let mut ctx = Context::default();
        ctx.healthy.insert("new".into());
        let p = super::plan(&desired(&s, 2), &observed, &ctx, &SiteFiles::default(), now);
        assert!(matches!(&p.actions[..], [Action::WriteSite { .. }]), "{p:?}");
        // Switched: now the stale one goes.
        let Action::WriteSite { content, .. } = &p.actions[0] else {
            unreachable!()
        };
        let mut files = SiteFiles::default();
        files.current.insert("web".into(), content.clone());
        files.managed.insert("web".into());
        let p = super::plan(&desired(&s, 2), &observed, &ctx, &files, now);
        assert!(
            matches!(&p.actions[..], [Action::Remove { container, .. }] if container == "old"),
            "{p:?}"
        );
    }

    #[test]
    fn a_stale_container_holding_a_pinned_port_goes_first() {
        let s = spec("ports = [\"8080:8000\"]\n");
        let mut old = container("old", "web", 1, true);
        old.host_ports = vec![crate::docker::PublishedPort {
            container_port: 8000,
            protocol: "tcp".into(),
            host_ip: "0.0.0.0".into(),
            host_port: 8080,
        }];
        let p = plan(&desired(&s, 2), &[old], &Context::default(), Instant::now());
        assert!(matches!(&p.actions[0], Action::Remove { container, .. } if container == "old"));
        assert!(matches!(&p.actions[1], Action::Create { revision: 2, .. }));
    }

    #[test]
    fn crashed_container_restarts_per_policy_and_backoff() {
        let now = Instant::now();
        let s = spec("");
        let crashed = [container("a", "web", 2, false)];
        let p = plan(&desired(&s, 2), &crashed, &Context::default(), now);
        assert!(matches!(&p.actions[..], [Action::Start { container, .. }] if container == "a"));

        let mut ctx = Context::default();
        ctx.not_before.insert("web".into(), now + Duration::from_secs(4));
        let p = plan(&desired(&s, 2), &crashed, &ctx, now);
        assert!(p.actions.is_empty());
        assert_eq!(p.wake_at, Some(now + Duration::from_secs(4)));

        let never = spec("restart = \"never\"\n");
        assert!(
            plan(&desired(&never, 2), &crashed, &Context::default(), now)
                .actions
                .is_empty()
        );
        let on_failure = spec("restart = \"on-failure\"\n");
        let mut clean = container("a", "web", 2, false);
        clean.exit_code = Some(0);
        assert!(
            plan(&desired(&on_failure, 2), &[clean], &Context::default(), now)
                .actions
                .is_empty()
        );
    }

    #[test]
    fn duplicates_keep_the_running_one() {
        let s = spec("");
        let mut older = container("old", "web", 2, true);
        older.started_at_ms = Some(10);
        let newer = container("new", "web", 2, true);
        let stopped = container("dead", "web", 2, false);
        let p = plan(
            &desired(&s, 2),
            &[newer, stopped, older],
            &Context::default(),
            Instant::now(),
        );
        let removed: Vec<_> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove { container, .. } => Some(container.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(removed.len(), 2);
        assert!(
            !removed.contains(&"old"),
            "the longest-running container is kept: {removed:?}"
        );
    }

    #[test]
    fn limit_drift_is_repaired_and_unhealthy_replaced() {
        let s = spec("[resources]\nmemory = \"64m\"\ncpus = 0.5\n");
        let mut c = container("a", "web", 2, true);
        c.memory_bytes = 32 * 1024 * 1024;
        c.nano_cpus = 500_000_000;
        let p = plan(&desired(&s, 2), &[c.clone()], &Context::default(), Instant::now());
        assert!(
            matches!(&p.actions[..], [Action::UpdateLimits { memory: Some(m), nano_cpus: Some(500_000_000), .. }] if *m == 64 * 1024 * 1024)
        );

        c.memory_bytes = 64 * 1024 * 1024;
        assert!(
            plan(&desired(&s, 2), &[c.clone()], &Context::default(), Instant::now())
                .actions
                .is_empty()
        );
        let mut ctx = Context::default();
        ctx.unhealthy.insert("a".into());
        let p = plan(&desired(&s, 2), &[c], &ctx, Instant::now());
        assert!(matches!(&p.actions[..], [Action::Replace { .. }]));
    }

    #[test]
    fn pids_limit_and_memory_reservation_drift_is_repaired() {
        let s = spec("[resources]\nmemory = \"64m\"\nmemory_reservation = \"32m\"\npids_limit = 50\n");
        let mut c = container("a", "web", 2, true);
        c.memory_bytes = 64 * 1024 * 1024;
        c.memory_swap_bytes = 64 * 1024 * 1024;
        c.memory_reservation_bytes = 32 * 1024 * 1024;
        c.pids_limit = 50;
        assert!(
            plan(&desired(&s, 2), &[c.clone()], &Context::default(), Instant::now())
                .actions
                .is_empty()
        );
        c.pids_limit = -1;
        let p = plan(&desired(&s, 2), &[c], &Context::default(), Instant::now());
        assert!(
            matches!(&p.actions[..], [Action::UpdateLimits { soft, why, .. }]
                if soft.pids_limit == Some(50) && why.contains("pids_limit none → 50")),
            "{:?}",
            p.actions
        );
    }

    #[test]
    fn busy_services_and_undesired_containers() {
        let s = spec("");
        let mut ctx = Context::default();
        ctx.busy.insert("web".into());
        let p = plan(&desired(&s, 2), &[container("x", "web", 1, true)], &ctx, Instant::now());
        assert!(p.actions.is_empty(), "a deploy owns a busy service");
        let p = plan(
            &BTreeMap::new(),
            &[container("x", "gone", 1, true)],
            &Context::default(),
            Instant::now(),
        );
        assert!(matches!(&p.actions[..], [Action::Remove { container, .. }] if container == "x"));
    }

    proptest! {
        /// Whatever Docker shows, a plan never touches a busy service, never
        /// creates two containers for one service, and after applying it
        /// at most one container per desired service would remain.
        #[test]
        fn plan_converges_to_one_container(
            states in proptest::collection::vec((0u64..4, any::<bool>(), 0u8..3), 0..8),
            busy in any::<bool>(),
        ) {
            let s = spec("");
            let observed: Vec<ContainerInfo> = states
                .iter()
                .enumerate()
                .map(|(i, (rev, running, svc))| {
                    let name = ["web", "other", "web"][*svc as usize];
                    container(&format!("c{i}"), name, *rev, *running)
                })
                .collect();
            let mut ctx = Context::default();
            if busy {
                ctx.busy.insert("web".into());
            }
            let p = plan(&desired(&s, 2), &observed, &ctx, Instant::now());
            let removed: HashSet<&str> = p.actions.iter().filter_map(|a| match a {
                Action::Remove { container, .. } => Some(container.as_str()),
                _ => None,
            }).collect();
            let touched_web = p.actions.iter().any(|a| a.service() == Some("web"));
            if busy {
                prop_assert!(!touched_web);
            } else {
                let creates = p.actions.iter().filter(|a| matches!(a, Action::Create { .. })).count();
                let left: Vec<&ContainerInfo> = observed.iter().filter(|c| c.service.as_deref() == Some("web") && !removed.contains(c.id.as_str())).collect();
                // Stale running ones are held only while no desired one runs.
                let held = left.iter().filter(|c| c.revision != Some(2)).count();
                let desired_up = observed.iter().any(|c| c.service.as_deref() == Some("web") && c.revision == Some(2) && c.running);
                prop_assert!(held == 0 || (!desired_up && p.wake_at.is_some()));
                prop_assert!(left.iter().all(|c| c.revision == Some(2) || c.running));
                prop_assert!(creates <= 1);
                prop_assert_eq!(left.len() - held + creates, 1);
            }
            // "other" is not desired: all of its containers go.
            for c in observed.iter().filter(|c| c.service.as_deref() == Some("other")) {
                prop_assert!(removed.contains(c.id.as_str()));
            }
        }
    }
}
