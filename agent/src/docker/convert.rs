//! bollard's models to and from the agent's plain types: the create
//! body, inspect output, events and log chunks. Pure functions, unit-tested
//! here; the calls that use them are in [`super::engine`].

use std::collections::HashMap;
use std::time::Duration;

use berth_core::labels;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EventMessage, HostConfig, HostConfigLogConfig, ResourcesUlimits,
    RestartPolicy, RestartPolicyNameEnum,
};

use super::error::DockerError;
use super::time::parse_time_ms;
use super::types::{
    ContainerInfo, CreateRequest, DockerHealth, EngineEvent, HolderState, Joined, LogLine, PublishedPort,
};

pub(super) fn non_negative(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// `d` in whole seconds, rounded up (Docker's timeouts are whole seconds;
/// rounding down could turn a 500 ms grace period into none).
pub(super) fn whole_seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub(super) fn memory_limit(container: &str, bytes: Option<u64>) -> Result<Option<i64>, DockerError> {
    bytes
        .map(|b| {
            i64::try_from(b).map_err(|_| DockerError::Invalid {
                container: container.to_owned(),
                message: format!("memory limit of {b} bytes is too large"),
            })
        })
        .transpose()
}

/// The body of `POST /containers/create` for `req`.
pub(super) fn create_body(req: &CreateRequest) -> Result<ContainerCreateBody, DockerError> {
    let memory = memory_limit(&req.name, req.memory_bytes)?;
    let mut exposed_ports = HashMap::new();
    let mut port_bindings: HashMap<String, Option<Vec<bollard::models::PortBinding>>> = HashMap::new();
    for port in &req.ports {
        let protocol = match port.protocol.to_ascii_lowercase().as_str() {
            "" | "tcp" => "tcp",
            "udp" => "udp",
            "sctp" => "sctp",
            other => {
                return Err(DockerError::Invalid {
                    container: req.name.clone(),
                    message: format!("port {}: protocol {other:?} is not tcp or udp", port.container_port),
                });
            }
        };
        let key = format!("{}/{protocol}", port.container_port);
        exposed_ports.insert(key.clone(), HashMap::new());
        port_bindings
            .entry(key)
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(bollard::models::PortBinding {
                host_ip: Some(port.host_ip.clone().unwrap_or_default()),
                // "" lets Docker pick a free port.
                host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
            });
    }
    let stop_timeout = i64::try_from(whole_seconds_up(req.stop_timeout)).map_err(|_| DockerError::Invalid {
        container: req.name.clone(),
        message: format!("stop timeout {:?} is too long", req.stop_timeout),
    })?;
    let flags = &req.flags;
    let bytes = |what: &str, n: Option<u64>| -> Result<Option<i64>, DockerError> {
        n.map(|n| {
            i64::try_from(n).map_err(|_| DockerError::Invalid {
                container: req.name.clone(),
                message: format!("{what} of {n} bytes is too large"),
            })
        })
        .transpose()
    };
    let memory_swap = match bytes("memory swap", flags.soft.memory_swap)? {
        Some(swap) => Some(swap),
        None => memory,
    };
    let ulimits: Vec<ResourcesUlimits> = flags
        .ulimits
        .iter()
        .map(|(name, soft, hard)| ResourcesUlimits {
            name: Some(name.clone()),
            soft: Some(*soft),
            hard: Some(*hard),
        })
        .collect();
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    Ok(ContainerCreateBody {
        image: Some(req.image.clone()),
        cmd: (!req.command.is_empty()).then(|| req.command.clone()),
        entrypoint: req.entrypoint.clone(),
        env: Some(req.env.clone()),
        labels: Some(req.labels.clone()),
        exposed_ports: Some(exposed_ports),
        stop_signal: (!req.stop_signal.is_empty()).then(|| req.stop_signal.clone()),
        stop_timeout: Some(stop_timeout),
        user: flags.user.clone(),
        working_dir: flags.workdir.clone(),
        hostname: flags.hostname.clone(),
        tty: Some(false),
        open_stdin: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        host_config: Some(HostConfig {
            memory,
            memory_swap,
            memory_reservation: bytes("memory reservation", flags.soft.memory_reservation)?,
            pids_limit: flags.soft.pids_limit.map(i64::from),
            nano_cpus: req.nano_cpus,
            binds: some_vec(&req.binds),
            network_mode: flags.network.clone(),
            extra_hosts: some_vec(&flags.extra_hosts),
            ulimits: (!ulimits.is_empty()).then_some(ulimits),
            readonly_rootfs: Some(flags.read_only),
            tmpfs: (!flags.tmpfs.is_empty()).then(|| flags.tmpfs.clone()),
            cap_add: some_vec(&flags.cap_add),
            cap_drop: some_vec(&flags.cap_drop),
            shm_size: bytes("shm size", flags.shm_size)?,
            port_bindings: Some(port_bindings),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some(req.log_driver.clone()),
                config: Some(req.log_options.clone()),
            }),
            init: Some(flags.init),
            privileged: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `02:42:ac:11:00:02` as bytes; `None` for anything else (Docker reports
/// "" for a network without one).
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Reduces `docker inspect` output to a [`ContainerInfo`].
pub(super) fn container_info(r: ContainerInspectResponse) -> ContainerInfo {
    let labels = r.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let host = r.host_config.unwrap_or_default();
    let network = r.network_settings.unwrap_or_default();
    let running = state.running.unwrap_or(false);

    let mut networks: Vec<_> = network.networks.unwrap_or_default().into_iter().collect();
    networks.sort_by(|a, b| a.0.cmp(&b.0));
    let (ip, mac) = networks
        .into_iter()
        .map(|(_, endpoint)| (endpoint.ip_address, endpoint.mac_address))
        .chain(std::iter::once((network.ip_address, network.mac_address)))
        .find_map(|(ip, mac)| Some((ip?.parse().ok()?, mac.as_deref().and_then(parse_mac))))
        .map_or((None, None), |(ip, mac)| (Some(ip), mac));

    let mut host_ports = Vec::new();
    for (key, bindings) in network.ports.unwrap_or_default() {
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse() else {
            continue;
        };
        for binding in bindings.unwrap_or_default() {
            let Some(host_port) = binding.host_port.and_then(|p| p.parse().ok()) else {
                continue;
            };
            host_ports.push(PublishedPort {
                container_port,
                protocol: protocol.to_owned(),
                host_ip: binding.host_ip.unwrap_or_default(),
                host_port,
            });
        }
    }
    host_ports
        .sort_by(|a, b| (a.container_port, &a.protocol, &a.host_ip).cmp(&(b.container_port, &b.protocol, &b.host_ip)));

    // Docker reports exit code 0 for a container that never ran; a failed
    // start (exec format error, missing binary) has a non-zero one but no
    // finish time.
    let finished_at_ms = state.finished_at.as_deref().and_then(parse_time_ms);
    let docker_health = state.health.as_ref().and_then(|h| {
        let status = h.status.map(|s| s.to_string()).unwrap_or_default();
        // "none" and "" are a container whose image has no HEALTHCHECK
        // (or one disabled at create).
        matches!(status.as_str(), "starting" | "healthy" | "unhealthy").then(|| DockerHealth {
            status,
            output: h
                .log
                .as_ref()
                .and_then(|log| log.last())
                .and_then(|r| r.output.as_deref())
                .unwrap_or_default()
                .trim()
                .to_owned(),
        })
    });
    let exit_code = if running || (finished_at_ms.is_none() && state.exit_code == Some(0)) {
        None
    } else {
        state.exit_code
    };

    ContainerInfo {
        id: r.id.unwrap_or_default(),
        name: r.name.map(|n| n.trim_start_matches('/').to_owned()).unwrap_or_default(),
        image: r.config.and_then(|c| c.image).or(r.image).unwrap_or_default(),
        service: labels.get(labels::SERVICE).cloned(),
        revision: labels.get(labels::REVISION).and_then(|v| v.parse().ok()),
        holder_of: labels.get(labels::HOLDER).cloned(),
        // Filled in by the engine, which looks the holder up.
        joined: host
            .network_mode
            .as_deref()
            .and_then(|m| m.strip_prefix("container:"))
            .map(|holder| Joined {
                holder: holder.to_owned(),
                state: HolderState::Gone,
            }),
        labels,
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        running,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at_ms: state.started_at.as_deref().and_then(parse_time_ms),
        finished_at_ms,
        ip,
        mac,
        host_ports,
        memory_bytes: host.memory.unwrap_or(0),
        memory_swap_bytes: host.memory_swap.unwrap_or(0),
        nano_cpus: host.nano_cpus.unwrap_or(0),
        memory_reservation_bytes: host.memory_reservation.unwrap_or(0),
        pids_limit: host.pids_limit.unwrap_or(0),
        binds: {
            let mut binds = host.binds.unwrap_or_default();
            binds.sort();
            binds
        },
        restart_count: r.restart_count.unwrap_or(0),
        docker_health,
    }
}

/// Turns a Docker event into an [`EngineEvent`]; `None` for one without a
/// container id.
pub(super) fn engine_event(message: EventMessage) -> Option<EngineEvent> {
    let actor = message.actor?;
    let container_id = actor.id.filter(|id| !id.is_empty())?;
    let attributes = actor.attributes.unwrap_or_default();
    let time_ms = match (message.time_nano, message.time) {
        (Some(nanos), _) if nanos > 0 => nanos / 1_000_000,
        (_, Some(secs)) => secs.saturating_mul(1000),
        _ => 0,
    };
    Some(EngineEvent {
        action: message.action.unwrap_or_default(),
        container_id,
        service: attributes.get(labels::SERVICE).cloned(),
        revision: attributes.get(labels::REVISION).and_then(|v| v.parse().ok()),
        exit_code: attributes.get("exitCode").and_then(|v| v.parse().ok()),
        time_ms,
    })
}

/// Splits one chunk of Docker's log stream into lines.
pub(super) fn log_lines(output: LogOutput) -> Vec<LogLine> {
    let stream = match &output {
        LogOutput::StdErr { .. } => "stderr",
        LogOutput::StdIn { .. } => "stdin",
        LogOutput::StdOut { .. } | LogOutput::Console { .. } => "stdout",
    };
    let bytes = output.into_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    text.split('\n')
        .map(|line| LogLine {
            stream: stream.to_owned(),
            line: line.strip_suffix('\r').unwrap_or(line).to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::types::{PortBinding, RunFlags, SoftLimits};

    #[test]
    fn stop_timeouts_round_up_to_seconds() {
        assert_eq!(whole_seconds_up(Duration::from_millis(500)), 1);
        assert_eq!(whole_seconds_up(Duration::from_secs(10)), 10);
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
    }

    #[test]
    fn inspect_output_becomes_container_info() {
        let json = serde_json::json!({
            "Id": "abc123",
            "Name": "/web-3",
            "Image": "sha256:feed",
            "RestartCount": 0,
            "State": {
                "Status": "exited", "Running": false, "OOMKilled": true, "ExitCode": 137,
                "StartedAt": "2024-05-01T12:34:56.123456789Z",
                "FinishedAt": "2024-05-01T12:35:56Z"
            },
            "Config": {
                "Image": "127.0.0.1:5000/berth-test/app:v1",
                "Labels": {"berth.managed": "true", "berth.service": "web", "berth.revision": "3"}
            },
            "HostConfig": {"Memory": 67108864, "MemorySwap": 67108864, "NanoCpus": 500000000},
            "NetworkSettings": {
                "IPAddress": "",
                "Ports": {
                    "8000/tcp": [
                        {"HostIp": "0.0.0.0", "HostPort": "49153"},
                        {"HostIp": "::", "HostPort": "49153"}
                    ],
                    "9000/udp": null
                },
                "Networks": {"bridge": {"IPAddress": "172.17.0.2", "MacAddress": "02:42:ac:11:00:02"}}
            }
        });
        let response: ContainerInspectResponse = serde_json::from_value(json).expect("sample inspect output parses");
        let info = container_info(response);
        assert_eq!(info.id, "abc123");
        assert_eq!(info.name, "web-3");
        assert_eq!(info.image, "127.0.0.1:5000/berth-test/app:v1");
        assert_eq!(info.service.as_deref(), Some("web"));
        assert_eq!(info.revision, Some(3));
        assert_eq!(info.state, "exited");
        assert!(!info.running && info.oom_killed);
        assert_eq!(info.exit_code, Some(137));
        assert_eq!(info.started_at_ms, Some(1_714_566_896_123));
        assert_eq!(info.finished_at_ms, Some(1_714_566_956_000));
        assert_eq!(info.ip, Some("172.17.0.2".parse().expect("an address")));
        assert_eq!(info.mac, Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]));
        assert_eq!(info.host_ports.len(), 2);
        assert_eq!(info.host_ports[0].host_port, 49153);
        assert_eq!(info.host_ports[0].protocol, "tcp");
        assert_eq!(info.memory_bytes, 67_108_864);
        assert_eq!(info.nano_cpus, 500_000_000);
    }

    #[test]
    fn only_six_colon_separated_hex_bytes_are_a_mac() {
        assert_eq!(parse_mac("02:42:AC:11:00:0f"), Some([2, 0x42, 0xac, 0x11, 0, 0x0f]));
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "02:42:ac:11:00:2",
            "02:42:ac:11:00:zz",
            "+2:42:ac:11:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_container_that_never_ran_has_no_exit_code() {
        let json = serde_json::json!({
            "Id": "abc", "Name": "/x",
            "State": {"Status": "created", "Running": false, "ExitCode": 0,
                      "StartedAt": "0001-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"}
        });
        let response: ContainerInspectResponse = serde_json::from_value(json).expect("sample inspect output parses");
        let info = container_info(response);
        assert_eq!(info.exit_code, None);
        assert_eq!(info.started_at_ms, None);
    }

    #[test]
    fn die_events_carry_exit_code_and_labels() {
        let json = serde_json::json!({
            "Type": "container", "Action": "die",
            "Actor": {"ID": "abc", "Attributes": {
                "exitCode": "3", "berth.service": "web", "berth.revision": "7", "name": "web-7"
            }},
            "time": 1_714_566_896, "timeNano": 1_714_566_896_123_456_789_i64
        });
        let message: EventMessage = serde_json::from_value(json).expect("sample event parses");
        let event = engine_event(message).expect("an event with an actor");
        assert_eq!(event.action, "die");
        assert_eq!(event.container_id, "abc");
        assert_eq!(event.service.as_deref(), Some("web"));
        assert_eq!(event.revision, Some(7));
        assert_eq!(event.exit_code, Some(3));
        assert_eq!(event.time_ms, 1_714_566_896_123);
    }

    #[test]
    fn create_body_sets_policy_limits_ports_and_log_caps() {
        let req = CreateRequest {
            name: "web-1".into(),
            image: "img:v1".into(),
            command: vec![],
            entrypoint: None,
            env: vec!["A=1".into()],
            ports: vec![
                PortBinding {
                    container_port: 8000,
                    protocol: "tcp".into(),
                    host_ip: None,
                    host_port: None,
                },
                PortBinding {
                    container_port: 8000,
                    protocol: "".into(),
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(8080),
                },
            ],
            memory_bytes: Some(64 << 20),
            nano_cpus: Some(500_000_000),
            labels: HashMap::new(),
            stop_signal: "SIGTERM".into(),
            stop_timeout: Duration::from_millis(1500),
            binds: vec!["/srv/data:/data".into(), "cache:/cache:ro".into()],
            log_driver: "json-file".into(),
            log_options: HashMap::from([
                ("max-size".to_owned(), "50m".to_owned()),
                ("max-file".to_owned(), "3".to_owned()),
            ]),
            flags: RunFlags {
                user: Some("1000:1000".into()),
                network: Some("backend".into()),
                ulimits: vec![("nofile".into(), 1024, 4096)],
                read_only: true,
                tmpfs: HashMap::from([("/tmp".to_owned(), "size=1m".to_owned())]),
                init: true,
                shm_size: Some(128 << 20),
                soft: SoftLimits {
                    memory_reservation: Some(32 << 20),
                    memory_swap: Some(128 << 20),
                    pids_limit: Some(50),
                },
                ..RunFlags::default()
            },
        };
        let body = create_body(&req).expect("a valid request");
        let json = serde_json::to_value(&body).expect("serializes");
        assert_eq!(json["Cmd"], serde_json::Value::Null);
        assert_eq!(json["StopTimeout"], 2);
        assert_eq!(json["StopSignal"], "SIGTERM");
        assert_eq!(json["ExposedPorts"], serde_json::json!({"8000/tcp": {}}));
        let host = &json["HostConfig"];
        assert_eq!(host["Memory"], 67_108_864);
        assert_eq!(host["MemorySwap"], 134_217_728);
        assert_eq!(host["MemoryReservation"], 33_554_432);
        assert_eq!(host["PidsLimit"], 50);
        assert_eq!(host["NanoCpus"], 500_000_000);
        assert_eq!(host["RestartPolicy"]["Name"], "no");
        assert_eq!(host["Init"], true);
        assert_eq!(host["Privileged"], false);
        assert_eq!(host["ReadonlyRootfs"], true);
        assert_eq!(host["NetworkMode"], "backend");
        assert_eq!(host["ShmSize"], 134_217_728);
        assert_eq!(host["Binds"], serde_json::json!(["/srv/data:/data", "cache:/cache:ro"]));
        assert_eq!(host["Tmpfs"], serde_json::json!({"/tmp": "size=1m"}));
        assert_eq!(
            host["Ulimits"],
            serde_json::json!([{"Name": "nofile", "Soft": 1024, "Hard": 4096}])
        );
        assert_eq!(json["User"], "1000:1000");
        assert_eq!(host["LogConfig"]["Type"], "json-file");
        assert_eq!(host["LogConfig"]["Config"]["max-size"], "50m");
        assert_eq!(host["LogConfig"]["Config"]["max-file"], "3");
        assert_eq!(
            host["PortBindings"]["8000/tcp"],
            serde_json::json!([
                {"HostIp": "", "HostPort": ""},
                {"HostIp": "127.0.0.1", "HostPort": "8080"}
            ])
        );

        let bad = CreateRequest {
            ports: vec![PortBinding {
                container_port: 1,
                protocol: "icmp".into(),
                host_ip: None,
                host_port: None,
            }],
            ..req
        };
        let err = create_body(&bad).expect_err("icmp is no port protocol");
        assert!(err.to_string().contains("icmp"), "{err}");
    }

    #[test]
    fn log_chunks_split_into_lines() {
        let lines = log_lines(LogOutput::StdErr {
            message: "one\r\ntwo\n".into(),
        });
        assert_eq!(
            lines,
            vec![
                LogLine {
                    stream: "stderr".into(),
                    line: "one".into()
                },
                LogLine {
                    stream: "stderr".into(),
                    line: "two".into()
                },
            ]
        );
    }
}
