//! Service env files on disk: `env_dir/NAME.env`.
//!
//! Owns reading them and writing them (temp file + fsync + rename, mode
//! 0600); the syntax itself is [`berth_core::envfile`], shared with
//! berthctl. Errors name the file, never a value. Called by the
//! supervisor's workers on their own tasks (blocking file I/O on small
//! files); no state, no task.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

use berth_core::envfile::{self, Vars};

/// An env file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// Reading failed.
    #[error("cannot read env file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing failed; the old file is untouched.
    #[error("cannot write env file {path}: {source}")]
    Write {
        /// The file (or its temp file, or its directory).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The content breaks the env-file syntax (file and line, never a value).
    #[error(transparent)]
    Syntax(#[from] envfile::EnvError),
}

/// Reads `path`; a missing file is an empty env.
pub fn read(path: &Path) -> Result<Vars, EnvError> {
    match read_bytes(path)? {
        Some(bytes) => Ok(envfile::parse(&bytes, path)?),
        None => Ok(Vars::new()),
    }
}

/// The raw bytes of `path`; `None` when it does not exist.
pub fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, EnvError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EnvError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `vars` to `path` atomically with mode 0600: a temp file in the
/// same directory, fsynced, renamed over `path`, then the directory
/// fsynced. A reader (Docker, a person, the watcher) sees the old file or
/// the new one, never half of one. Creates the directory (0700) if needed.
/// Returns the bytes written, so the caller can recognise its own write.
pub fn write(path: &Path, vars: &Vars) -> Result<Vec<u8>, EnvError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let err = |p: &Path| {
        let p = p.to_owned();
        move |source| EnvError::Write { path: p, source }
    };
    envfile::check_vars(vars)?;
    let bytes = envfile::render(vars);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Hidden and distinct from every service's file name, so the watcher
    // never mistakes it for an env file.
    let tmp = dir.join(format!(".{name}.berth-tmp"));
    crate::atomicfile::write(path, &tmp, &bytes, 0o600).map_err(|(p, source)| EnvError::Write { path: p, source })?;
    Ok(bytes)
}

/// A fingerprint of a file's bytes (`None` = no file), to recognise content
/// already handled without keeping the secrets themselves around.
pub fn fingerprint(bytes: Option<&[u8]>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Env files as read: path and content, `None` for a missing file.
pub type FileContents = Vec<(PathBuf, Option<Vec<u8>>)>;

/// A layered env: the spec's inline `[env]` values, overridden by each of
/// `files` (name, content; `None` for a missing file, which adds nothing)
/// in order, a later file overriding an earlier one. A file that breaks
/// the syntax is an error naming it and the line.
pub fn merge_layered(
    inline: &std::collections::BTreeMap<String, String>,
    files: &FileContents,
) -> Result<Vars, EnvError> {
    let mut env: Vars = inline.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (path, bytes) in files {
        let Some(bytes) = bytes else { continue };
        for (k, v) in envfile::parse(bytes, path)?.iter() {
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    Ok(env)
}

/// One fingerprint of several files' names and contents, so an edit of
/// any of them (or its removal) changes it.
pub fn fingerprint_all(files: &FileContents) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}

/// `KEY=VALUE` strings for Docker's container config.
pub fn to_docker(vars: &Vars) -> Vec<String> {
    vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn layered_env_files_override_inline_values_in_order() {
        let inline = [("LAUNCH_ENVIRONMENT", "prod"), ("REDIS_HOST", "inline")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let files = vec![
            (
                PathBuf::from("common.env"),
                Some(b"REDIS_HOST=redis\nSENTRY_DSN=x\n".to_vec()),
            ),
            (PathBuf::from("missing.env"), None),
            (PathBuf::from("worker.env"), Some(b"SENTRY_DSN=worker\n".to_vec())),
        ];
        let env = merge_layered(&inline, &files).expect("merges");
        assert_eq!(
            env,
            vars(&[
                ("LAUNCH_ENVIRONMENT", "prod"),
                ("REDIS_HOST", "redis"),
                ("SENTRY_DSN", "worker")
            ])
        );
        let print = fingerprint_all(&files);
        let mut edited = files.clone();
        edited[2].1 = Some(b"SENTRY_DSN=other\n".to_vec());
        assert_ne!(fingerprint_all(&edited), print);
        edited[2].1 = None;
        assert_ne!(fingerprint_all(&edited), print);
        let bad = vec![(PathBuf::from("/env/bad.env"), Some(b"A=1\nsecret\n".to_vec()))];
        let e = merge_layered(&inline, &bad).expect_err("bad line").to_string();
        assert!(e.contains("/env/bad.env:2") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn write_is_private_and_reads_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/web.env");
        let v = vars(&[("B", " spaced "), ("A", "x=y#z"), ("E", "")]);
        let bytes = write(&path, &v).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read(&path).expect("parse"), v);
        // Nothing left behind but the file itself.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("web.env")]);
        assert!(write(&path, &vars(&[("A", "a\nb")])).is_err());
        assert_eq!(read(&path).expect("old file kept"), v);
    }
}
