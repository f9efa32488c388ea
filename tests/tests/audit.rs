//! The audit log against a real agent over real TLS: viewers' refused
//! attempts and invalid requests are recorded with the caller's certificate
//! fingerprint, `berthctl audit --verify` checks the hash chain and names
//! the record someone edited (on one host, or each host of a fleet on its
//! own), and certificates naming no caller (or two roles) are refused at
//! the handshake.

use std::path::Path;

use berth_tests::{Agent, Pki, agent_config, berthctl, fails, ok, wait_until};
use berthctl::certs::Role;

/// The SHA-256 fingerprint of the certificate in `pem_path`.
fn fingerprint(pem_path: &Path) -> String {
    let pem = std::fs::read(pem_path).expect("read cert");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("pem");
    berth_core::audit::sha256_hex(&pem.contents)
}

fn audit_records(pki: &Pki) -> Vec<serde_json::Value> {
    std::fs::read_to_string(pki.path("state/audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json record"))
        .collect()
}

#[test]
fn viewer_denials_and_invalid_requests_are_audited_with_the_certificate() {
    let pki = Pki::new();
    pki.issue_client("victor", Role::Viewer);
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let victor = |args: &[&str]| {
        let mut all = vec!["--cert", "victor"];
        all.extend_from_slice(args);
        berthctl(&pki, &agent.addr, &all)
    };
    let err = fails(&victor(&["rm", "web"]));
    assert!(err.contains("permission denied") || err.contains("operator"), "{err}");
    fails(&victor(&["env", "get", "web", "--reveal"]));
    fails(&victor(&["audit"]));
    // An operator's invalid request is recorded too.
    let bad = pki.path("bad.toml");
    std::fs::write(
        &bad,
        "name = \"web\"\nimage = \"127.0.0.1:5000/berth-test/app:v1\"\nbogus = 1\n",
    )
    .expect("spec");
    fails(&berthctl(
        &pki,
        &agent.addr,
        &["--cert", "alice", "apply", "-f", &bad.to_string_lossy()],
    ));

    let victor_cert = fingerprint(&pki.tls_dir().join("victor.pem"));
    let mut records = Vec::new();
    wait_until(std::time::Duration::from_secs(10), "four audit records", || {
        records = audit_records(&pki);
        records.len() >= 4
    });
    let denied: Vec<_> = records
        .iter()
        .filter(|r| r["who"] == "victor" && r["outcome"].as_str().is_some_and(|o| o.starts_with("denied: ")))
        .collect();
    let actions: Vec<_> = denied.iter().map(|r| r["action"].as_str().unwrap_or("")).collect();
    assert_eq!(
        actions,
        ["Services/Remove", "Env/GetEnv", "Audit/ReadAudit"],
        "{records:#?}"
    );
    for r in &denied {
        assert_eq!(r["cert"], victor_cert.as_str(), "{r}");
        assert_eq!(r["role"], "viewer", "{r}");
        assert!(r["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")), "{r}");
    }
    assert_eq!(denied[0]["service"], "web");
    let invalid = records
        .iter()
        .find(|r| r["who"] == "alice" && r["action"] == "Services/Apply")
        .unwrap_or_else(|| panic!("no record of the invalid apply: {records:#?}"));
    assert!(
        invalid["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("invalid: ") && o.contains("bogus")),
        "{invalid}"
    );
    // Chained: each record names the hash of the one before.
    for pair in records.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"], "{pair:#?}");
        assert_eq!(pair[1]["seq"].as_u64(), pair[0]["seq"].as_u64().map(|s| s + 1));
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(pki.path("state/audit.log"))
            .expect("meta")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // berthctl shows them to an operator.
    let json = ok(&berthctl(
        &pki,
        &agent.addr,
        &["--cert", "alice", "audit", "-o", "json"],
    ));
    let shown: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert!(
        shown
            .iter()
            .any(|r| r["who"] == "victor" && r["action"] == "Services/Remove"),
        "{json}"
    );
    let table = ok(&berthctl(
        &pki,
        &agent.addr,
        &["--cert", "alice", "audit", "--since", "1h"],
    ));
    assert!(table.contains("victor") && table.contains("Env/GetEnv"), "{table}");
}

#[test]
fn an_edited_record_fails_verify_at_that_record() {
    let pki = Pki::new();
    pki.issue_client("victor", Role::Viewer);
    let agent = Agent::start(&pki, &agent_config(&pki, ""));
    for _ in 0..4 {
        fails(&berthctl(&pki, &agent.addr, &["--cert", "victor", "rm", "web"]));
    }
    wait_until(std::time::Duration::from_secs(10), "four audit records", || {
        audit_records(&pki).len() >= 4
    });
    let verify = || berthctl(&pki, &agent.addr, &["--cert", "alice", "audit", "--verify"]);
    let out = verify();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && said.contains("audit chain intact"), "{said}");
    assert!(said.contains("from the first record"), "{said}");

    // Someone rewrites who did the third thing.
    let path = pki.path("state/audit.log");
    let text = std::fs::read_to_string(&path).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replace("\"who\":\"victor\"", "\"who\":\"alice\"");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");

    let err = fails(&verify());
    assert!(
        err.contains("broken at record 3") && err.contains("audit.log:3") && err.contains("altered"),
        "{err}"
    );
}

