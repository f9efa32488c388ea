//! Fleet-lock leases held on this agent: `state_dir/leases.json`.
//!
//! A lease is a named lock with a holder (the client certificate's name),
//! a purpose, an id only the holder knows, and an expiry; the holder renews
//! it before it lapses. Unlike a lock directory with no TTL (Kamal's, which
//! gets stranded when its holder dies), a lease nobody renews lapses on its
//! own, and an operator can break one.
//!
//! [`LeaseTable`] is the pure logic: every operation takes the time, so
//! tests drive it without sleeping. [`load`] and [`save`] keep it on disk
//! (temp file, fsync, rename) so a lease survives an agent restart; times
//! are wall-clock milliseconds for that reason. A corrupt file is set aside
//! with a warning and the agent starts with no leases: a lease only keeps
//! two orchestrators apart, and refusing to start would take the host's
//! services down with it.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// TTL of a lease when the caller asks for none.
pub const DEFAULT_TTL_MS: u64 = 30_000;
/// Shortest TTL accepted: renewing more often than this is pointless load.
pub const MIN_TTL_MS: u64 = 1_000;
/// Longest TTL accepted: a lease is renewed by a live holder, not parked.
pub const MAX_TTL_MS: u64 = 24 * 3_600_000;
/// The file, under `state_dir`.
pub const FILE: &str = "leases.json";

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lock's name, e.g. `deploy`.
    pub name: String,
    /// Secret to the holder: renew and release need it.
    pub lease_id: String,
    /// The client certificate's name of whoever took it.
    pub holder: String,
    /// What for, e.g. `rollout 3f2a api → 1.4.3`.
    pub purpose: String,
    /// Where the holder runs, as it says (e.g. `laptop pid 4242`).
    #[serde(default)]
    pub client: String,
    /// When it was taken (ms since the Unix epoch).
    pub acquired_at_ms: u64,
    /// When it was last renewed.
    pub renewed_at_ms: u64,
    /// When it lapses unless renewed.
    pub expires_at_ms: u64,
    /// Its TTL, as last asked for.
    pub ttl_ms: u64,
}

impl Lease {
    /// Whether it still holds at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// A lease operation that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it. The gRPC adapter words the refusal with the
    /// lease's times (since, until) in the caller's terms.
    #[error("lock {name:?} is held by {holder} for {purpose:?}", name = .0.name, holder = .0.holder, purpose = .0.purpose)]
    Held(Box<Lease>),
    /// The lease id does not match the lease held under that name, or there
    /// is none: it lapsed, was broken, or was never this caller's.
    #[error("lock {name:?}: {why}")]
    NotHolder {
        /// The lock.
        name: String,
        /// What happened to it, for the message.
        why: String,
    },
    /// The request itself is wrong (name, TTL).
    #[error("{0}")]
    Invalid(String),
}

/// What an acquire asks for.
#[derive(Debug, Clone)]
pub struct Acquire {
    /// The lock's name.
    pub name: String,
    /// The caller's certificate name.
    pub holder: String,
    /// What for.
    pub purpose: String,
    /// Where the caller runs.
    pub client: String,
    /// Requested TTL in ms; 0 = [`DEFAULT_TTL_MS`].
    pub ttl_ms: u64,
}

/// Every lease on this agent, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTable {
    leases: BTreeMap<String, Lease>,
}

impl LeaseTable {
    /// Takes lock `req.name` for `req.holder`, with a fresh `lease_id`.
    /// A lapsed lease is taken over (and returned as the second value, so
    /// its lapse can be reported); a live one refuses, whoever holds it —
    /// also the same certificate, since two runs of one person's berthctl
    /// must not race either.
    pub fn acquire(
        &mut self,
        req: Acquire,
        lease_id: String,
        now_ms: u64,
    ) -> Result<(Lease, Option<Lease>), LeaseError> {
        check_name(&req.name)?;
        let ttl = ttl(req.ttl_ms)?;
        let lapsed = match self.leases.get(&req.name) {
            Some(held) if held.live(now_ms) => return Err(LeaseError::Held(Box::new(held.clone()))),
            Some(_) => self.leases.remove(&req.name),
            None => None,
        };
        let lease = Lease {
            name: req.name.clone(),
            lease_id,
            holder: req.holder,
            purpose: req.purpose,
            client: req.client,
            acquired_at_ms: now_ms,
            renewed_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(ttl),
            ttl_ms: ttl,
        };
        self.leases.insert(req.name, lease.clone());
        Ok((lease, lapsed))
    }

    /// Extends the lease `name` its holder (who knows `lease_id`) still
    /// holds. A lease that lapsed cannot be renewed: someone may have held
    /// the lock in between, so the holder must stop and acquire again.
    pub fn renew(&mut self, name: &str, lease_id: &str, ttl_ms: u64, now_ms: u64) -> Result<Lease, LeaseError> {
        let ttl = ttl(ttl_ms)?;
        let lease = self.held_by(name, lease_id, now_ms)?;
        lease.renewed_at_ms = now_ms;
        lease.expires_at_ms = now_ms.saturating_add(ttl);
        lease.ttl_ms = ttl;
        Ok(lease.clone())
    }

