//! A cuttable stand-in for the path to dockerd: a unix-socket forwarder in
//! front of the real `/var/run/docker.sock`. Cutting it closes every
//! connection and refuses new ones, which is what an agent sees when
//! dockerd goes away; restoring it is dockerd coming back. The engine
//! behind it is the real one throughout.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const DOCKER_SOCK: &str = "/var/run/docker.sock";

/// The forwarder; cut on drop.
pub struct DockerProxy {
    /// The socket the agent should use.
    pub socket: PathBuf,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
}

impl DockerProxy {
    /// Listens on `dir/docker.sock`.
    pub fn start(dir: &Path) -> DockerProxy {
        let proxy = DockerProxy {
            socket: dir.join("docker.sock"),
            open: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.restore();
        proxy
    }

    /// dockerd "comes back": accept and forward again.
    pub fn restore(&self) {
        let _ = std::fs::remove_file(&self.socket);
        let listener = UnixListener::bind(&self.socket).expect("bind proxy socket");
        self.open.store(true, Ordering::SeqCst);
        let (open, conns) = (self.open.clone(), self.conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if !open.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = UnixStream::connect(DOCKER_SOCK) else {
                    continue;
                };
                let mut list = conns.lock().unwrap_or_else(|p| p.into_inner());
                for s in [&client, &upstream] {
                    if let Ok(c) = s.try_clone() {
                        list.push(c);
                    }
                }
                pump(&client, &upstream);
                pump(&upstream, &client);
            }
        });
    }

    /// dockerd "goes away": every connection closes, new ones are refused.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = UnixStream::connect(&self.socket);
        let _ = std::fs::remove_file(&self.socket);
        for c in self.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn pump(from: &UnixStream, to: &UnixStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}
