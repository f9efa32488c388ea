//! What a change would do to a service on this host, without doing it: the
//! `Plan` a rollout shows before it starts (`berthctl rollout --dry-run`).
//!
//! Computed from the latest snapshot the way the change itself would build
//! its revision (the active spec with the new image, a new spec, the
//! current env with an edit), so the plan is what this agent would do:
//! spec keys that change ([`berth_core::spec::diff`]), env keys added,
//! changed and removed (never values), and the nginx site's diff. Reads
//! only: the snapshot, the env file of a service not applied yet. Owns
//! nothing.

use berth_core::envfile::Vars;
use berth_core::image::ImageRef;
use berth_core::spec::{self, ServiceSpec, Strategy};

use super::env::EnvEdit;
use super::view::not_found;
use super::{Supervisor, SupervisorError};
use crate::nginx;

/// The change a plan is asked for.
#[derive(Debug, Clone)]
pub enum PlanChange {
    /// A new image for the service's active spec.
    Image(String),
    /// A whole spec (also a first deploy).
    Spec(Box<ServiceSpec>),
    /// An env edit.
    Env(EnvEdit),
    /// A fresh container of the same revision.
    Restart,
}

/// What applying a change would do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The service.
    pub service: String,
    /// Whether this host runs it.
    pub exists: bool,
    /// Its active revision (0 = none).
    pub revision: u64,
    /// Whether the change makes a new revision or a new container.
    pub would_change: bool,
    /// Image now ("" when none) and after.
    pub image_from: String,
    /// Image after.
    pub image_to: String,
    /// Spec keys whose value changes.
    pub spec_changes: Vec<spec::diff::Change>,
    /// Env keys added.
    pub env_added: Vec<String>,
    /// Env keys whose value changes.
    pub env_changed: Vec<String>,
    /// Env keys removed.
    pub env_removed: Vec<String>,
    /// Unified diff of the nginx site ("" when it would not change).
    pub site_diff: String,
    /// "blue-green", "recreate" or "restart".
    pub strategy: String,
}

/// Stands in for the new container's address in a planned site: it is
/// known only once the container runs.
const PLANNED_UPSTREAM: &str = "0.0.0.0:0";

impl Supervisor {
    /// What `change` would do to `service` now.
    pub fn plan(&self, service: &str, change: PlanChange) -> Result<Plan, SupervisorError> {
        let snap = self.ready_snapshot()?;
        let record = snap.record(service);
        let active = record.and_then(|r| r.active_revision());
        let old_spec = active.map(|r| r.spec.clone());
        let old_env = match &old_spec {
            Some(s) => Some(self.current_env(s)?),
            None => None,
        };
        let (new_spec, new_env, restart) = match change {
            PlanChange::Image(image) => {
                let image: ImageRef = image
                    .parse()
                    .map_err(|e| SupervisorError::Invalid(format!("image {image:?}: {e}")))?;
                let mut spec = old_spec.clone().ok_or_else(|| not_found(service))?;
                spec.image = image;
                let env = self.current_env(&spec)?;
                (spec, env, false)
            }
            PlanChange::Spec(spec) => {
                if spec.name.as_str() != service {
                    return Err(SupervisorError::Invalid(format!(
                        "the spec is for {}, not {service}",
                        spec.name.as_str()
                    )));
                }
                let env = self.current_env(&spec)?;
                (*spec, env, false)
            }
            PlanChange::Env(edit) => {
                let spec = old_spec.clone().ok_or_else(|| not_found(service))?;
                let current = old_env.clone().unwrap_or_default();
                let env = edit.apply(&current)?;
                (spec, env, false)
            }
            PlanChange::Restart => {
                let spec = old_spec.clone().ok_or_else(|| not_found(service))?;
                let env = old_env.clone().unwrap_or_default();
                (spec, env, true)
            }
        };
        let spec_changes = old_spec
            .as_ref()
            .map_or_else(Vec::new, |old| spec::diff::diff(old, &new_spec));
        let (env_added, env_changed, env_removed) = env_keys(old_env.as_ref(), &new_env);
        let site_diff = site_diff(service, old_spec.as_ref(), &new_spec);
        let would_change = restart
            || old_spec.is_none()
            || !spec_changes.is_empty()
            || !env_added.is_empty()
            || !env_changed.is_empty()
            || !env_removed.is_empty();
        let strategy = if restart {
            "restart"
        } else {
            match new_spec.strategy() {
                Strategy::BlueGreen => "blue-green",
                Strategy::Recreate => "recreate",
            }
        };
        Ok(Plan {
            service: service.to_owned(),
            exists: old_spec.is_some(),
            revision: record.map_or(0, |r| r.active),
            would_change,
            image_from: old_spec.as_ref().map_or_else(String::new, |s| s.image.to_string()),
            image_to: new_spec.image.to_string(),
            spec_changes,
            env_added,
            env_changed,
            env_removed,
            site_diff,
            strategy: strategy.to_owned(),
        })
    }
}

