//! Pseudo-files (cgroupfs, procfs) kept open and re-read with `pread`.
//!
//! The kernel regenerates these files on every read at offset 0, so a kept
//! descriptor always shows current values and a pass costs one system call
//! per file instead of open, read and close, with no path built and no
//! string allocated: text is read into a buffer the caller reuses. Used by
//! the host ([`super::host`]) and container ([`super::cgroup`]) samplers on
//! the sampler thread; a [`Kept`] closes its descriptor when dropped.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Bytes a read buffer starts with: a v1 `memory.stat` (the largest
/// per-container file) is about 1 KiB; larger files grow it once.
const INITIAL_BUF: usize = 4096;

/// Why a kept file could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// One open pseudo-file.
#[derive(Debug)]
pub struct Kept {
    path: PathBuf,
    file: File,
}

impl Kept {
    /// Opens `path`, failing with the path in the error.
    pub fn open(path: PathBuf) -> Result<Kept, ReadError> {
        match File::open(&path) {
            Ok(file) => Ok(Kept { path, file }),
            Err(source) => Err(ReadError { path, source }),
        }
    }

    /// Opens a file that may be missing on some kernels or configurations
    /// (e.g. blkio without the throttle policy).
    pub fn optional(path: PathBuf) -> Option<Kept> {
        File::open(&path).ok().map(|file| Kept { path, file })
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (for `poll`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The whole file, read into `buf` (grown when a file outgrows it,
    /// reused otherwise). Non-UTF-8 content reads as empty: every file
    /// read here is ASCII.
    pub fn read<'b>(&self, buf: &'b mut Vec<u8>) -> Result<&'b str, ReadError> {
        self.read_prefix(buf, usize::MAX)
    }

    /// At least the first `limit` bytes (or the whole file if shorter).
    pub fn read_prefix<'b>(&self, buf: &'b mut Vec<u8>, limit: usize) -> Result<&'b str, ReadError> {
        if buf.len() < INITIAL_BUF {
            buf.resize(INITIAL_BUF, 0);
        }
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            match self.file.read_at(&mut buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len >= limit {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ReadError {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(std::str::from_utf8(&buf[..len]).unwrap_or(""))
    }
}

/// Parses an optional file; `None` when it is absent or unreadable.
pub fn optional<T>(file: &Option<Kept>, buf: &mut Vec<u8>, parse: impl FnOnce(&str) -> T) -> Option<T> {
    file.as_ref().and_then(|f| f.read(buf).ok()).map(parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_from_the_start_and_grows_the_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, "12\n").expect("write");
        let kept = Kept::open(path.clone()).expect("open");
        let mut buf = Vec::new();
        assert_eq!(kept.read(&mut buf).expect("read"), "12\n");
        let big = "x".repeat(3 * INITIAL_BUF + 5);
        std::fs::write(&path, &big).expect("rewrite");
        assert_eq!(kept.read(&mut buf).expect("read").len(), big.len(), "whole file");
        let prefix = kept.read_prefix(&mut buf, 10).expect("prefix");
        assert!(
            prefix.len() >= 10 && big.starts_with(prefix),
            "at least the prefix asked for"
        );
        let proc_stat = Kept::open(PathBuf::from("/proc/self/stat")).expect("procfs");
        assert!(proc_stat.read(&mut buf).expect("read").contains(')'));
        assert!(Kept::optional(dir.path().join("missing")).is_none());
        let err = Kept::open(dir.path().join("missing")).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
