//! The agent's private directories, `state_dir` (desired state, revisions,
//! leases, the audit log) and `env_dir` (secrets): created 0700 when
//! missing and tightened to 0700 at start-up when someone loosened them,
//! with a warning naming the old mode. Called once from [`crate::run`]
//! before anything is read or written there; no task.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tracing::warn;

/// A private directory that cannot be made or tightened.
#[derive(Debug, thiserror::Error)]
#[error("{key} {path}: {what}: {source}")]
pub struct DirError {
    /// The config key naming it.
    pub key: &'static str,
    /// The directory.
    pub path: PathBuf,
    /// What failed.
    pub what: &'static str,
    /// Why.
    pub source: std::io::Error,
}

/// Makes `path` (the config's `key`) exist with mode 0700. Returns the mode
/// it had when that was looser (and has been fixed).
pub fn make_private(key: &'static str, path: &Path) -> Result<Option<u32>, DirError> {
    let err = |what, source| DirError {
        key,
        path: path.to_owned(),
        what,
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| err("cannot create it", e))?;
    let mode = std::fs::metadata(path)
        .map_err(|e| err("cannot read its mode", e))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| err("cannot set its mode to 0700", e))?;
    warn!(key, path = %path.display(), old_mode = format!("{mode:o}"), "Tightened a private directory to 0700: it was open to group or others.");
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dirs_are_made_and_loose_ones_tightened() {
        let tmp = tempfile::tempdir().expect("tmp");
        let fresh = tmp.path().join("a/b");
        assert_eq!(make_private("state_dir", &fresh).expect("make"), None);
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o700);
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(make_private("state_dir", &fresh).expect("tighten"), Some(0o755));
        assert_eq!(mode(&fresh), 0o700);
    }
}
