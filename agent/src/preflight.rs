//! Checks of a service spec against the host it is to run on: host ports
//! another service holds, limits above the host's CPUs or memory, and the
//! number of services one agent keeps. Run
//! before anything on the host changes, by a deploy worker; pure functions
//! of the specs and the host's facts.

use berth_core::spec::{Protocol, ServiceSpec, SpecError, invalid};

/// Services one agent runs.
pub const MAX_SERVICES: usize = 100;

/// Bytes of all of a host's specs together (as TOML): with this, a
/// `berthctl ps` of a full host stays well inside gRPC's 4 MiB message,
/// whatever the sizes of single specs (each at most
/// [`berth_core::spec::MAX_SPEC_BYTES`]).
pub const MAX_HOST_SPEC_BYTES: usize = 2 * 1024 * 1024;

/// Refuses a service that would be one too many, or whose spec would take
/// the host's specs past [`MAX_HOST_SPEC_BYTES`]; `others` are the host's
/// other services.
pub fn check_host_budget(spec: &ServiceSpec, others: &[&ServiceSpec]) -> Result<(), SpecError> {
    let others: Vec<&&ServiceSpec> = others.iter().filter(|o| o.name != spec.name).collect();
    if others.len() >= MAX_SERVICES {
        return Err(invalid(
            "name",
            &spec.name,
            format!(
                "this host already runs {} services, the most one agent keeps ({MAX_SERVICES})",
                others.len()
            ),
        ));
    }
    let size = |s: &ServiceSpec| s.to_toml().len();
    let total = size(spec) + others.iter().map(|o| size(o)).sum::<usize>();
    if total > MAX_HOST_SPEC_BYTES {
        return Err(invalid(
            "name",
            &spec.name,
            format!(
                "the specs of this host's services would take {} KiB, more than the {} KiB one agent keeps; \
                 make specs smaller (labels, commands) or run fewer services here",
                total / 1024,
                MAX_HOST_SPEC_BYTES / 1024
            ),
        ));
    }
    Ok(())
}

/// Checks that `spec` takes nothing on the host that another service holds:
/// fixed host ports (published ports and nginx listen ports), and for nginx
/// sites, the same server name on the same listen port (nginx would route it
/// to only one of them).
///
/// `others` are the other services on the host; one with `spec`'s name is the
/// service's own previous version, which `spec` replaces, and is skipped.
pub fn check_host_ports(spec: &ServiceSpec, others: &[&ServiceSpec]) -> Result<(), SpecError> {
    let nginx_ports = |s: &ServiceSpec| s.proxy.as_ref().map(|p| p.listen.clone()).unwrap_or_default();
    for other in others.iter().filter(|o| o.name != spec.name) {
        let used_by = |port: u16| format!("host port {port} is already used by service \"{}\"", other.name);
        for mapping in &spec.ports {
            let Some(port) = mapping.host_port else {
                continue;
            };
            if other.ports.iter().any(|theirs| theirs.collides_with(mapping)) {
                return Err(invalid("ports", mapping, used_by(port)));
            }
            if mapping.protocol == Protocol::Tcp && nginx_ports(other).contains(&port) {
                return Err(invalid(
                    "ports",
                    mapping,
                    format!("{} (nginx listens there for it)", used_by(port)),
                ));
            }
        }
        let Some(proxy) = &spec.proxy else {
            continue;
        };
        for &port in &proxy.listen {
            let published = other
                .ports
                .iter()
                .any(|m| m.protocol == Protocol::Tcp && m.host_port == Some(port));
            if published {
                return Err(invalid("proxy.listen", port, used_by(port)));
            }
        }
        if let Some(theirs) = &other.proxy {
            let shared_port = proxy.listen.iter().find(|p| theirs.listen.contains(p));
            let shared_name = proxy.server_names.iter().find(|n| theirs.server_names.contains(n));
            if let (Some(port), Some(name)) = (shared_port, shared_name) {
                return Err(invalid(
                    "proxy.server_names",
                    name,
                    format!("already served on port {port} by service \"{}\"", other.name),
                ));
            }
        }
    }
    Ok(())
}

/// Checks that `spec`'s limits fit the host at all: a CPU limit above the
/// host's CPU count or a memory limit above its memory could never be met.
pub fn check_capacity(spec: &ServiceSpec, host_cpus: f64, host_memory_bytes: u64) -> Result<(), SpecError> {
    if let Some(cpus) = spec.resources.cpus
        && cpus.as_f64() > host_cpus
    {
        let unit = if (host_cpus - 1.0).abs() < f64::EPSILON {
            "CPU"
        } else {
            "CPUs"
        };
        return Err(invalid(
            "resources.cpus",
            cpus,
            format!("the host has only {host_cpus} {unit}"),
        ));
    }
    if let Some(memory) = spec.resources.memory
        && memory.bytes() > host_memory_bytes
    {
        return Err(invalid(
            "resources.memory",
            memory,
            format!("the host has only {} of memory", approximate_size(host_memory_bytes)),
        ));
    }
    Ok(())
}

