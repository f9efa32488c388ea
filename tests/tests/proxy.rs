//! nginx in front of services, against a real nginx and real Docker:
//! routing, zero-downtime blue-green deploys under load, a bad version never
//! switched in, nginx refusing a setting, and hand edits to the site undone.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use berth_tests::nginx::{Nginx, get};
use berth_tests::{Agent, Pki, Spec, agent_config, apply, berthctl, fails, free_port, image, ok, wait_until};

const HOST: &str = "app.berth.test";

/// A service behind nginx: `HOST` on port `listen`, health-checked on
/// nginx's heartbeat path, drained for 1s when replaced.
fn site(name: &str, tag: &str, listen: u16) -> Spec {
    Spec::checked(name, tag)
        .set("health", "http", "/__lbheartbeat__")
        .set("deploy", "drain", "1s")
        .proxy(HOST, listen)
}

/// Fields drop in order: the agent stops first, so it cannot recreate a
/// container after the Pki's drop has removed them.
struct Setup {
    agent: Agent,
    nginx: Nginx,
    pki: Pki,
    port: u16,
}

fn setup(name: &str, tag: &str) -> Setup {
    let pki = Pki::new();
    let nginx = Nginx::start(pki.dir.path());
    let agent = Agent::start_ready(&pki, &agent_config(&pki, &nginx.agent_config()));
    let port = free_port();
    let s = Setup {
        pki,
        nginx,
        agent,
        port,
    };
    ok(&apply(&s.pki, &s.agent.addr, &site(name, tag, port)));
    s
}

/// Continuous GET / through nginx on 4 threads until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    last: Arc<Mutex<String>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let last = Arc::new(Mutex::new(String::new()));
        let threads = (0..4)
            .map(|_| {
                let (stop, ok, failed, last) = (stop.clone(), ok.clone(), failed.clone(), last.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match get(port, HOST, "/") {
                            Ok((200, body)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                *last.lock().unwrap_or_else(|p| p.into_inner()) = body;
                            }
                            Ok((status, body)) => failed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("{status} {body}")),
                            Err(e) => failed.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            last,
            threads,
        }
    }

    /// Stops and returns (ok, failures, last body).
    fn finish(self) -> (u64, Vec<String>, String) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (self.ok.load(Ordering::Relaxed), failed, last)
    }
}

#[test]
fn requests_through_nginx_reach_the_service() {
    let s = setup("front", "v1");
    assert_eq!(get(s.port, HOST, "/").expect("GET /"), (200, "v1".to_owned()));
    assert_eq!(
        get(s.port, HOST, "/__lbheartbeat__").expect("heartbeat"),
        (200, "ok".to_owned())
    );
    assert_eq!(
        get(s.port, HOST, "/__version__").expect("version").1,
        "{\"version\":\"v1\"}"
    );
    let site = std::fs::read_to_string(s.nginx.site("front")).expect("site file");
    assert!(
        site.contains(&format!("listen {};", s.port)) && site.contains(HOST),
        "{site}"
    );
    let ps = ok(&berthctl(&s.pki, &s.agent.addr, &["ps"]));
    assert!(ps.contains(&format!("front: nginx {HOST}:{} -> 172.", s.port)), "{ps}");

    // Removing the service removes its site.
    ok(&berthctl(&s.pki, &s.agent.addr, &["rm", "front"]));
    assert!(!s.nginx.site("front").exists());
}

#[test]
fn blue_green_deploy_under_load_drops_nothing() {
    let s = setup("zero", "v1");
    let load = Load::start(s.port);
    std::thread::sleep(Duration::from_millis(500));
    let out = ok(&berthctl(
        &s.pki,
        &s.agent.addr,
        &["deploy", "zero", "--image", &image("v2")],
    ));
    assert!(out.contains("revision 2 is running and healthy"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let (served, failed, last) = load.finish();
    assert!(
        failed.is_empty(),
        "{} failed requests out of {}: {:?}",
        failed.len(),
        served + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    assert!(served > 50, "the load really ran: {served} requests");
    assert_eq!(last, "v2", "traffic ends on v2");
    // The deploy answered once v2 served; the old container goes after its drain.
    berth_tests::only_container(&s.pki.instance, "zero");
}

#[test]
fn a_bad_version_is_never_switched_in() {
    let s = setup("guard", "v1");
    let load = Load::start(s.port);
    let out = berthctl(&s.pki, &s.agent.addr, &["deploy", "guard", "--image", &image("bad")]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    fails(&out);
    assert!(
        stdout.contains("kept serving") || stdout.contains("rolled back"),
        "{stdout}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (served, failed, last) = load.finish();
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(served > 20, "{served}");
    assert_eq!(last, "v1");
    let site = std::fs::read_to_string(s.nginx.site("guard")).expect("site");
    let containers = berth_tests::containers(&s.pki.instance, Some("guard"));
    assert_eq!(containers.len(), 1, "the bad container is gone");
    let ip = berth_tests::inspect(&containers[0], "{{.NetworkSettings.IPAddress}}");
    assert!(
        site.contains(&format!("server {ip}:8000")),
        "nginx still points at v1: {site}"
    );
}

#[test]
fn an_invalid_proxy_setting_fails_with_nginx_words_and_changes_nothing() {
    let s = setup("strict", "v1");
    let before = std::fs::read_to_string(s.nginx.site("strict")).expect("site");
    let bad = site("strict", "v2", s.port)
        .set("proxy", "tls_cert", "/nonexistent/berth.pem")
        .set("proxy", "tls_key", "/nonexistent/berth.key");
    let out = apply(&s.pki, &s.agent.addr, &bad);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    fails(&out);
    assert!(stdout.contains("nginx rejected the site"), "{stdout}");
    assert!(
        stdout.contains("/nonexistent/berth.pem"),
        "nginx's own message: {stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(s.nginx.site("strict")).expect("site"),
        before,
        "site untouched"
    );
    assert_eq!(get(s.port, HOST, "/").expect("GET"), (200, "v1".to_owned()));
}

#[test]
fn a_site_edited_or_removed_by_hand_is_restored() {
    let s = setup("mended", "v1");
    let path = s.nginx.site("mended");
    let good = std::fs::read_to_string(&path).expect("site");
    std::fs::write(&path, good.replace("proxy_read_timeout 60s", "proxy_read_timeout 1s")).expect("edit");
    wait_until(Duration::from_secs(40), "the edited site to be restored", || {
        std::fs::read_to_string(&path).is_ok_and(|c| c == good)
    });
    std::fs::remove_file(&path).expect("rm");
    wait_until(Duration::from_secs(40), "the removed site to be restored", || {
        path.exists()
    });
    assert_eq!(get(s.port, HOST, "/").expect("GET"), (200, "v1".to_owned()));
    assert!(s.agent.logs().contains("site-restored"), "{}", s.agent.logs());
}
