//! The audit log's record format and its hash chain, shared by the agent
//! (which writes `state_dir/audit.log`) and berthctl (which verifies what
//! `berthctl audit --verify` reads back).
//!
//! A record is one JSON line whose last field is `hash`, the SHA-256 of the
//! line without that field; `prev` is the `hash` of the record before it
//! ([`GENESIS`] for the first record ever) and `seq` counts records from 1.
//! Editing a record breaks its own hash; rewriting its hash breaks the next
//! record's `prev`; deleting one leaves a gap in `seq`. Rotation moves whole
//! files, so the chain runs on across them. Lines written before the chain
//! existed (no `hash`) are accepted only at the start of the log.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest line a reader accepts as a record; the agent's own records are
/// far shorter, so a longer one was not written by it.
pub const MAX_LINE: usize = 64 * 1024;

/// One audit record: who did what, to which service, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, from 1, across rotated files.
    pub seq: u64,
    /// When (ms since the epoch).
    pub ts_ms: u64,
    /// The caller's certificate name, or the agent part that acted (`file`,
    /// `agent`).
    pub who: String,
    /// The caller's role (`operator`, `viewer`); empty for the agent itself.
    #[serde(default)]
    pub role: String,
    /// SHA-256 of the caller's certificate (DER, hex); empty for the agent.
    #[serde(default)]
    pub cert: String,
    /// The caller's address; empty for the agent.
    #[serde(default)]
    pub peer: String,
    /// What was done or attempted (`deploy`, `Services/Deploy`, ...).
    pub action: String,
    /// The service or lock it concerned; may be empty.
    #[serde(default)]
    pub service: String,
    /// Facts about it (revision, env key names; never values).
    #[serde(default)]
    pub detail: String,
    /// `ok`, `denied: ...`, `invalid: ...`, `failed: ...`, ...
    pub outcome: String,
    /// The hash of the record before this one.
    pub prev: String,
}

/// The fields a writer fills in; the chain fields are added by [`seal`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// See [`Record::ts_ms`].
    pub ts_ms: u64,
    /// See [`Record::who`].
    pub who: String,
    /// See [`Record::role`].
    pub role: String,
    /// See [`Record::cert`].
    pub cert: String,
    /// See [`Record::peer`].
    pub peer: String,
    /// See [`Record::action`].
    pub action: String,
    /// See [`Record::service`].
    pub service: String,
    /// See [`Record::detail`].
    pub detail: String,
    /// See [`Record::outcome`].
    pub outcome: String,
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The line (no newline) for `entry` as record `seq` after a record whose
/// hash is `prev`, and the new record's hash.
pub fn seal(entry: Entry, seq: u64, prev: &str) -> (String, String) {
    let record = Record {
        seq,
        ts_ms: entry.ts_ms,
        who: entry.who,
        role: entry.role,
        cert: entry.cert,
        peer: entry.peer,
        action: entry.action,
        service: entry.service,
        detail: entry.detail,
        outcome: entry.outcome,
        prev: prev.to_owned(),
    };
    // A struct of strings and integers always serializes.
    let body = serde_json::to_string(&record).unwrap_or_default();
    let hash = sha256_hex(body.as_bytes());
    let line = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
    (line, hash)
}

/// A line that is a sealed record: its fields and its (checked) hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The record.
    pub record: Record,
    /// Its hash.
    pub hash: String,
}

/// Why a line is not an intact sealed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// JSON without a `hash` field: written before the chain existed, or
    /// with its hash cut off.
    Unsealed,
    /// Not a record at all (not JSON, cut short, too long, fields missing).
    Malformed(String),
    /// The line's content does not match its hash: it was edited.
    Altered {
        /// The `seq` the line claims.
        seq: u64,
    },
}

