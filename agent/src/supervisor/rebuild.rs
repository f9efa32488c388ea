//! Rebuilding desired state from container labels when the state file is
//! unreadable: for each service, the newest revision among its containers
//! (running ones first) becomes active. Pure; called once at start by
//! [`super::Starter::start`].

use std::collections::BTreeMap;

use crate::docker::ContainerInfo;
use crate::state::{Revision, RevisionStatus, ServiceRecord, StateFile};
use berth_core::labels;
use berth_core::spec::ServiceSpec;

/// Rebuilds desired state from the labels berth puts on its containers:
/// for each service, the newest revision among its containers (running ones
/// first) becomes active.
pub fn rebuild_from_labels(observed: &[ContainerInfo]) -> StateFile {
    let mut state = StateFile::default();
    let mut best: BTreeMap<String, (bool, u64, ServiceSpec)> = BTreeMap::new();
    for c in observed {
        let (Some(service), Some(revision)) = (c.service.clone(), c.revision) else {
            continue;
        };
        let Some(spec) = c
            .labels
            .get(labels::SPEC)
            .and_then(|j| serde_json::from_str::<ServiceSpec>(j).ok())
        else {
            continue;
        };
        let candidate = (c.running, revision, spec);
        match best.get(&service) {
            Some((running, rev, _)) if (*running, *rev) >= (candidate.0, candidate.1) => {}
            _ => {
                best.insert(service, candidate);
            }
        }
    }
    for (service, (_, revision, spec)) in best {
        state.services.insert(
            service,
            ServiceRecord {
                active: revision,
                revisions: vec![Revision {
                    number: revision,
                    created_at_ms: crate::clock::now_ms(),
                    spec,
                    reason: "rebuilt from container labels".into(),
                    author: "agent".into(),
                    status: RevisionStatus::Active,
                    env_keys_changed: Vec::new(),
                    error: None,
                    env: None,
                }],
                next_revision: revision + 1,
                // Labels do not say; a lost state file ends maintenance.
                maintenance: false,
            },
        );
    }
    state
}
