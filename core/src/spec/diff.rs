//! What changes between two specs, key by key, for plans and dry runs
//! (`resources.memory: 8g -> 16g`). Both specs are flattened to dotted keys
//! as they would be written in TOML, so the keys are the ones users write
//! and a default written out or left implicit is no change.

use std::collections::BTreeMap;

use super::ServiceSpec;

/// One key whose value differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Dotted key, e.g. `resources.memory` or `health.http`.
    pub key: String,
    /// The old value as TOML writes it; `None` when it was unset.
    pub from: Option<String>,
    /// The new value; `None` when it is unset now.
    pub to: Option<String>,
}

/// The keys whose values differ from `old` to `new`, in key order.
pub fn diff(old: &ServiceSpec, new: &ServiceSpec) -> Vec<Change> {
    let (old, new) = (flatten(old), flatten(new));
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| Change {
            key: k.clone(),
            from: old.get(k).cloned(),
            to: new.get(k).cloned(),
        })
        .collect()
}

/// Dotted key → value as TOML text.
fn flatten(spec: &ServiceSpec) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // A spec always serializes (see `ServiceSpec::to_toml`).
    if let Ok(toml::Value::Table(table)) = toml::Value::try_from(spec) {
        walk("", &table, &mut out);
    }
    out
}

fn walk(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            // `labels` keys are data, but still read best one by one.
            toml::Value::Table(t) => walk(&key, t, out),
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse;

    #[test]
    fn changed_added_and_removed_keys() {
        let old = parse("name = \"w\"\nimage = \"app:1\"\nports = [\"8000\"]\n[resources]\nmemory = \"8g\"\n[labels]\nteam = \"a\"\n")
            .expect("old");
        let new = parse("name = \"w\"\nimage = \"app:2\"\nports = [\"8000\"]\nstop_timeout = \"10s\"\n[resources]\nmemory = \"16g\"\ncpus = 2\n[health]\ntcp = 8000\n")
            .expect("new");
        let changes = diff(&old, &new);
        let shown: Vec<String> = changes
            .iter()
            .map(|c| {
                format!(
                    "{}: {} -> {}",
                    c.key,
                    c.from.as_deref().unwrap_or("-"),
                    c.to.as_deref().unwrap_or("-")
                )
            })
            .collect();
        assert!(shown.contains(&"image: \"app:1\" -> \"app:2\"".to_owned()), "{shown:?}");
        assert!(
            shown.contains(&"resources.memory: \"8g\" -> \"16g\"".to_owned()),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|s| s.starts_with("resources.cpus: - -> ")),
            "{shown:?}"
        );
        assert!(shown.contains(&"labels.team: \"a\" -> -".to_owned()), "{shown:?}");
        assert!(
            shown.iter().any(|s| s.starts_with("health.tcp: - -> 8000")),
            "{shown:?}"
        );
        // The default stop_timeout written out is no change.
        assert!(!shown.iter().any(|s| s.starts_with("stop_timeout")), "{shown:?}");
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn volumes_env_and_run_flags_show_as_keys() {
        let old =
            parse("name = \"w\"\nimage = \"app:1\"\nvolumes = [\"cache:/cache\"]\n[env]\nA = \"1\"\n").expect("old");
        let new = parse(
            "name = \"w\"\nimage = \"app:1\"\nvolumes = [\"cache:/cache:ro\"]\nread_only = true\n\
             [env]\nA = \"2\"\n[ulimits]\nnofile = 1024\n[logging]\nmax_size = \"5m\"\n",
        )
        .expect("new");
        let keys: Vec<String> = diff(&old, &new).into_iter().map(|c| c.key).collect();
        assert_eq!(
            keys,
            ["env.A", "logging.max_size", "read_only", "ulimits.nofile", "volumes"],
            "{keys:?}"
        );
    }
}