/// Mints a client certificate with exactly `subject`, signed by the test CA.
fn mint(pki: &Pki, file: &str, subject: &[(rcgen::DnType, &str)]) {
    let tls = pki.tls_dir();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(tls.join("ca-key.pem")).expect("ca key")).expect("ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(tls.join("ca.pem")).expect("ca"), ca_key)
        .expect("issuer");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (t, v) in subject {
        params.distinguished_name.push(t.clone(), *v);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &issuer).expect("sign");
    std::fs::write(tls.join(format!("{file}.pem")), cert.pem()).expect("write cert");
    std::fs::write(tls.join(format!("{file}-key.pem")), key.serialize_pem()).expect("write key");
}

#[test]
fn certificates_without_a_name_or_with_two_roles_are_refused_at_the_handshake() {
    use rcgen::DnType::{CommonName, OrganizationalUnitName};
    let pki = Pki::new();
    mint(
        &pki,
        "noname",
        &[(CommonName, ""), (OrganizationalUnitName, "operator")],
    );
    mint(
        &pki,
        "twofaced",
        &[
            (CommonName, "eve"),
            (OrganizationalUnitName, "viewer"),
            // rcgen keeps one value per type: the same OID under another
            // key makes a second OU.
            (rcgen::DnType::CustomDnType(vec![2, 5, 4, 11]), "operator"),
        ],
    );
    let agent = Agent::start(&pki, &agent_config(&pki, ""));
    for (cert, reason) in [
        ("noname", "no commonName"),
        ("twofaced", "both OU=operator and OU=viewer"),
    ] {
        fails(&berthctl(&pki, &agent.addr, &["--cert", cert, "info"]));
        agent.wait_for(std::time::Duration::from_secs(10), reason, || {
            agent.logs().contains(reason)
        });
    }
    let log = agent.logs();
    assert!(log.contains("Refused a connection"), "{log}");
    ok(&berthctl(&pki, &agent.addr, &["--cert", "alice", "info"]));
}

#[test]
fn audit_over_a_fleet_merges_records_by_time_and_verifies_each_host_on_its_own() {
    let mut fleet = berth_tests::Fleet::start(&[("web", 3)]);
    let inv = fleet.write_inventory(&fleet.inventory("prod"));
    let ctl = |fleet: &berth_tests::Fleet, args: &[&str]| {
        fleet
            .ctl(&["--inventory", &inv.to_string_lossy()])
            .args(args)
            .output()
            .expect("run berthctl")
    };
    // A viewer's refused calls, a few on every host, interleaved in time.
    for _ in 0..3 {
        for m in fleet.members() {
            let out = fleet
                .ctl_as(berth_tests::fleet::VIEWER, &["--host", m.addr(), "rm", "web"])
                .output()
                .expect("berthctl");
            fails(&out);
        }
    }
    let log = |name: &str| fleet.member(name).dir.join("state/audit.log");
    wait_until(
        std::time::Duration::from_secs(10),
        "three records on every host",
        || {
            fleet
                .members()
                .iter()
                .all(|m| std::fs::read_to_string(log(&m.name)).is_ok_and(|t| t.lines().count() >= 3))
        },
    );

    // One timeline, every record with its host.
    let out = ctl(&fleet, &["audit", "--fleet", "prod", "-o", "json"]);
    let records: Vec<serde_json::Value> = ok(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record a line"))
        .collect();
    for name in ["web-1", "web-2", "web-3"] {
        let n = records.iter().filter(|r| r["host"] == name).count();
        assert!(n >= 3, "{n} records of {name} in {records:?}");
    }
    let times: Vec<u64> = records.iter().map(|r| r["ts_ms"].as_u64().expect("ts_ms")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "not in time order: {times:?}");
    let table = ok(&ctl(&fleet, &["audit", "--fleet", "prod"]));
    let header = table.lines().next().unwrap_or_default();
    assert!(header.starts_with("HOST") && header.contains("ACTION"), "{table}");

    let verify = |fleet: &berth_tests::Fleet| ctl(fleet, &["audit", "--verify", "--fleet", "prod"]);
    let out = ok(&verify(&fleet));
    assert_eq!(out.lines().filter(|l| l.contains(" ok (")).count(), 3, "{out}");

    // Someone rewrites who did one of web-2's things.
    let path = log("web-2");
    let text = std::fs::read_to_string(&path).expect("read");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let i = lines
        .iter()
        .position(|l| l.contains("\"who\":\"vic\""))
        .expect("a record of vic's");
    lines[i] = lines[i].replace("\"who\":\"vic\"", "\"who\":\"alice\"");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    fleet.kill("web-3");

    let out = verify(&fleet);
    assert!(!out.status.success(), "a broken chain and a dead host exit non-zero");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let line_of = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{table}"))
            .to_owned()
    };
    assert!(line_of("web-1").contains(" ok ("), "{table}");
    let broken = line_of("web-2");
    assert!(
        broken.contains(&format!("broken at record {}", i + 1))
            && broken.contains(&format!("audit.log:{}", i + 1))
            && broken.contains("altered"),
        "{table}"
    );
    assert!(line_of("web-3").contains("unreachable"), "{table}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken on 1: web-2") && err.contains("1 unreachable: web-3"),
        "{err}"
    );
}