/// Reads one line as a sealed record and checks its own hash.
pub fn open(line: &str) -> Result<Sealed, LineError> {
    if line.len() > MAX_LINE {
        return Err(LineError::Malformed(format!("a line of {} bytes", line.len())));
    }
    const TAIL: &str = ",\"hash\":\"";
    let Some(at) = line.rfind(TAIL) else {
        return match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(_)) => Err(LineError::Unsealed),
            _ => Err(LineError::Malformed("not a JSON record".to_owned())),
        };
    };
    let hash = &line[at + TAIL.len()..];
    let Some(hash) = hash.strip_suffix("\"}") else {
        return Err(LineError::Malformed("the hash is not the last field".to_owned()));
    };
    if hash.len() != 64 || !hash.bytes().all(|b| HEX.contains(&b)) {
        return Err(LineError::Malformed("the hash is not 64 hex digits".to_owned()));
    }
    let body = format!("{}}}", &line[..at]);
    let record: Record = serde_json::from_str(&body).map_err(|e| LineError::Malformed(format!("not a record: {e}")))?;
    if sha256_hex(body.as_bytes()) != hash {
        return Err(LineError::Altered { seq: record.seq });
    }
    Ok(Sealed {
        record,
        hash: hash.to_owned(),
    })
}

/// Where a line sits: the file (as the agent names it) and its 1-based
/// line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// File name, e.g. `audit.log.2`.
    pub file: String,
    /// Line number in it, from 1.
    pub line: u64,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The first record at which the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} ({place})")]
pub struct Broken {
    /// The broken record's `seq`, when it can be read.
    pub seq: Option<u64>,
    /// Where it is.
    pub place: Place,
    /// What is wrong, in words.
    pub what: String,
}

/// What an intact log holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Sealed records checked.
    pub records: u64,
    /// The first and last `seq` seen (0 when none).
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Whether the first record is the first ever ([`GENESIS`]); false when
    /// older files were rotated away, or after legacy lines.
    pub from_genesis: bool,
    /// Lines from before the chain existed, at the start.
    pub legacy: u64,
}

/// Checks a log line by line, oldest first, holding only the last link.
#[derive(Debug, Default)]
pub struct Verifier {
    done: Verified,
    /// The hash the next record must carry as `prev`, and the previous
    /// record's seq and place (None before the first record).
    last: Option<(String, Option<u64>, Place)>,
}

impl Verifier {
    /// A verifier at the start of a log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next line; the first error is the first broken record.
    pub fn push(&mut self, place: Place, line: &str) -> Result<(), Broken> {
        let broken = |seq: Option<u64>, what: String| Broken {
            seq,
            place: place.clone(),
            what,
        };
        let sealed = match open(line) {
            Ok(s) => s,
            Err(LineError::Unsealed) if self.done.records == 0 => {
                // Before the chain existed; the first sealed record links
                // to the last such line.
                self.done.legacy += 1;
                self.last = Some((sha256_hex(line.as_bytes()), None, place));
                return Ok(());
            }
            Err(LineError::Unsealed) => {
                return Err(broken(
                    None,
                    "a line without a hash after sealed records: inserted or its hash removed".to_owned(),
                ));
            }
            Err(LineError::Malformed(why)) => {
                let after = self.last.as_ref().and_then(|(_, seq, _)| *seq);
                let what = match after {
                    Some(seq) => format!("the line after record {seq} is not an audit record ({why})"),
                    None => format!("the first line is not an audit record ({why})"),
                };
                return Err(broken(after.map(|s| s + 1), what));
            }
            Err(LineError::Altered { seq }) => {
                return Err(broken(
                    Some(seq),
                    format!("record {seq} was altered: its content does not match its hash"),
                ));
            }
        };
        let seq = sealed.record.seq;
        match &self.last {
            None => {
                self.done.from_genesis = sealed.record.prev == GENESIS;
                if self.done.from_genesis && seq != 1 {
                    return Err(broken(
                        Some(seq),
                        format!("record {seq} claims to be the first record but its seq is not 1"),
                    ));
                }
                self.done.first_seq = seq;
            }
            Some((hash, prev_seq, prev_place)) => {
                if let Some(p) = *prev_seq {
                    if seq != p + 1 {
                        return Err(broken(
                            Some(seq),
                            if seq > p + 1 {
                                format!("records {} to {} are missing before record {seq}", p + 1, seq - 1)
                            } else {
                                format!("record {seq} follows record {p}: records were reordered or repeated")
                            },
                        ));
                    }
                } else {
                    self.done.first_seq = seq;
                }
                if sealed.record.prev != *hash {
                    let what = match prev_seq {
                        Some(p) => format!(
                            "record {p} ({prev_place}) was rewritten or replaced: record {seq} recorded another hash for it"
                        ),
                        None => format!("record {seq} does not follow the line before it ({prev_place})"),
                    };
                    return Err(Broken {
                        seq: prev_seq.or(Some(seq)),
                        place: if prev_seq.is_some() { prev_place.clone() } else { place },
                        what,
                    });
                }
            }
        }
        self.done.records += 1;
        self.done.last_seq = seq;
        self.last = Some((sealed.hash, Some(seq), place));
        Ok(())
    }

