//! The certificates and temp dir of one test: a fresh CA, an agent
//! certificate and an operator client certificate, and the Docker instance
//! name its agents use. Dropping it removes that instance's containers.

use std::path::PathBuf;

use berthctl::certs::{self, Role, Validity};

use crate::docker::remove_instance_containers;

/// A temp dir with a CA, an agent certificate for 127.0.0.1 and localhost,
/// and an operator client certificate named "alice". Its agents use their
/// own `docker.instance`, so tests in parallel never see each other's
/// containers; dropping it removes every container of that instance (and
/// of the instances named after it, a fleet's).
pub struct Pki {
    /// Holds everything; removed on drop.
    pub dir: tempfile::TempDir,
    /// The agents' `docker.instance`.
    pub instance: String,
}

impl Drop for Pki {
    fn drop(&mut self) {
        remove_instance_containers(&self.instance);
    }
}

impl Pki {
    /// Mints a fresh CA, agent and operator certificates.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-test-")
            .tempdir()
            .expect("tempdir");
        let tls = dir.path().join("tls");
        certs::init_ca(&tls, Validity::days(1), false).expect("ca");
        certs::issue_agent(
            &tls,
            "agent",
            &["127.0.0.1".into(), "localhost".into()],
            Validity::days(1),
            false,
        )
        .expect("agent cert");
        certs::issue_client(&tls, "alice", Role::Operator, Validity::days(1), false).expect("client cert");
        let tag = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let instance = format!(
            "t{}-{}",
            std::process::id(),
            tag.trim_start_matches("berth-test-").to_lowercase()
        );
        Pki { dir, instance }
    }

    /// The dir berthctl's --tls-dir points at.
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// Issues a client certificate `NAME.pem` with `role` next to alice's.
    /// With two client certificates there, berthctl needs `--cert NAME`.
    pub fn issue_client(&self, name: &str, role: Role) {
        certs::issue_client(&self.tls_dir(), name, role, Validity::days(1), false)
            .unwrap_or_else(|e| panic!("client certificate {name}: {e}"));
    }

    /// A path inside the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
