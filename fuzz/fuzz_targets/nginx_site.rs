//! The nginx site the agent renders for a `[proxy]` spec
//! (`berth_agent::nginx::render`), from a spec built out of fuzzed fields
//! and accepted by `berth_core::spec::parse`. The rendered site must read
//! as nginx config (braces and strings balance, every directive ends) and
//! hold exactly the template's directives: no name, block or variable the
//! template lacks, one location per health path plus `/`, no location
//! twice, the listen ports, server names and TLS files of the spec and
//! nothing else. Two services never share an upstream name, since all
//! sites live in one nginx `http` block.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use berth_agent::nginx::render;
use berth_core::spec::{self, ServiceSpec};
use berth_fuzz::{Directive, assert_bounded, directive_names, parse_nginx, variables};
use libfuzzer_sys::fuzz_target;

/// A value from a list of realistic ones, or anything.
#[derive(Debug, Arbitrary)]
enum Word {
    Known(u8),
    Raw(String),
}

impl Word {
    fn pick(&self, known: &[&str]) -> String {
        match self {
            Word::Known(i) => known[usize::from(*i) % known.len()].to_owned(),
            Word::Raw(s) => s.clone(),
        }
    }
}

const NAMES: &[&str] = &["api", "a-b", "a.b", "a_b", "web-1", "contextgraph-web", "x"];
const SERVER_NAMES: &[&str] = &["api.example.com", "*.example.com", "_", "localhost", "a-b.c"];
const PATHS: &[&str] = &[
    "/__lbheartbeat__",
    "/__heartbeat__",
    "/__version__",
    "/health/live%20ok",
    "/v1:ping",
    "/",
];
const FILES: &[&str] = &[
    "/etc/ssl/a.pem",
    "/etc/ssl/private/api_key-2024.pem",
    "/etc/ssl/certs/a+chain.pem",
];
const DURATIONS: &[&str] = &["1s", "5s", "60s", "1m30s", "500ms", "0s", "2h"];

#[derive(Debug, Arbitrary)]
struct Site {
    name: Word,
    other_name: Word,
    container_port: u16,
    server_names: Vec<Word>,
    listen: Option<Vec<u16>>,
    upstream_port: Option<u16>,
    tls: Option<(Word, Word)>,
    health_paths: Option<Vec<Word>>,
    read_timeout: Option<Word>,
    connect_timeout: Option<Word>,
    maintenance: bool,
    upstream: ([u8; 4], u16),
}

impl Site {
    /// The spec's TOML, written with toml's own serializer so the fuzzed
    /// strings reach the parser as values, escaped.
    fn toml(&self) -> String {
        let mut proxy = toml::Table::new();
        let words = |list: &[Word], known: &[&str]| {
            toml::Value::Array(list.iter().map(|w| toml::Value::String(w.pick(known))).collect())
        };
        proxy.insert("server_names".into(), words(&self.server_names, SERVER_NAMES));
        if let Some(listen) = &self.listen {
            let ports = listen.iter().map(|p| toml::Value::Integer(i64::from(*p))).collect();
            proxy.insert("listen".into(), toml::Value::Array(ports));
        }
        if let Some(port) = self.upstream_port {
            proxy.insert("upstream_port".into(), toml::Value::Integer(i64::from(port)));
        }
        if let Some((cert, key)) = &self.tls {
            proxy.insert("tls_cert".into(), toml::Value::String(cert.pick(FILES)));
            proxy.insert("tls_key".into(), toml::Value::String(key.pick(FILES)));
        }
        if let Some(paths) = &self.health_paths {
            proxy.insert("health_paths".into(), words(paths, PATHS));
        }
        for (key, value) in [
            ("read_timeout", &self.read_timeout),
            ("connect_timeout", &self.connect_timeout),
        ] {
            if let Some(value) = value {
                proxy.insert(key.into(), toml::Value::String(value.pick(DURATIONS)));
            }
        }
        let mut doc = toml::Table::new();
        doc.insert("name".into(), toml::Value::String(self.name.pick(NAMES)));
        doc.insert(
            "image".into(),
            toml::Value::String("registry.example.com/app:1.4.3".into()),
        );
        doc.insert(
            "ports".into(),
            toml::Value::Array(vec![toml::Value::String(self.container_port.to_string())]),
        );
        doc.insert("proxy".into(), toml::Value::Table(proxy));
        toml::to_string(&doc).expect("a table of strings and numbers serializes")
    }
}

