//! Health probes, run by the agent itself.
//!
//! Owns executing a spec's health checks against one container: HTTP GET
//! and TCP connect go from the agent to the container's address (so images
//! need no curl inside), exec runs through the Docker exec API, and the
//! version read of `[health.version]` ([`read_version`]). Also owns the
//! deploy gate ([`gate`]): a new container counts as up only when its ready
//! check passes (`success_threshold` times, for `min_healthy`) and it
//! reports the version being deployed, before the deadline; without
//! `[health]`, when Docker reports the image's HEALTHCHECK healthy. It
//! counts as failed as soon as it exits, keeps failing past its start
//! period, or serves another version.
//!
//! Inputs: the engine, a container and its spec. Outputs: an [`Outcome`]
//! or a [`GateFailure`]. Runs on the caller's task (the health monitor, a
//! deploy worker), bounded by the check's timeout; an HTTP probe drives its
//! connection inline and closes it when done. No task of its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::docker::{ContainerInfo, DockerError, Engine};
use berth_core::spec::{HealthCheck, Probe, ServiceSpec, VersionCheck};

/// How often the deploy gate probes at most: a healthy container should be
/// noticed quickly even when the spec's interval is long.
const GATE_SPACING: Duration = Duration::from_millis(500);

/// The deploy gate's first retry: the gate probes a new container as soon
/// as it started, and one that does not answer yet is usually a few
/// milliseconds from listening, so the gate retries after 2 ms, doubling
/// up to [`GATE_SPACING`] (or the check's interval, if shorter): a refused
/// connection on the host costs microseconds, and a deploy is done the
/// moment the new container answers.
const GATE_FIRST_RETRY: Duration = Duration::from_millis(2);

/// While a new container's probes fail, how often the gate inspects it to
/// notice an exit (each inspect is a Docker API call).
const GATE_INSPECT_EVERY: Duration = Duration::from_millis(50);

/// The most of a response body a probe keeps.
const BODY_LIMIT: usize = 16 * 1024;

/// Without a health check, how long a new container must stay up to count.
const NO_CHECK_SETTLE: Duration = Duration::from_secs(2);

/// Which of a service's checks a probe ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The live check (`[health.live]`, else `[health]`): failing it
    /// replaces the container.
    Live,
    /// `[health.deps]`: failing it marks the service degraded.
    Deps,
    /// `[health.version]`: a healthy outcome's output is the version read.
    Version,
}

/// The longest probe output kept, in bytes: enough for a status line or an
/// error, never a whole response or command output in events and logs.
pub const OUTPUT_LIMIT: usize = 512;

/// Env values shorter than this are not redacted: `1`, `yes` or `8000`
/// would blank out ordinary words and numbers.
const REDACT_MIN_LEN: usize = 4;

/// Scrubs probe output of a service's env values before it reaches events,
/// `ps` or the agent log: an exec check that echoes `$DB_PASSWORD` must not
/// show it to viewers.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Values of at least [`REDACT_MIN_LEN`] bytes, longest first so a
    /// value containing another is replaced whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor of `values` (the service's env values).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= REDACT_MIN_LEN)
            .map(str::to_owned)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every secret replaced by `[redacted]`, then cut to
    /// [`OUTPUT_LIMIT`] bytes (redacting first, so a cut never leaves part
    /// of a secret).
    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        if out.len() > OUTPUT_LIMIT {
            berth_core::text::truncate_bytes(&mut out, OUTPUT_LIMIT - "...".len());
            out.push_str("...");
        }
        out
    }

    fn outcome(&self, outcome: Outcome) -> Outcome {
        Outcome {
            output: self.clean(&outcome.output),
            ..outcome
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the check passed.
    pub healthy: bool,
    /// The agent could not run the probe for a reason of its own (out of
    /// file descriptors or local ports, Docker unreachable): the result says
    /// nothing about the container, so it neither passes nor fails a check.
    pub unknown: bool,
    /// What the probe saw, for people: status line, error, command output.
    pub output: String,
}

/// Whether an I/O error is the agent's own shortage rather than the
/// container's answer: EMFILE/ENFILE (no file descriptors), EADDRNOTAVAIL
/// (no local port), ENOBUFS/ENOMEM (no kernel memory).
fn own_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EADDRNOTAVAIL | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Runs `check` once against `container`; its output is cleaned by
/// `redact`.
pub async fn probe(
    engine: &Engine,
    container: &ContainerInfo,
    spec: &ServiceSpec,
    check: &HealthCheck,
    redact: &Redactor,
) -> Outcome {
    redact.outcome(run_probe(engine, container, spec, check).await)
}

async fn run_probe(engine: &Engine, container: &ContainerInfo, spec: &ServiceSpec, check: &HealthCheck) -> Outcome {
    let timeout = check.timeout.as_std();
    let ip = container.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    match &check.probe {
        Probe::Http { path, .. } => {
            let Some(port) = spec.port_for(check) else {
                return fail("no port to probe: set health.port or ports".into());
            };
            match http_get(SocketAddr::new(ip, port), path, timeout).await {
                Ok((status, _)) if status.is_success() || status.is_redirection() => {
                    ok(format!("GET http://{ip}:{port}{path}: {status}"))
                }
                Ok((status, body)) => fail(
                    format!("GET http://{ip}:{port}{path}: {status} {}", snippet(&body))
                        .trim()
                        .to_owned(),
                ),
                Err(outcome) => outcome,
            }
        }
        Probe::Tcp { port } => {
            let addr = SocketAddr::new(ip, *port);
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => ok(format!("TCP {addr}: connected")),
                Ok(Err(e)) if own_resource_error(&e) => unknown(format!("TCP {addr}: {e}")),
                Ok(Err(e)) => fail(format!("TCP {addr}: {e}")),
                Err(_) => fail(format!("TCP {addr}: no answer within {}", check.timeout)),
            }
        }
        Probe::Exec { command } => match engine.exec(&container.id, command, timeout).await {
            Ok((0, out)) => ok(out),
            Ok((code, out)) => fail(format!("exit {code}: {}", out.trim())),
            // Docker not answering is not the container failing its check.
            Err(e @ (DockerError::Connect { .. } | DockerError::Unreachable { .. })) => unknown(e.to_string()),
            Err(e) => fail(e.to_string()),
        },
    }
}