    /// Gives the lease back. Releasing a lease that already lapsed is
    /// fine (it is gone either way); one held under another id is refused.
    pub fn release(&mut self, name: &str, lease_id: &str, now_ms: u64) -> Result<Option<Lease>, LeaseError> {
        match self.leases.get(name) {
            Some(l) if l.lease_id == lease_id => Ok(self.leases.remove(name)),
            Some(l) if l.live(now_ms) => Err(LeaseError::NotHolder {
                name: name.to_owned(),
                why: format!(
                    "it is held by {} under another lease id; only its holder can release it (or break it: berthctl lock break)",
                    l.holder
                ),
            }),
            _ => Ok(None),
        }
    }

    /// Ends the lease `name`, whoever holds it; returns it so the caller can
    /// say whose it broke. None when nothing (live) was held.
    pub fn break_lease(&mut self, name: &str, now_ms: u64) -> Option<Lease> {
        let lease = self.leases.remove(name)?;
        lease.live(now_ms).then_some(lease)
    }

    /// Removes and returns the leases that lapsed by `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Lease> {
        let lapsed: Vec<String> = self
            .leases
            .values()
            .filter(|l| !l.live(now_ms))
            .map(|l| l.name.clone())
            .collect();
        lapsed.iter().filter_map(|n| self.leases.remove(n)).collect()
    }

    /// The live leases, by name.
    pub fn live(&self, now_ms: u64) -> Vec<Lease> {
        self.leases.values().filter(|l| l.live(now_ms)).cloned().collect()
    }

    /// When the next lease lapses, if any is held.
    pub fn next_expiry(&self) -> Option<u64> {
        self.leases.values().map(|l| l.expires_at_ms).min()
    }

    fn held_by(&mut self, name: &str, lease_id: &str, now_ms: u64) -> Result<&mut Lease, LeaseError> {
        let not_holder = |why: String| LeaseError::NotHolder {
            name: name.to_owned(),
            why,
        };
        match self.leases.get_mut(name) {
            None => Err(not_holder(
                "nothing holds it (it lapsed, was released or was broken); acquire it again".into(),
            )),
            Some(l) if l.lease_id != lease_id => Err(not_holder(format!(
                "it is held by {} under another lease id (yours lapsed or was broken)",
                l.holder
            ))),
            Some(l) if !l.live(now_ms) => Err(not_holder(format!(
                "your lease lapsed {} ms ago; acquire it again",
                now_ms - l.expires_at_ms
            ))),
            Some(l) => Ok(l),
        }
    }
}

fn check_name(name: &str) -> Result<(), LeaseError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(LeaseError::Invalid(format!(
            "lock name {:?}: up to 63 letters, digits, '-', '_' and '.'",
            name.chars().take(64).collect::<String>()
        )))
    }
}

fn ttl(ms: u64) -> Result<u64, LeaseError> {
    let ms = if ms == 0 { DEFAULT_TTL_MS } else { ms };
    if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ms) {
        return Err(LeaseError::Invalid(format!(
            "ttl {}s: a lease lives between 1s and 24h (renew it to keep it)",
            ms / 1000
        )));
    }
    Ok(ms)
}

/// A fresh lease id: 128 random bits as hex, from the kernel.
pub fn new_lease_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Why the leases file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LeaseFileError {
    /// Reading or writing failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How loading went, for the caller to report.
#[derive(Debug)]
pub enum Loaded {
    /// Read as written.
    Ok,
    /// No file yet.
    Missing,
    /// Unreadable; moved aside to the given path, starting empty.
    SetAside(PathBuf, String),
}

/// Reads `state_dir/leases.json`.
pub fn load(state_dir: &Path) -> Result<(LeaseTable, Loaded), LeaseFileError> {
    let path = state_dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((LeaseTable::default(), Loaded::Missing)),
        Err(source) => {
            return Err(LeaseFileError::Io {
                action: "read",
                path,
                source,
            });
        }
    };
    match serde_json::from_slice::<LeaseTable>(&bytes) {
        Ok(table) => Ok((table, Loaded::Ok)),
        Err(e) => {
            let aside = state_dir.join(format!("{FILE}.corrupt"));
            std::fs::rename(&path, &aside).map_err(|source| LeaseFileError::Io {
                action: "set aside",
                path: path.clone(),
                source,
            })?;
            Ok((LeaseTable::default(), Loaded::SetAside(aside, e.to_string())))
        }
    }
}

