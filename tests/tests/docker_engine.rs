//! The agent's Docker adapter (`berth_agent::docker`) against the real
//! Docker Engine and the local registry: pulls with progress, a limited
//! container end to end, die events with exit codes, logs, exec, create
//! conflicts and listing by label. These never skip: without Docker they
//! fail, naming what is missing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_agent::config::DockerConfig;
use berth_agent::docker::{ContainerInfo, CreateRequest, DockerError, Engine, LogLine, PortBinding, SoftLimits};
use berth_core::image::ImageRef;
use berth_core::labels;
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::sync::mpsc;

const SETUP_HINT: &str = "these tests need the Docker Engine on /var/run/docker.sock and the \
                          test registry; run `bash scripts/test-env.sh`";

fn test_image(tag: &str) -> String {
    let registry = std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_owned());
    format!("{registry}/berth-test/app:{tag}")
}

/// This test process's instance: a running agent (quickstart, e2e tests)
/// never sees these containers, and these tests never see its.
fn test_instance() -> String {
    format!("dockertest-{}", std::process::id())
}

async fn engine() -> Engine {
    let config = DockerConfig {
        instance: test_instance(),
        ..DockerConfig::default()
    };
    match Engine::connect(&config, Vec::new()).await {
        Ok(engine) => engine,
        Err(e) => panic!("{e}; {SETUP_HINT}"),
    }
}

fn image_ref(image: &str) -> ImageRef {
    image.parse().expect("a valid test image reference")
}

async fn ensure_image(engine: &Engine, tag: &str) -> String {
    let image = test_image(tag);
    if let Err(e) = engine.pull(&image_ref(&image), None).await {
        panic!("{e}; {SETUP_HINT}");
    }
    image
}

/// Removes the test's containers when the test ends, pass or fail, with
/// the docker CLI (blocking is fine in a drop at the end of a test).
#[derive(Default)]
struct Cleanup {
    names: Vec<String>,
}

impl Cleanup {
    /// A unique container name, removed on drop.
    fn name(&mut self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("berth-dockertest-{}-{n}", std::process::id());
        self.names.push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v", name])
                .output();
        }
    }
}

fn request(name: &str, image: &str, service: &str) -> CreateRequest {
    CreateRequest {
        name: name.to_owned(),
        image: image.to_owned(),
        command: vec![],
        entrypoint: None,
        env: vec![],
        ports: vec![],
        memory_bytes: None,
        nano_cpus: None,
        labels: HashMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::INSTANCE.to_owned(), test_instance()),
            (labels::SERVICE.to_owned(), service.to_owned()),
            (labels::REVISION.to_owned(), "1".to_owned()),
            ("berth.test".to_owned(), "true".to_owned()),
        ]),
        stop_signal: "SIGTERM".to_owned(),
        stop_timeout: Duration::from_secs(5),
        log_driver: "json-file".to_owned(),
        ..CreateRequest::default()
    }
}

async fn inspect_existing(engine: &Engine, id: &str) -> ContainerInfo {
    engine
        .inspect(id)
        .await
        .expect("inspect works")
        .expect("the container exists")
}