/// A size for people, to one decimal in the largest fitting unit: `23.4g`.
fn approximate_size(bytes: u64) -> String {
    let units = [
        ("p", 1u64 << 50),
        ("t", 1 << 40),
        ("g", 1 << 30),
        ("m", 1 << 20),
        ("k", 1 << 10),
    ];
    for (suffix, multiplier) in units {
        if bytes >= multiplier {
            // Precision loss is fine: this is rounded for display anyway.
            let value = format!("{:.1}", bytes as f64 / multiplier as f64);
            return format!("{}{suffix}", value.trim_end_matches(".0"));
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ServiceSpec {
        match berth_core::spec::parse(text) {
            Ok(spec) => spec,
            Err(e) => panic!("spec should parse:\n{text}\n---\n{e}"),
        }
    }

    const MINIMAL: &str = "name = \"w\"\nimage = \"busybox\"\n";

    fn spec_with(name: &str, extra: &str) -> ServiceSpec {
        ok(&format!("name = \"{name}\"\nimage = \"busybox\"\n{extra}\n"))
    }

    #[test]
    fn a_host_keeps_a_bounded_number_and_size_of_specs() {
        let others: Vec<ServiceSpec> = (0..MAX_SERVICES).map(|i| spec_with(&format!("s{i}"), "")).collect();
        let refs: Vec<&ServiceSpec> = others.iter().collect();
        let e = check_host_budget(&spec_with("one-more", ""), &refs).expect_err("one too many");
        assert!(e.to_string().contains("already runs 100 services"), "{e}");
        // A service already on the host may change.
        check_host_budget(&others[0], &refs).expect("an existing one");

        // 40 specs of about 61 KiB each: more than 2 MiB together.
        let labels: String = (0..60).map(|j| format!("l{j} = \"{}\"\n", "y".repeat(1000))).collect();
        let big: Vec<ServiceSpec> = (0..40)
            .map(|i| ok(&format!("name = \"b{i}\"\nimage = \"busybox\"\n[labels]\n{labels}")))
            .collect();
        let refs: Vec<&ServiceSpec> = big.iter().collect();
        check_host_budget(&big[0], &refs[..30]).expect("30 of them fit");
        let e = check_host_budget(&spec_with("late", ""), &refs).expect_err("past the budget");
        assert!(e.to_string().contains("more than the 2048 KiB"), "{e}");
    }

    #[test]
    fn host_port_conflicts() {
        let api = spec_with("api", "ports = [\"8080:8000\", \"9000\"]");
        let web = spec_with(
            "web",
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"web.example.com\"]",
        );
        let check = |spec: &ServiceSpec| check_host_ports(spec, &[&api, &web]).map_err(|e| e.to_string());

        let taken = spec_with("new", "ports = [\"8080:8000\"]");
        assert_eq!(
            check(&taken),
            Err(r#"ports "8080:8000": host port 8080 is already used by service "api""#.to_owned())
        );
        let pinned_ip = spec_with("new", "ports = [\"127.0.0.1:8080:80\"]");
        assert_eq!(
            check(&pinned_ip),
            Err(r#"ports "127.0.0.1:8080:80": host port 8080 is already used by service "api""#.to_owned())
        );
        let nginx = spec_with("new", "ports = [\"80:8000\"]");
        assert_eq!(
            check(&nginx),
            Err(
                r#"ports "80:8000": host port 80 is already used by service "web" (nginx listens there for it)"#
                    .to_owned()
            )
        );
        let same_site = spec_with(
            "new",
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"web.example.com\"]",
        );
        assert_eq!(
            check(&same_site),
            Err(r#"proxy.server_names "web.example.com": already served on port 80 by service "web""#.to_owned())
        );
        let listen_taken = spec_with(
            "new",
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"_\"]\nlisten = [8080]",
        );
        assert_eq!(
            check(&listen_taken),
            Err(r#"proxy.listen "8080": host port 8080 is already used by service "api""#.to_owned())
        );

        // Fine: other ports, other protocol, other address, another site on
        // the shared nginx port, and the service's own previous version.
        for extra in [
            "ports = [\"8081:8000\", \"8000\"]",
            "ports = [\"8080:8000/udp\"]",
            "ports = [\"8000\"]\n[proxy]\nserver_names = [\"new.example.com\"]",
        ] {
            assert_eq!(check(&spec_with("new", extra)), Ok(()), "{extra}");
        }
        let a = spec_with("new", "ports = [\"127.0.0.1:7000:80\"]");
        let b = spec_with("other", "ports = [\"127.0.0.2:7000:80\"]");
        assert_eq!(check_host_ports(&a, &[&b]), Ok(()));
        assert_eq!(check(&spec_with("api", "ports = [\"8080:8000\"]")), Ok(()));
    }

    #[test]
    fn capacity() {
        let spec = spec_with("big", "resources = { cpus = 16, memory = \"64g\" }");
        let check = |cpus, memory| check_capacity(&spec, cpus, memory).map_err(|e| e.to_string());
        assert_eq!(
            check(2.0, 1 << 40),
            Err(r#"resources.cpus "16": the host has only 2 CPUs"#.to_owned())
        );
        assert_eq!(
            check(1.0, 1 << 40),
            Err(r#"resources.cpus "16": the host has only 1 CPU"#.to_owned())
        );
        assert_eq!(
            check(32.0, 25_165_824_000),
            Err(r#"resources.memory "64g": the host has only 23.4g of memory"#.to_owned())
        );
        assert_eq!(check(16.0, 64 << 30), Ok(()));
        assert_eq!(check_capacity(&ok(MINIMAL), 1.0, 1 << 30), Ok(()));
    }
}
