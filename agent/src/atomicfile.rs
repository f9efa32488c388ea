//! Replacing a file so that a reader (Docker, nginx, the env watcher, the
//! agent after a crash) sees the old content or the new, never half of one:
//! temp file in the same directory, fsync, rename over the target, fsync of
//! the directory. Used for the state file, env files and nginx sites; each
//! caller names its temp file so nothing that scans the directory mistakes
//! it for a real one. Blocking I/O on the caller's thread; owns no state
//! and nothing to shut down.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through `tmp` (same directory) with `mode`.
/// On failure, returns the file the error happened on.
pub fn write(path: &Path, tmp: &Path, bytes: &[u8], mode: u32) -> Result<(), (PathBuf, std::io::Error)> {
    let at = |p: &Path| {
        let p = p.to_owned();
        move |e| (p, e)
    };
    let written = write_tmp(tmp, bytes, mode).and_then(|()| std::fs::rename(tmp, path).map_err(at(path)));
    if let Err(e) = written {
        // A full disk leaves a short temp file; nothing may read it, and it
        // holds space the next write needs.
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

fn write_tmp(tmp: &Path, bytes: &[u8], mode: u32) -> Result<(), (PathBuf, std::io::Error)> {
    let at = |e| (tmp.to_owned(), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)
        .map_err(at)?;
    // A temp file left by a crash keeps its old mode; `mode` above only
    // applies when the file is created.
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(at)?;
    f.write_all(bytes).map_err(at)?;
    f.sync_all().map_err(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_with_the_given_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let tmp = dir.path().join(".f.tmp");
        write(&path, &tmp, b"one", 0o644).expect("first");
        write(&path, &tmp, b"two", 0o600).expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!tmp.exists(), "the temp file was renamed away");
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tmp = dir.path().join(".f.tmp");
        // The rename fails: the target is a non-empty directory.
        let path = dir.path().join("d");
        std::fs::create_dir(&path).expect("dir");
        std::fs::write(path.join("x"), b"x").expect("x");
        let (at, _) = write(&path, &tmp, b"one", 0o600).expect_err("rename over a directory");
        assert_eq!(at, path);
        assert!(!tmp.exists(), "the temp file was removed");
    }
}