#[tokio::test]
async fn pull_reports_progress_and_names_unknown_tags() {
    let engine = engine().await;
    let image = test_image("v1");
    let (tx, mut rx) = mpsc::channel(1024);
    if let Err(e) = engine.pull(&image_ref(&image), Some(tx)).await {
        panic!("{e}; {SETUP_HINT}");
    }
    let mut messages = Vec::new();
    while let Some(message) = rx.recv().await {
        messages.push(message);
    }
    assert!(!messages.is_empty(), "no progress while pulling {image}");
    assert!(messages.iter().any(|m| !m.status.is_empty()), "{messages:?}");
    assert!(engine.image_exists(&image).await.expect("inspect image"));

    let missing = test_image("v9-does-not-exist");
    assert!(!engine.image_exists(&missing).await.expect("inspect image"));
    let err = engine
        .pull(&image_ref(&missing), None)
        .await
        .expect_err("the tag does not exist");
    assert!(matches!(err, DockerError::Pull { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("cannot pull {missing}: ")), "{text}");
    assert!(
        text.contains("manifest unknown") || text.contains("not found"),
        "{text}"
    );

    // No tag means ":latest" only; the test registry has no such tag, so
    // the pull fails naming it (pulling every tag would have succeeded).
    let untagged = image.rsplit_once(':').map_or(image.as_str(), |(name, _)| name);
    let err = engine
        .pull(&image_ref(untagged), None)
        .await
        .expect_err("the test registry has no :latest");
    assert!(err.to_string().contains(":latest"), "{err}");
}

#[tokio::test]
async fn runs_a_limited_container_end_to_end() {
    let engine = engine().await;
    let image = ensure_image(&engine, "v1").await;
    let mut cleanup = Cleanup::default();
    let name = cleanup.name();
    let mut req = request(&name, &image, "dockertest-web");
    req.memory_bytes = Some(64 * 1024 * 1024);
    req.nano_cpus = Some(500_000_000);
    req.ports = vec![PortBinding {
        container_port: 8000,
        protocol: "tcp".into(),
        host_ip: Some("127.0.0.1".into()),
        host_port: None,
    }];

    let id = engine.create(&req).await.expect("create");
    let created = inspect_existing(&engine, &id).await;
    assert_eq!(created.state, "created");
    assert_eq!(created.exit_code, None);

    engine.start(&id).await.expect("start");
    engine.start(&id).await.expect("starting a running container is Ok");
    let info = inspect_existing(&engine, &id).await;
    assert_eq!(info.id, id);
    assert_eq!(info.name, name);
    assert_eq!(info.image, image);
    assert_eq!(info.service.as_deref(), Some("dockertest-web"));
    assert_eq!(info.revision, Some(1));
    assert!(info.running, "{info:?}");
    assert_eq!(info.state, "running");
    assert_eq!(info.memory_bytes, 67_108_864);
    assert_eq!(info.memory_swap_bytes, 67_108_864);
    assert_eq!(info.nano_cpus, 500_000_000);
    assert!(info.ip.is_some(), "no IP: {info:?}");
    assert!(info.started_at_ms.is_some());
    let bound = info
        .host_ports
        .iter()
        .find(|p| p.container_port == 8000 && p.protocol == "tcp")
        .unwrap_or_else(|| panic!("port 8000 not published: {info:?}"));
    assert!(bound.host_port > 0);
    assert_eq!(bound.host_ip, "127.0.0.1");

    // The health endpoint answers, inside (exec) and through the port.
    let health = vec![
        "wget".to_owned(),
        "-q".to_owned(),
        "-O-".to_owned(),
        "http://127.0.0.1:8000/health".to_owned(),
    ];
    let mut last = None;
    for _ in 0..50 {
        let result = engine.exec(&id, &health, Duration::from_secs(5)).await.expect("exec");
        if result == (0, "ok".to_owned()) {
            last = Some(result);
            break;
        }
        last = Some(result);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, Some((0, "ok".to_owned())));
    let failing = engine
        .exec(
            &id,
            &["sh".into(), "-c".into(), "echo oops >&2; exit 7".into()],
            Duration::from_secs(5),
        )
        .await
        .expect("exec");
    assert_eq!(failing, (7, "oops\n".to_owned()));
    let slow = engine
        .exec(&id, &["sleep".into(), "5".into()], Duration::from_millis(300))
        .await
        .expect_err("sleep outlasts the timeout");
    assert!(matches!(slow, DockerError::ExecTimeout { .. }), "{slow:?}");

    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", bound.host_port))
        .await
        .expect("published port accepts connections");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read response");
    assert!(
        response.starts_with("HTTP/1.") && response.contains(" 200 "),
        "{response}"
    );

    // Limits change in place; lifting one is refused with a reason.
    engine
        .update_limits(&id, Some(128 * 1024 * 1024), Some(1_000_000_000), SoftLimits::default())
        .await
        .expect("update limits");
    let updated = inspect_existing(&engine, &id).await;
    assert_eq!(updated.memory_bytes, 134_217_728);
    assert_eq!(updated.memory_swap_bytes, 134_217_728);
    assert_eq!(updated.nano_cpus, 1_000_000_000);
    let err = engine
        .update_limits(&id, None, Some(1_000_000_000), SoftLimits::default())
        .await
        .expect_err("docker update cannot lift a memory limit");
    assert!(
        matches!(err, DockerError::LimitNotRemovable { limit: "memory", .. }),
        "{err:?}"
    );

    let managed = engine.list_managed().await.expect("list managed");
    assert!(managed.iter().any(|c| c.id == id), "{id} not listed");

    // Stop and remove are idempotent.
    engine.stop(&id, Duration::from_secs(5)).await.expect("stop");
    engine.stop(&id, Duration::from_secs(5)).await.expect("stop again");
    let stopped = inspect_existing(&engine, &id).await;
    assert!(!stopped.running);
    assert_eq!(stopped.state, "exited");
    assert!(stopped.host_ports.is_empty());
    engine.remove(&id).await.expect("remove");
    engine.remove(&id).await.expect("remove again");
    assert_eq!(engine.inspect(&id).await.expect("inspect"), None);
    engine
        .stop(&id, Duration::from_secs(1))
        .await
        .expect("stop a removed container");
    let err = engine.start(&id).await.expect_err("start a removed container");
    assert!(matches!(err, DockerError::NoSuchContainer { .. }), "{err:?}");
}

#[tokio::test]
async fn a_crashing_container_reports_die_with_its_exit_code() {
    let engine = engine().await;
    let image = ensure_image(&engine, "crashy").await;
    let mut cleanup = Cleanup::default();
    let name = cleanup.name();

    // Subscribe before the container exists; the stream is polled later.
    let events = engine.events();
    let id = engine
        .create(&request(&name, &image, "dockertest-crashy"))
        .await
        .expect("create");
    engine.start(&id).await.expect("start");

    let mut events = std::pin::pin!(events);
    let mut seen = Vec::new();
    let die = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            let event = event.expect("event stream");
            if event.container_id != id {
                continue;
            }
            seen.push(event.action.clone());
            if event.action == "die" {
                return Some(event);
            }
        }
        None
    })
    .await;
    let die = match die {
        Ok(Some(die)) => die,
        other => panic!("no die event for {id} ({other:?}); saw {seen:?}"),
    };
    assert_eq!(die.exit_code, Some(3));
    assert_eq!(die.service.as_deref(), Some("dockertest-crashy"));
    assert_eq!(die.revision, Some(1));
    assert!(die.time_ms > 0);
    assert!(seen.iter().any(|a| a == "start"), "{seen:?}");

    let info = inspect_existing(&engine, &id).await;
    assert!(!info.running);
    assert_eq!(info.state, "exited");
    assert_eq!(info.exit_code, Some(3));
    assert!(!info.oom_killed);
    assert!(info.finished_at_ms >= info.started_at_ms, "{info:?}");

    let tail = engine.log_tail(&id, 5).await;
    assert!(tail.iter().any(|l| l.contains("crashy: exiting with 3")), "{tail:?}");
    let last_one = engine.log_tail(&id, 1).await;
    assert_eq!(last_one.len(), 1, "{last_one:?}");

    // A finished container's log stream ends even when following.
    let lines: Vec<LogLine> = tokio::time::timeout(Duration::from_secs(10), engine.logs(&id, true, 0).try_collect())
        .await
        .expect("the log stream of a stopped container ends")
        .expect("logs");
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "stdout" && l.line == "crashy: starting"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.line == "crashy: exiting with 3"), "{lines:?}");

    let missing: Result<Vec<LogLine>, _> = engine
        .logs("berth-dockertest-no-such-container", false, 0)
        .try_collect()
        .await;
    assert!(
        matches!(missing, Err(DockerError::NoSuchContainer { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn create_names_conflicts_and_missing_images() {
    let engine = engine().await;
    let image = ensure_image(&engine, "v1").await;
    let mut cleanup = Cleanup::default();
    let name = cleanup.name();
    let req = request(&name, &image, "dockertest-conflict");
    engine.create(&req).await.expect("first create");
    let err = engine.create(&req).await.expect_err("same name twice");
    assert!(matches!(err, DockerError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains(&name), "{err}");

    let other = cleanup.name();
    let missing_image = test_image("never-pulled");
    let err = engine
        .create(&request(&other, &missing_image, "dockertest-conflict"))
        .await
        .expect_err("image not present");
    assert!(matches!(err, DockerError::ImageMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("pull it first"), "{err}");
}

#[tokio::test]
async fn list_managed_finds_only_labelled_containers() {
    let engine = engine().await;
    let image = ensure_image(&engine, "v1").await;
    let mut cleanup = Cleanup::default();
    let mut ours = Vec::new();
    for _ in 0..2 {
        let name = cleanup.name();
        ours.push(
            engine
                .create(&request(&name, &image, "dockertest-list"))
                .await
                .expect("create"),
        );
    }
    let unmanaged_name = cleanup.name();
    let mut unmanaged = request(&unmanaged_name, &image, "dockertest-list");
    unmanaged.labels.remove(labels::MANAGED);
    let unmanaged_id = engine.create(&unmanaged).await.expect("create");

    let listed = engine.list_managed().await.expect("list managed");
    for id in &ours {
        let info = listed
            .iter()
            .find(|c| &c.id == id)
            .unwrap_or_else(|| panic!("{id} not listed"));
        assert_eq!(info.service.as_deref(), Some("dockertest-list"));
        assert_eq!(info.labels.get("berth.test").map(String::as_str), Some("true"));
        assert_eq!(info.state, "created");
    }
    assert!(listed.iter().all(|c| c.id != unmanaged_id));
    assert!(
        listed
            .iter()
            .all(|c| c.labels.get(labels::MANAGED).map(String::as_str) == Some("true"))
    );
}