/// Keys added, changed and removed from `old` (none: a new service) to
/// `new`, each sorted.
fn env_keys(old: Option<&Vars>, new: &Vars) -> (Vec<String>, Vec<String>, Vec<String>) {
    let empty = Vars::new();
    let old = old.unwrap_or(&empty);
    let added = new.keys().filter(|k| !old.contains_key(k)).map(str::to_owned).collect();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(k).is_some_and(|o| o != *v))
        .map(|(k, _)| k.to_owned())
        .collect();
    let removed = old.keys().filter(|k| !new.contains_key(k)).map(str::to_owned).collect();
    (added, changed, removed)
}

/// The unified diff between the site `old` renders and the one `new`
/// does, both sending traffic to a placeholder: the upstream moves to the
/// new container on every blue-green deploy, which is not a change of the
/// site's shape.
fn site_diff(service: &str, old: Option<&ServiceSpec>, new: &ServiceSpec) -> String {
    let render = |s: Option<&ServiceSpec>| -> String {
        let upstream = PLANNED_UPSTREAM.parse().expect("a valid socket address");
        s.and_then(|s| s.proxy.as_ref().map(|p| nginx::render(s, p, upstream, false)))
            .map(|site| site.replace(PLANNED_UPSTREAM, "<the new container>"))
            .unwrap_or_default()
    };
    let (before, after) = (render(old), render(Some(new)));
    if before == after {
        return String::new();
    }
    let file = format!("berth-{service}.conf");
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(2)
        .header(&format!("a/{file}"), &format!("b/{file}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        let mut v = Vars::new();
        for (k, val) in pairs {
            v.insert((*k).to_owned(), (*val).to_owned());
        }
        v
    }

    #[test]
    fn env_keys_name_keys_never_values() {
        let old = vars(&[("A", "1"), ("B", "2"), ("C", "3")]);
        let new = vars(&[("A", "1"), ("B", "secret"), ("D", "4")]);
        let (added, changed, removed) = env_keys(Some(&old), &new);
        assert_eq!(added, ["D"]);
        assert_eq!(changed, ["B"]);
        assert_eq!(removed, ["C"]);
        let (added, changed, removed) = env_keys(None, &new);
        assert_eq!(added.len(), 3);
        assert!(changed.is_empty() && removed.is_empty());
    }

    fn spec(toml: &str) -> ServiceSpec {
        berth_core::spec::parse(toml).expect("a valid spec")
    }

    #[test]
    fn site_diff_shows_a_changed_server_name_but_not_the_upstream() {
        let old = spec(
            "name = \"web\"\nimage = \"app:v1\"\nports = [\"8000\"]\n[proxy]\nlisten = [8080]\nserver_names = [\"a.example\"]\n",
        );
        let mut same = old.clone();
        same.image = "app:v2".parse().expect("image");
        assert_eq!(
            site_diff("web", Some(&old), &same),
            "",
            "an image change keeps the site"
        );
        let new = spec(
            "name = \"web\"\nimage = \"app:v2\"\nports = [\"8000\"]\n[proxy]\nlisten = [8080]\nserver_names = [\"b.example\"]\n",
        );
        let diff = site_diff("web", Some(&old), &new);
        assert!(diff.contains("-    server_name a.example;"), "{diff}");
        assert!(diff.contains("+    server_name b.example;"), "{diff}");
        assert!(diff.contains("--- a/berth-web.conf"), "{diff}");
        let first = site_diff("web", None, &new);
        assert!(
            first.contains("+    server <the new container> max_fails=0;"),
            "{first}"
        );
    }
}
