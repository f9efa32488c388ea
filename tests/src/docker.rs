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
    let mut args = vec![
        "ps".to_owned(),
        "-aq".to_owned(),
        "--no-trunc".to_owned(),
        "--filter".to_owned(),
        format!("label=berth.instance={instance}"),
    ];
    if let Some(s) = service {
        args.push("--filter".into());
        args.push(format!("label=berth.service={s}"));
    }
    let out = Command::new("docker").args(&args).output().expect("run docker");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `docker inspect -f FORMAT ID`.
pub fn inspect(id: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, id])
}

/// The host port Docker published for container port 8000 of `id`.
pub fn host_port(id: &str) -> u16 {
    let p = inspect(id, "{{(index (index .NetworkSettings.Ports \"8000/tcp\") 0).HostPort}}");
    p.parse()
        .unwrap_or_else(|_| panic!("no published port 8000 on {id}: {p:?}"))
}
