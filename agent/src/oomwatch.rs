//! OOM kills from the kernel log (`/dev/kmsg`), so every kill of a berth
//! container is counted even when Docker misses it.
//!
//! Docker learns of an OOM kill from the container's memory cgroup. On
//! cgroup v1, when the killed process is the container's PID 1, the
//! container exits and its cgroup is removed before Docker reads the
//! notification: the container shows `State.OOMKilled=false` and no `oom`
//! event is sent, though the kernel did kill it. The kernel logs every kill
//! with the cgroup it charged (`oom-kill:…,task_memcg=/docker/ID,…`), which
//! is what kubelet's OOM watcher reads too.
//!
//! A dedicated thread reads records (blocking reads on a character device)
//! and sends the ids of killed containers on a channel; the supervisor
//! consumes them (it looks each container up and counts the kill once,
//! whether or not Docker reported it too). Reading starts at the end of the
//! log, so old kills are not counted again after a restart of the agent.
//! The thread ends at the next record after the receiver is gone, or with
//! the process.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use tokio::sync::mpsc;
use tracing::{info, warn};

/// Container ids waiting to be looked up; kills come one at a time, so a
/// few are plenty, and a burst beyond it only delays the thread.
pub const QUEUE: usize = 16;

/// The id of the container whose cgroup a kernel `oom-kill:` record
/// charged, from `task_memcg=` (cgroupfs `/docker/ID` or systemd
/// `/system.slice/docker-ID.scope`); `None` for any other record.
pub fn container_of(record: &str) -> Option<String> {
    // /dev/kmsg records are "PRIO,SEQ,USEC,FLAGS;TEXT"; dmesg lines have
    // a "[ time ]" prefix instead. Either way the text holds the fields.
    let text = record.split_once(';').map_or(record, |(_, t)| t);
    let fields = text
        .trim()
        .strip_prefix("oom-kill:")
        .or_else(|| text.find("oom-kill:").map(|i| &text[i + "oom-kill:".len()..]))?;
    let memcg = fields.split(',').find_map(|f| f.trim().strip_prefix("task_memcg="))?;
    let last = memcg.trim().rsplit('/').next()?;
    let id = last
        .strip_prefix("docker-")
        .and_then(|s| s.strip_suffix(".scope"))
        .unwrap_or(last);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// Whether the kernel log can be read (for `GetInfo`'s capabilities).
pub fn readable(path: &Path) -> bool {
    !path.as_os_str().is_empty() && std::fs::File::open(path).is_ok()
}

/// Starts reading the kernel log at `path` on its own thread, sending the
/// id of every container an OOM kill hit to `ids`. Logs once and returns
/// false when it cannot be read (not root, or no `/dev/kmsg` in a
/// container); Docker's own events still count what they see.
pub fn spawn(path: &Path, ids: mpsc::Sender<String>) -> bool {
    if path.as_os_str().is_empty() {
        return false;
    }
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            warn!(
                path = %path.display(),
                error = %e,
                "Cannot read the kernel log; OOM kills Docker misses (cgroup v1, PID 1) will not be counted."
            );
            return false;
        }
    };
    if let Err(e) = file.seek(SeekFrom::End(0)) {
        warn!(path = %path.display(), error = %e, "Cannot skip the kernel log's backlog; not watching it.");
        return false;
    }
    info!(path = %path.display(), "Watching the kernel log for OOM kills.");
    let reader_path = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("kmsg".into())
        .spawn(move || read_records(file, &reader_path, ids));
    if let Err(e) = spawned {
        warn!(error = %e, "Cannot start the kernel log reader thread.");
        return false;
    }
    true
}

fn read_records(mut file: std::fs::File, path: &Path, tx: mpsc::Sender<String>) {
    // One read returns one record; records are at most about 1 KiB, and a
    // longer one is truncated by the kernel to fit.
    let mut buf = vec![0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                if let Some(id) = container_of(&record)
                    && tx.blocking_send(id).is_err()
                {
                    return;
                }
            }
            // The ring buffer wrapped past us: records were lost; go on.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "Stopped reading the kernel log.");
                return;
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "758006cd52fdf3edda8ed433351dc5f4a843a1b74226702974daa56d3e44f238";

    #[test]
    fn finds_the_container_of_an_oom_kill_record() {
        // As read from /dev/kmsg on a cgroup v1 host (cgroupfs driver).
        let kmsg = format!(
            "6,9041,3874534948,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset={ID},\
             mems_allowed=0,oom_memcg=/docker/{ID},task_memcg=/docker/{ID},task=sh,pid=8269,uid=0\n"
        );
        assert_eq!(container_of(&kmsg).as_deref(), Some(ID));
        // As dmesg prints it, and with the systemd driver's scope.
        let dmesg = format!(
            "[ 3874.534948] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=x,mems_allowed=0,\
             oom_memcg=/system.slice/docker-{ID}.scope,task_memcg=/system.slice/docker-{ID}.scope,task=sh,pid=1,uid=0"
        );
        assert_eq!(container_of(&dmesg).as_deref(), Some(ID));
    }

    #[test]
    fn ignores_other_records() {
        assert_eq!(
            container_of("6,1,2,-;Memory cgroup out of memory: Killed process 8269 (sh)"),
            None
        );
        assert_eq!(
            container_of("6,1,2,-;oom-kill:constraint=CONSTRAINT_NONE,task_memcg=/user.slice,task=x,pid=1"),
            None
        );
        assert_eq!(container_of(""), None);
    }
}