/// What the template can render: every (context, directive) and variable
/// of a spec that uses every feature, in both modes.
struct Template {
    names: std::collections::BTreeSet<(String, String)>,
    variables: std::collections::BTreeSet<String>,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let spec = spec::parse(
            "name = \"api\"\nimage = \"app:v1\"\nports = [\"8000\"]\n[proxy]\nserver_names = [\"api.example.com\"]\n\
             listen = [80, 443]\ntls_cert = \"/etc/ssl/a.pem\"\ntls_key = \"/etc/ssl/a.key\"\n",
        )
        .expect("the reference spec is valid");
        let proxy = spec.proxy.clone().expect("it has a proxy");
        let upstream = SocketAddr::from(([172, 17, 0, 3], 8000));
        let mut names = std::collections::BTreeSet::new();
        let mut vars = std::collections::BTreeSet::new();
        for maintenance in [false, true] {
            let site = parse_nginx(&render(&spec, &proxy, upstream, maintenance)).expect("the reference site reads");
            names.extend(directive_names(&site));
            vars.extend(variables(&site));
        }
        Template { names, variables: vars }
    })
}

fn upstream_name(site: &[Directive]) -> String {
    let upstream = site.iter().find(|d| d.name == "upstream").expect("an upstream block");
    assert_eq!(upstream.args.len(), 1, "upstream takes one name: {:?}", upstream.args);
    upstream.args[0].clone()
}

fn check(spec: &ServiceSpec, text: &str, upstream: SocketAddr, maintenance: bool) -> Vec<Directive> {
    let proxy = spec.proxy.as_ref().expect("a proxied spec");
    let site = parse_nginx(text).unwrap_or_else(|e| panic!("the site is not nginx config ({e}):\n{text}"));
    let template = template();
    for name in directive_names(&site) {
        assert!(
            template.names.contains(&name),
            "directive {name:?} is not the template's:\n{text}"
        );
    }
    for var in variables(&site) {
        assert!(
            template.variables.contains(&var),
            "variable ${var} is not the template's:\n{text}"
        );
    }
    let top: Vec<&str> = site.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(top, ["upstream", "server"], "{text}");
    let name = upstream_name(&site);
    let upstream_block = site[0].block.as_ref().expect("upstream has a block");
    assert_eq!(upstream_block[0].args[0], upstream.to_string(), "{text}");
    let server = site[1].block.as_ref().expect("server has a block");
    let args_of = |directive: &str| -> Vec<Vec<String>> {
        server
            .iter()
            .filter(|d| d.name == directive)
            .map(|d| d.args.clone())
            .collect()
    };
    let tls = proxy.tls_cert.is_some();
    let listen: Vec<Vec<String>> = proxy
        .listen
        .iter()
        .map(|p| {
            let mut args = vec![p.to_string()];
            if tls && *p != 80 {
                args.push("ssl".into());
            }
            args
        })
        .collect();
    assert_eq!(args_of("listen"), listen, "{text}");
    assert_eq!(args_of("server_name"), vec![proxy.server_names.clone()], "{text}");
    let file = |p: &Option<std::path::PathBuf>| {
        p.iter()
            .map(|p| vec![p.to_string_lossy().into_owned()])
            .collect::<Vec<_>>()
    };
    assert_eq!(args_of("ssl_certificate"), file(&proxy.tls_cert), "{text}");
    assert_eq!(args_of("ssl_certificate_key"), file(&proxy.tls_key), "{text}");
    let mut locations: Vec<Vec<String>> = proxy
        .health_paths
        .iter()
        .map(|p| vec!["=".to_owned(), p.clone()])
        .collect();
    locations.push(vec!["/".to_owned()]);
    assert_eq!(args_of("location"), locations, "{text}");
    for (i, location) in locations.iter().enumerate() {
        assert!(
            !locations[..i].contains(location),
            "location {location:?} twice; nginx refuses that:\n{text}"
        );
    }
    for location in server.iter().filter(|d| d.name == "location") {
        let body = location.block.as_ref().expect("a location has a block");
        let pass: Vec<&Directive> = body.iter().filter(|d| d.name == "proxy_pass").collect();
        if maintenance {
            assert!(pass.is_empty(), "maintenance proxies nothing:\n{text}");
        } else {
            assert_eq!(pass.len(), 1, "{text}");
            assert_eq!(pass[0].args, [format!("http://{name}")], "{text}");
        }
    }
    site
}

fuzz_target!(|input: Site| {
    let text = input.toml();
    let spec = match spec::parse(&text) {
        Ok(spec) => spec,
        Err(e) => return assert_bounded("spec error", &e.to_string(), text.len()),
    };
    let proxy = spec.proxy.clone().expect("the spec has [proxy]");
    let (ip, port) = input.upstream;
    let upstream = SocketAddr::from((Ipv4Addr::from(ip), port));
    let rendered = render(&spec, &proxy, upstream, input.maintenance);
    let site = check(&spec, &rendered, upstream, input.maintenance);
    // Another service on the same host: its upstream must be another one.
    if let Ok(other) = input.other_name.pick(NAMES).parse()
        && other != spec.name
    {
        let mut second = spec.clone();
        second.name = other;
        let second_site = check(
            &second,
            &render(&second, &proxy, upstream, input.maintenance),
            upstream,
            input.maintenance,
        );
        assert_ne!(
            upstream_name(&site),
            upstream_name(&second_site),
            "services {} and {} share an upstream name",
            spec.name.as_str(),
            second.name.as_str()
        );
    }
});
