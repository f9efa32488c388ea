//! The process's two output streams, and what they are attached to.
//!
//! Owns stdout and stderr (or, in tests, any two writers): every byte
//! berthctl prints goes through [`Console::write`], one whole piece at a
//! time under one lock, so output from several hosts never interleaves
//! inside a line. Also knows whether each stream is a terminal (for
//! colours, progress bars and redrawing `top`), and owns the progress bars,
//! which are hidden while anything else is written.
//!
//! Input: bytes for [`Stream::Out`] or [`Stream::Err`]. Output: those bytes
//! written and flushed, or a [`WriteError`]; a reader that went away (`|
//! head -1`) is [`WriteError::Closed`], which berthctl treats as a quiet
//! end, not a failure. Nothing to shut down: each write is flushed.

use std::fmt;
use std::io::{self, IsTerminal as _, Write};
use std::sync::{Arc, Mutex, OnceLock};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};

/// Which of the two streams a piece of output goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Results: tables, documents, log lines (stdout).
    Out,
    /// Commentary: deploy steps, hints, a container's stderr (stderr).
    Err,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Out => "stdout",
            Stream::Err => "stderr",
        })
    }
}

/// Writing output failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The reader went away (a closed pipe, e.g. `berthctl events | head -1`).
    /// Not a failure: there is no one left to tell.
    #[error("{0} was closed")]
    Closed(Stream),
    /// Any other write error (a full disk, a revoked terminal).
    #[error("cannot write to {stream}: {source}")]
    Failed {
        /// Which stream.
        stream: Stream,
        /// What the OS said.
        source: io::Error,
    },
}

impl WriteError {
    fn from_io(stream: Stream, e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            WriteError::Closed(stream)
        } else {
            WriteError::Failed { stream, source: e }
        }
    }

    /// True when `err`, or anything in its chain, is a closed output stream.
    pub fn is_closed(err: &anyhow::Error) -> bool {
        err.chain()
            .any(|e| matches!(e.downcast_ref::<WriteError>(), Some(WriteError::Closed(_))))
    }
}

type Writer = Box<dyn Write + Send>;

/// stdout and stderr, shared by every sink of one berthctl run.
pub struct Console {
    writers: Mutex<(Writer, Writer)>,
    out_tty: bool,
    err_tty: bool,
    colour: bool,
    /// Whether progress bars may be drawn (stderr is a terminal).
    bars_allowed: bool,
    /// The bars, made with the first one, so that output written before
    /// any bar (most commands never draw one) goes straight to the stream.
    bars: OnceLock<MultiProgress>,
}

impl Console {
    /// The process's stdout and stderr. Colours are used on a terminal
    /// unless `NO_COLOR` is set (<https://no-color.org>).
    pub fn stdio() -> Arc<Console> {
        let out_tty = io::stdout().is_terminal();
        let err_tty = io::stderr().is_terminal();
        let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let mut console = Console::new(Box::new(io::stdout()), Box::new(io::stderr()), out_tty, err_tty, colour);
        console.bars_allowed = err_tty;
        Arc::new(console)
    }

    /// Any two writers, with what they should be taken for (tests use this
    /// to capture output as a terminal or as a pipe). No progress bars.
    pub fn new(out: Writer, err: Writer, out_tty: bool, err_tty: bool, colour: bool) -> Console {
        Console {
            writers: Mutex::new((out, err)),
            out_tty,
            err_tty,
            colour,
            bars_allowed: false,
            bars: OnceLock::new(),
        }
    }

    /// Whether `stream` is a terminal.
    pub fn is_tty(&self, stream: Stream) -> bool {
        match stream {
            Stream::Out => self.out_tty,
            Stream::Err => self.err_tty,
        }
    }

    /// Whether to colour what goes to `stream`.
    pub fn colours(&self, stream: Stream) -> bool {
        self.colour && self.is_tty(stream)
    }

    /// Writes all of `bytes` to `stream` and flushes, with the progress
    /// bars out of the way.
    pub fn write(&self, stream: Stream, bytes: &[u8]) -> Result<(), WriteError> {
        let write = || {
            // A writer that panicked mid-write leaves nothing we need to keep.
            let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
            let w = match stream {
                Stream::Out => &mut writers.0,
                Stream::Err => &mut writers.1,
            };
            w.write_all(bytes).and_then(|()| w.flush())
        };
        match self.bars.get() {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
        .map_err(|e| WriteError::from_io(stream, e))
    }

    /// A new progress bar on stderr when it is a terminal; `None` otherwise.
    pub fn progress_bar(&self) -> Option<ProgressBar> {
        if !self.bars_allowed {
            return None;
        }
        let bars = self
            .bars
            .get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Some(bars.add(ProgressBar::new(0)))
    }
}

/// Writers that keep what is written, for tests of renderers and sinks.
#[cfg(test)]
pub(crate) mod capture {
    use super::*;

    /// A writer whose bytes can be read back; clones share them.
    #[derive(Clone, Default)]
    pub struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Buf {
        /// Everything written so far, as text.
        pub fn written(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("buf")).into_owned()
        }
    }

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buf").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A console writing into two [`Buf`]s, with both streams taken for
    /// terminals when `tty` (colours on) and for pipes otherwise.
    pub fn console(tty: bool) -> (Arc<Console>, Buf, Buf) {
        let (out, err) = (Buf::default(), Buf::default());
        let c = Console::new(Box::new(out.clone()), Box::new(err.clone()), tty, tty, true);
        (Arc::new(c), out, err)
    }

    /// A writer whose reader has gone away.
    pub struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::capture::*;
    use super::*;

    #[test]
    fn each_stream_gets_its_own_bytes() {
        let (c, out, err) = console(false);
        c.write(Stream::Out, b"a\n").expect("out");
        c.write(Stream::Err, b"b\n").expect("err");
        assert_eq!((out.written(), err.written()), ("a\n".into(), "b\n".into()));
        assert!(!c.colours(Stream::Out) && c.progress_bar().is_none());
    }

    #[test]
    fn a_closed_pipe_is_told_apart_from_other_failures() {
        let c = Console::new(Box::new(ClosedPipe), Box::new(io::sink()), false, false, false);
        let e = c.write(Stream::Out, b"x\n").expect_err("closed");
        assert!(matches!(e, WriteError::Closed(Stream::Out)), "{e}");
        assert!(WriteError::is_closed(&anyhow::Error::from(e).context("ps")));
        let other = anyhow::Error::from(WriteError::from_io(Stream::Err, io::Error::other("disk full")));
        assert!(!WriteError::is_closed(&other));
        assert_eq!(other.to_string(), "cannot write to stderr: disk full");
    }
}
