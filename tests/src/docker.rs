//! The Docker side of the tests: the test registry and images, and the
//! `docker` CLI to look at (and clean up) what the agents created.

use std::process::Command;

/// The test registry (`BERTH_TEST_REGISTRY`, default 127.0.0.1:5000).
pub fn registry() -> String {
    std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned())
}

/// A test image reference: v1, v2, bad, crashy, cpu, mem.
pub fn image(tag: &str) -> String {
    format!("{}/berth-test/app:{tag}", registry())
}

/// Runs the docker CLI; panics with its stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Ids of the containers of `instance` (and `service`), in any state.
pub fn containers(instance: &str, service: Option<&str>) -> Vec<String> {
    ids(instance, service, &[])
}

/// Ids of the running containers of `instance` and `service`.
pub fn running(instance: &str, service: &str) -> Vec<String> {
    ids(instance, Some(service), &["status=running"])
}

/// The one running container of `service` (others may be stopped);
/// panics unless exactly one runs. A blue-green deploy answers before the
/// old container's drain ends, so this gives that a few seconds.
pub fn one_running(instance: &str, service: &str) -> String {
    let all = settled(|| running(instance, service));
    assert_eq!(all.len(), 1, "exactly one running container of {service}: {all:?}");
    all[0].clone()
}

/// The only container of `service`, which runs; panics unless there is
/// exactly one and it runs. A deploy answers once its new revision serves
/// and removes the old containers right after, so this gives that a few
/// seconds.
pub fn only_container(instance: &str, service: &str) -> String {
    let all = settled(|| containers(instance, Some(service)));
    assert_eq!(all.len(), 1, "exactly one container of {service}: {all:?}");
    assert_eq!(inspect(&all[0], "{{.State.Running}}"), "true");
    all[0].clone()
}

/// What `list` shows once it shows at most one container, or after 10 s:
/// a deploy's old containers are removed after it answers (its drain
/// included), under the service's lock.
fn settled(list: impl Fn() -> Vec<String>) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let all = list();
        if all.len() <= 1 || std::time::Instant::now() >= deadline {
            return all;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn ids(instance: &str, service: Option<&str>, more: &[&str]) -> Vec<String> {
    let mut filters = vec![format!("label=berth.instance={instance}")];
    filters.extend(service.map(|s| format!("label=berth.service={s}")));
    filters.extend(more.iter().map(|f| (*f).to_owned()));
    let mut cmd = Command::new("docker");
    cmd.args(["ps", "-aq", "--no-trunc"]);
    for f in &filters {
        cmd.args(["--filter", f]);
    }
    let out = cmd.output().expect("run docker");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Force-removes (with their volumes) every container of `instance` and of
/// the instances named `instance-*` (a fleet's agents), in any state, then
/// the named volumes and networks those agents created.
pub fn remove_instance_containers(instance: &str) {
    let fleet = format!("{instance}-");
    let ours = |i: &str| i == instance || i.starts_with(&fleet);
    let doomed = labelled(&["ps", "-a", "--no-trunc"], "{{.ID}}", ours);
    if !doomed.is_empty() {
        let _ = Command::new("docker").args(["rm", "-f", "-v"]).args(&doomed).output();
    }
    // Then the named volumes and networks the instance's agents created
    // (labelled like their containers), which nothing uses any more.
    for kind in ["volume", "network"] {
        let doomed = labelled(&[kind, "ls"], "{{.Name}}", ours);
        if !doomed.is_empty() {
            let _ = Command::new("docker").args([kind, "rm"]).args(&doomed).output();
        }
    }
}

/// What `docker LIST...` shows with a `berth.instance` label for which
/// `ours` holds, each as `FIELD` prints it.
fn labelled(list: &[&str], field: &str, ours: impl Fn(&str) -> bool) -> Vec<String> {
    let out = Command::new("docker")
        .args(list)
        .args(["--filter", "label=berth.instance"])
        .args(["--format", &format!("{field} {{{{.Label \"berth.instance\"}}}}")])
        .output()
        .expect("run docker");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, i)| ours(i))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The environment of a running container, as `env` inside it prints it;
/// `None` while it does not run.
pub fn env_of(id: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let out = Command::new("docker").args(["exec", id, "env"]).output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

/// `docker inspect -f FORMAT ID`.
pub fn inspect(id: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, id])
}

/// Like [`inspect`], for polling: `None` once the container is gone (a
/// deploy may remove one between a listing and the look), not a panic.
pub fn try_inspect(id: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The container whose network `id` has: the network holder it joined
/// (`network_mode container:ID`), or itself.
pub fn network_of(id: &str) -> String {
    let mode = inspect(id, "{{.HostConfig.NetworkMode}}");
    match mode.trim().strip_prefix("container:") {
        Some(holder) => holder.to_owned(),
        None => id.to_owned(),
    }
}

/// The host port Docker published for container port 8000 of `id`.
/// A container that joined a network holder has its ports there.
pub fn host_port(id: &str) -> u16 {
    let p = inspect(
        &network_of(id),
        "{{(index (index .NetworkSettings.Ports \"8000/tcp\") 0).HostPort}}",
    );
    p.parse()
        .unwrap_or_else(|_| panic!("no published port 8000 on {id}: {p:?}"))
}