/// Reads what `container` reports serving: a GET of `[health.version]`'s
/// path, whose body ([`VersionCheck::reported`]) is the version. `Err` holds
/// the failed probe, for people (and `unknown` when the agent could not try).
/// Both are cleaned by `redact`.
pub async fn read_version(
    container: &ContainerInfo,
    spec: &ServiceSpec,
    check: &HealthCheck,
    redact: &Redactor,
) -> Result<String, Outcome> {
    match run_read_version(container, spec, check).await {
        Ok(version) => Ok(redact.clean(&version)),
        Err(failed) => Err(redact.outcome(failed)),
    }
}

async fn run_read_version(
    container: &ContainerInfo,
    spec: &ServiceSpec,
    check: &HealthCheck,
) -> Result<String, Outcome> {
    let Some(version) = spec.health.as_ref().and_then(|h| h.version.as_ref()) else {
        return Err(fail("no [health.version] to read".into()));
    };
    let Some(port) = spec.version_port() else {
        return Err(fail(
            "no port to read the version from: set health.version.port or ports".into(),
        ));
    };
    let ip = container.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let url = format!("http://{ip}:{port}{}", version.path);
    match http_get(SocketAddr::new(ip, port), &version.path, check.timeout.as_std()).await? {
        (status, body) if status.is_success() => Ok(VersionCheck::reported(&String::from_utf8_lossy(&body))),
        (status, body) => Err(fail(
            format!("GET {url}: {status} {}", snippet(&body)).trim().to_owned(),
        )),
    }
}

/// One line of a response body: HTML error pages span many.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(400)])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(160)
        .collect()
}

/// GETs `path` from `addr`: the status and up to [`BODY_LIMIT`] bytes of
/// the body, or the failed probe.
async fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(hyper::StatusCode, Bytes), Outcome> {
    let url = format!("http://{addr}{path}");
    // Connecting is tried on its own: failing to get a socket is the
    // agent's problem, not the container's.
    let started = Instant::now();
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) if own_resource_error(&e) => return Err(unknown(format!("GET {url}: {e}"))),
        Ok(Err(e)) => return Err(fail(format!("GET {url}: {e}"))),
        Err(_) => return Err(fail(format!("GET {url}: no answer within {}ms", timeout.as_millis()))),
    };
    let left = timeout.saturating_sub(started.elapsed());
    let attempt = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::USER_AGENT, "berth-agent")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            // A version body or a little of an error page; never a whole
            // large response in the agent's memory.
            let body = http_body_util::Limited::new(resp.into_body(), BODY_LIMIT)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, String>((status, body))
        };
        // The connection is driven here, beside the exchange, rather than on
        // a task of its own: it lives exactly as long as this probe, and is
        // dropped (closed) with it.
        drive(conn, exchange).await
    };
    match tokio::time::timeout(left, attempt).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(fail(format!("GET {url}: {e}"))),
        Err(_) => Err(fail(format!("GET {url}: no answer within {}ms", timeout.as_millis()))),
    }
}