/// Writes the table durably (temp file, fsync, rename, fsync of the dir),
/// creating `state_dir` (0700) if the agent has not yet.
pub fn save(state_dir: &Path, table: &LeaseTable) -> Result<(), LeaseFileError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| LeaseFileError::Io {
            action: "create",
            path: state_dir.to_owned(),
            source,
        })?;
    let path = state_dir.join(FILE);
    let tmp = state_dir.join(format!(".{FILE}.tmp"));
    // A table of strings and numbers always serializes.
    let bytes = serde_json::to_vec_pretty(table).unwrap_or_default();
    crate::atomicfile::write(&path, &tmp, &bytes, 0o600).map_err(|(path, source)| LeaseFileError::Io {
        action: "write",
        path,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, holder: &str, ttl_ms: u64) -> Acquire {
        Acquire {
            name: name.into(),
            holder: holder.into(),
            purpose: "rollout api".into(),
            client: "laptop".into(),
            ttl_ms,
        }
    }

    #[test]
    fn a_live_lease_refuses_everyone_and_lapses_on_its_own() {
        let mut t = LeaseTable::default();
        let (a, lapsed) = t
            .acquire(req("deploy", "alice", 0), "id-a".into(), 1_000)
            .expect("free");
        assert!(lapsed.is_none());
        assert_eq!(a.expires_at_ms, 1_000 + DEFAULT_TTL_MS);
        for who in ["bob", "alice"] {
            let e = t
                .acquire(req("deploy", who, 0), "id-x".into(), 2_000)
                .expect_err("held");
            let text = e.to_string();
            assert!(text.contains("held by alice") && text.contains("rollout api"), "{text}");
        }
        // Another lock name is independent.
        t.acquire(req("other", "bob", 0), "id-o".into(), 2_000)
            .expect("other name");
        // After the TTL nobody renewed, bob takes it over and alice's lapsed lease comes back.
        let (b, lapsed) = t
            .acquire(req("deploy", "bob", 5_000), "id-b".into(), 31_000)
            .expect("lapsed");
        assert_eq!(lapsed.map(|l| l.holder), Some("alice".to_owned()));
        assert_eq!(b.holder, "bob");
        // Alice cannot renew or release bob's lease with her id.
        assert!(matches!(
            t.renew("deploy", "id-a", 0, 31_001),
            Err(LeaseError::NotHolder { .. })
        ));
        assert!(t.release("deploy", "id-a", 31_001).is_err());
    }

    #[test]
    fn renew_extends_but_not_after_a_lapse() {
        let mut t = LeaseTable::default();
        t.acquire(req("deploy", "alice", 10_000), "id".into(), 0).expect("free");
        let l = t.renew("deploy", "id", 10_000, 9_000).expect("renew");
        assert_eq!(l.expires_at_ms, 19_000);
        let e = t.renew("deploy", "id", 10_000, 19_500).expect_err("lapsed");
        assert!(e.to_string().contains("lapsed"), "{e}");
        assert_eq!(t.expire(19_500).len(), 1);
        assert!(t.live(19_500).is_empty());
        assert!(t.next_expiry().is_none());
    }

    #[test]
    fn release_and_break() {
        let mut t = LeaseTable::default();
        t.acquire(req("deploy", "alice", 0), "id".into(), 0).expect("free");
        assert_eq!(
            t.release("deploy", "id", 1).expect("mine").map(|l| l.holder),
            Some("alice".into())
        );
        assert_eq!(t.release("deploy", "id", 2).expect("idempotent"), None);
        t.acquire(req("deploy", "alice", 0), "id2".into(), 3).expect("again");
        assert_eq!(t.break_lease("deploy", 4).map(|l| l.holder), Some("alice".into()));
        assert_eq!(t.break_lease("deploy", 5), None);
    }

    #[test]
    fn bad_names_and_ttls_are_refused() {
        let mut t = LeaseTable::default();
        assert!(matches!(
            t.acquire(req("a b", "x", 0), "i".into(), 0),
            Err(LeaseError::Invalid(_))
        ));
        assert!(matches!(
            t.acquire(req("a", "x", 10), "i".into(), 0),
            Err(LeaseError::Invalid(_))
        ));
        assert!(matches!(
            t.acquire(req("a", "x", MAX_TTL_MS + 1), "i".into(), 0),
            Err(LeaseError::Invalid(_))
        ));
    }

    #[test]
    fn the_file_round_trips_and_a_corrupt_one_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (t, how) = load(dir.path()).expect("missing");
        assert!(matches!(how, Loaded::Missing) && t == LeaseTable::default());
        let mut t = LeaseTable::default();
        t.acquire(req("deploy", "alice", 0), new_lease_id().expect("id"), 7)
            .expect("free");
        save(dir.path(), &t).expect("save");
        let (back, how) = load(dir.path()).expect("load");
        assert!(matches!(how, Loaded::Ok));
        assert_eq!(back, t);
        std::fs::write(dir.path().join(FILE), b"{not json").expect("corrupt");
        let (back, how) = load(dir.path()).expect("set aside");
        assert!(matches!(how, Loaded::SetAside(..)), "{how:?}");
        assert_eq!(back, LeaseTable::default());
        assert!(dir.path().join("leases.json.corrupt").exists());
    }

    #[test]
    fn lease_ids_are_random_hex() {
        let a = new_lease_id().expect("a");
        let b = new_lease_id().expect("b");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