    /// What was checked.
    pub fn finish(self) -> Verified {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            ts_ms: 1_000 + n,
            who: "alice".into(),
            role: "operator".into(),
            cert: "ab".repeat(32),
            peer: "127.0.0.1:5000".into(),
            action: "deploy".into(),
            service: "web".into(),
            detail: format!("revision {n} \"quoted\" \\ ünï"),
            outcome: "ok".into(),
        }
    }

    fn chain(n: u64) -> Vec<String> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let (line, hash) = seal(entry(seq), seq, &prev);
                prev = hash;
                line
            })
            .collect()
    }

    fn verify(lines: &[String]) -> Result<Verified, Broken> {
        let mut v = Verifier::new();
        for (i, l) in lines.iter().enumerate() {
            v.push(
                Place {
                    file: "audit.log".into(),
                    line: i as u64 + 1,
                },
                l,
            )?;
        }
        Ok(v.finish())
    }

    #[test]
    fn a_sealed_chain_verifies_and_reads_back() {
        let lines = chain(5);
        let v = verify(&lines).expect("intact");
        assert_eq!((v.records, v.first_seq, v.last_seq, v.from_genesis), (5, 1, 5, true));
        let s = open(&lines[2]).expect("sealed");
        assert_eq!(s.record.seq, 3);
        assert_eq!(s.record.detail, entry(3).detail);
        assert!(lines[2].ends_with(&format!(",\"hash\":\"{}\"}}", s.hash)));
    }

    #[test]
    fn an_edited_record_is_named() {
        let mut lines = chain(5);
        lines[2] = lines[2].replace("alice", "mallo");
        let e = verify(&lines).expect_err("edited");
        assert_eq!(e.seq, Some(3));
        assert_eq!(e.place.line, 3);
        assert!(e.what.contains("record 3 was altered"), "{e}");
    }

    #[test]
    fn a_rehashed_record_is_named_by_the_next_link() {
        let mut lines = chain(4);
        let prev = open(&lines[0]).expect("sealed").hash;
        let mut forged = entry(2);
        forged.who = "mallory".into();
        lines[1] = seal(forged, 2, &prev).0;
        let e = verify(&lines).expect_err("rehashed");
        assert_eq!((e.seq, e.place.line), (Some(2), 2), "{e}");
        assert!(e.what.contains("rewritten"), "{e}");
    }

    #[test]
    fn deleted_and_inserted_lines_break_the_chain() {
        let mut lines = chain(5);
        lines.remove(2);
        let e = verify(&lines).expect_err("deleted");
        assert!(e.what.contains("records 3 to 3 are missing"), "{e}");
        let mut lines = chain(3);
        lines.insert(1, "{\"who\":\"x\"}".into());
        assert!(verify(&lines).is_err());
        let mut lines = chain(3);
        lines.insert(1, "garbage".into());
        let e = verify(&lines).expect_err("garbage");
        assert!(e.what.contains("after record 1"), "{e}");
    }

    #[test]
    fn legacy_lines_at_the_start_link_to_the_first_sealed_record() {
        let legacy = "{\"ts_ms\":1,\"who\":\"a\",\"action\":\"deploy\"}".to_owned();
        let (first, _) = seal(entry(1), 1, &sha256_hex(legacy.as_bytes()));
        let v = verify(&[legacy, first]).expect("legacy then sealed");
        assert_eq!((v.legacy, v.records, v.from_genesis), (1, 1, false));
    }

    #[test]
    fn a_log_whose_start_was_rotated_away_verifies_from_its_first_record() {
        let lines = chain(6);
        let v = verify(&lines[3..]).expect("tail");
        assert_eq!((v.first_seq, v.last_seq, v.from_genesis), (4, 6, false));
    }
}