/// Runs `exchange` while polling `conn`, the HTTP/1 connection it talks
/// over. The connection may finish first (the server closed it after
/// answering); the exchange then completes from what was read.
async fn drive<C, E, T>(conn: C, exchange: E) -> Result<T, String>
where
    C: std::future::Future<Output = hyper::Result<()>>,
    E: std::future::Future<Output = Result<T, String>>,
{
    tokio::pin!(conn);
    tokio::pin!(exchange);
    let mut conn_done = false;
    loop {
        tokio::select! {
            result = &mut exchange => return result,
            closed = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = closed {
                    return Err(e.to_string());
                }
            }
        }
    }
}

fn ok(output: String) -> Outcome {
    Outcome {
        healthy: true,
        unknown: false,
        output,
    }
}

fn fail(output: String) -> Outcome {
    Outcome {
        healthy: false,
        unknown: false,
        output,
    }
}

fn unknown(output: String) -> Outcome {
    Outcome {
        healthy: false,
        unknown: true,
        output: format!("unknown, the agent could not probe: {output}"),
    }
}

/// Why a new container did not pass its gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateFailure {
    /// One sentence.
    pub reason: String,
    /// The last probe's output.
    pub health_output: String,
    /// The container's exit code, if it exited.
    pub exit_code: Option<i64>,
}

/// A new container that passed its gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatePass {
    /// The passing probe's output.
    pub output: String,
    /// What it reported serving, when the spec has `[health.version]`.
    pub version: Option<String>,
    /// The container as Docker showed it (running) just before the
    /// passing probe.
    pub info: ContainerInfo,
    /// How many times the gate looked at it.
    pub probes: u32,
}

/// Waits until `container_id` passes its ready check: `success_threshold`
/// passes in a row, passing for `min_healthy`, and then, with
/// `[health.version]`, reporting the version being deployed. Fails when the
/// container exits, when probes keep failing `retries` times in a row after
/// the start period, when it answers healthy but serves another version, or
/// at `deadline` (the spec's `deploy.health_deadline`).
/// Every output it returns is cleaned by `redact`.
pub async fn gate(
    engine: &Engine,
    container_id: &str,
    spec: &ServiceSpec,
    deadline: Duration,
    redact: &Redactor,
) -> Result<GatePass, GateFailure> {
    let started = Instant::now();
    let give_up = started + deadline;
    let mut last_output = String::new();
    let mut failures = 0u32;
    let mut passes = 0u32;
    let mut passing_since: Option<Instant> = None;
    let mut next_counted = started;
    let mut spacing = GATE_FIRST_RETRY;
    let mut probes = 0u32;
    // The container as the last inspect saw it, and when. A container
    // whose probe passed runs, so the next look needs no inspect; while
    // probes fail it is inspected again at most every GATE_INSPECT_EVERY,
    // so an exit fails the gate within that.
    let mut seen: Option<(ContainerInfo, Instant, bool)> = None;
    loop {
        probes += 1;
        let looked = match seen.take() {
            Some((info, at, answered)) if answered || at.elapsed() < GATE_INSPECT_EVERY => Ok(Some((info, at))),
            _ => engine
                .inspect(container_id)
                .await
                .map(|found| found.map(|info| (info, Instant::now()))),
        };
        let (info, looked_at) = match looked {
            Ok(Some(seen)) => seen,
            Ok(None) => {
                return Err(GateFailure {
                    reason: "the new container disappeared while starting".into(),
                    health_output: last_output,
                    exit_code: None,
                });
            }
            Err(e) => {
                return Err(GateFailure {
                    reason: format!("cannot inspect the new container: {e}"),
                    health_output: last_output,
                    exit_code: None,
                });
            }
        };
        if !info.running {
            let code = info.exit_code;
            return Err(GateFailure {
                reason: match (code, info.oom_killed) {
                    (_, true) => "the new container was OOM-killed while starting (raise resources.memory?)".into(),
                    (Some(c), _) => format!("the new container exited with code {c} while starting"),
                    (None, _) => "the new container stopped while starting".into(),
                },
                health_output: last_output,
                exit_code: code,
            });
        }
        if spec.health.is_none()
            && let Some(docker) = &info.docker_health
        {
            // The image's own HEALTHCHECK, as Docker runs it.
            let output = redact.clean(&docker.output);
            let status = docker.status.clone();
            match status.as_str() {
                "healthy" => {
                    return Ok(GatePass {
                        output: format!("the image's HEALTHCHECK reports healthy: {output}"),
                        version: None,
                        info,
                        probes,
                    });
                }
                "unhealthy" => {
                    return Err(GateFailure {
                        reason: "the image's HEALTHCHECK reports unhealthy (Docker's health status)".into(),
                        health_output: output,
                        exit_code: None,
                    });
                }
                _ if Instant::now() >= give_up => return Err(timed_out(deadline, output)),
                _ => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            }
        }
        let Some(health) = &spec.health else {
            if started.elapsed() >= NO_CHECK_SETTLE {
                return Ok(GatePass {
                    output: format!("running for {}s (no health check)", NO_CHECK_SETTLE.as_secs()),
                    version: None,
                    info,
                    probes,
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let check = &health.ready;
        let mut outcome = probe(engine, &info, spec, check, redact).await;
        let now = Instant::now();
        if outcome.healthy {
            passes += 1;
            let since = *passing_since.get_or_insert(now);
            if passes >= check.success_threshold && now.duration_since(since) >= check.min_healthy.as_std() {
                let Some(version) = &health.version else {
                    return Ok(GatePass {
                        output: outcome.output,
                        version: None,
                        info,
                        probes,
                    });
                };
                match read_version(&info, spec, check, redact).await {
                    Ok(reported) => {
                        return match version.assert(&reported, &spec.image) {
                            Ok(()) => Ok(GatePass {
                                output: format!("{}; serving {reported}", outcome.output),
                                version: Some(reported),
                                info,
                                probes,
                            }),
                            Err(mismatch) => Err(GateFailure {
                                reason: format!(
                                    "the new container answers healthy but is {mismatch} (health.version at {})",
                                    version.path
                                ),
                                health_output: outcome.output,
                                exit_code: None,
                            }),
                        };
                    }
                    // Not readable yet: counts like a failed probe.
                    Err(unreadable) => outcome = unreadable,
                }
            } else {
                last_output = outcome.output;
                if now >= give_up {
                    return Err(timed_out(deadline, last_output));
                }
                seen = Some((info, looked_at, true));
                tokio::time::sleep(spacing.min(check.interval.as_std())).await;
                continue;
            }
        }
        passes = 0;
        passing_since = None;
        last_output = outcome.output.clone();
        // Count failures at the spec's own interval, and only once the
        // start period is over, as Docker's HEALTHCHECK would.
        // A probe the agent itself could not run counts for nothing.
        if !outcome.unknown && now >= started + check.start_period.as_std() && now >= next_counted {
            failures += 1;
            next_counted = now + check.interval.as_std();
            if failures >= check.retries {
                return Err(GateFailure {
                    reason: format!("the health check failed {failures} times in a row"),
                    health_output: last_output,
                    exit_code: None,
                });
            }
        }
        if now >= give_up {
            return Err(timed_out(deadline, last_output));
        }
        seen = Some((info, looked_at, false));
        tokio::time::sleep(spacing.min(check.interval.as_std())).await;
        spacing = (spacing * 2).min(GATE_SPACING);
    }
}

fn timed_out(deadline: Duration, last_output: String) -> GateFailure {
    GateFailure {
        reason: format!(
            "the new container did not become healthy within {}s (deploy.health_deadline)",
            deadline.as_secs()
        ),
        health_output: last_output,
        exit_code: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_redacted_before_the_output_is_capped() {
        let redact = Redactor::new(["s3cr3t-token", "abc", "s3cr3t", "8000"]);
        assert_eq!(
            redact.clean("exit 1: token s3cr3t-token and s3cr3t on 8000, abc stays"),
            "exit 1: token [redacted] and [redacted] on [redacted], abc stays"
        );
        // A secret straddling the cap is redacted whole, never cut in two.
        let long = format!("{}s3cr3t-token{}", "x".repeat(OUTPUT_LIMIT - 6), "y".repeat(100));
        let cleaned = redact.clean(&long);
        assert!(cleaned.len() <= OUTPUT_LIMIT, "{}", cleaned.len());
        assert!(!cleaned.contains("s3cr"), "{cleaned}");
        assert!(cleaned.ends_with("..."), "{cleaned}");
        // Multi-byte text is cut on a character boundary.
        let wide = "é".repeat(OUTPUT_LIMIT);
        assert!(Redactor::default().clean(&wide).len() <= OUTPUT_LIMIT);
    }

    #[test]
    fn an_unknown_outcome_stays_unknown_when_cleaned() {
        let redact = Redactor::new(["hunter22"]);
        let out = redact.outcome(unknown("EMFILE while sending hunter22".into()));
        assert!(out.unknown && !out.healthy, "{out:?}");
        assert!(
            out.output.contains("[redacted]") && !out.output.contains("hunter22"),
            "{out:?}"
        );
    }
}
