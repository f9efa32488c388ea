//! berthctl's fleet lock over real agents: taken on every host all or
//! nothing, a second holder refused naming the first, renewed while held
//! and lapsing after its TTL when not, still held after an agent restart,
//! a broken lease seen by its holder as lost, `lock status` and `lock
//! break` (audited, naming whose it was), and a viewer refused.
//! (The agent's side of one lease is in locks.rs.)

use std::time::Duration;

use berth_core::identity::Role;
use berth_tests::fleet::VIEWER;
use berth_tests::{Fleet, fails, json, ok, wait_until};
use berthctl::fleet::lock::{self, LockState};
use berthctl::fleet::{Selection, SelectionArgs};

/// A runtime whose worker renews leases while the test thread runs
/// berthctl or restarts agents.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The fleet's hosts as `cert` sees them, through the same selection code
/// berthctl uses.
fn select(rt: &tokio::runtime::Runtime, fleet: &Fleet, inventory: &std::path::Path, cert: &str) -> Selection {
    let args = SelectionArgs {
        inventory: Some(inventory.to_owned()),
        fleet: Some("prod".into()),
        ..SelectionArgs::default()
    };
    rt.block_on(args.resolve(Some(&fleet.pki().tls_dir()), Some(cert)))
        .expect("selection")
}

/// `berthctl lock status --fleet prod -o json`.
fn lock_status(fleet: &Fleet, inv: &std::path::Path) -> serde_json::Value {
    json(
        &fleet
            .ctl(&[
                "--inventory",
                &inv.to_string_lossy(),
                "lock",
                "status",
                "--fleet",
                "prod",
                "-o",
                "json",
            ])
            .output()
            .expect("run"),
    )
}

#[test]
fn a_fleet_lock_is_all_or_nothing_renewed_lapses_survives_restarts_and_breaks_audited() {
    let mut fleet = Fleet::start(&[("web", 3), ("worker", 2)]);
    fleet.pki().issue_client("bob", Role::Operator);
    let inv = fleet.write_inventory(&fleet.inventory("prod"));
    let rt = runtime();
    let alice = select(&rt, &fleet, &inv, "alice");
    let bob = select(&rt, &fleet, &inv, "bob");
    let viewer = select(&rt, &fleet, &inv, VIEWER);
    let ttl = Duration::from_secs(3);
    let call = Duration::from_secs(5);

    // A short lease outlives its TTL while its holder renews it.
    let short = rt
        .block_on(lock::acquire_all(
            &alice.hosts,
            "short",
            "renewal",
            Duration::from_secs(2),
            call,
        ))
        .expect("alice takes short");
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(5)).await });
    assert_eq!(short.lost(), None);
    rt.block_on(lock::acquire_all(&bob.hosts, "short", "bob", ttl, call))
        .expect_err("still alice's: renewed");
    rt.block_on(short.release());

    // Alice takes "deploy" on all five.
    let held = rt
        .block_on(lock::acquire_all(
            &alice.hosts,
            "deploy",
            "rollout api -> v2",
            Duration::from_secs(20),
            call,
        ))
        .expect("alice takes the lock");
    assert_eq!(held.hosts(), alice.names());

    // Bob is refused, naming who holds it, for what and until when.
    let refusal = rt
        .block_on(lock::acquire_all(&bob.hosts, "deploy", "bob's rollout", ttl, call))
        .expect_err("held by alice");
    let holder = refusal.holder.clone().expect("the holder is named");
    assert_eq!(holder.holder, "alice");
    assert_eq!(holder.purpose, "rollout api -> v2");
    assert!(holder.expires_at_ms > holder.acquired_at_ms);
    let text = refusal.to_string();
    assert!(
        text.contains("is held by alice") && text.contains("for \"rollout api -> v2\"") && text.contains("until"),
        "{text}"
    );

    // lock status shows it on every host.
    let doc = lock_status(&fleet, &inv);
    for h in doc["hosts"].as_array().expect("hosts") {
        assert_eq!(h["result"][0]["holder"], "alice", "{h}");
        assert_eq!(h["result"][0]["purpose"], "rollout api -> v2", "{h}");
    }

    // Still held after an agent restart (leases live in state_dir).
    fleet.kill("web-2");
    fleet.restart("web-2");
    let again = rt
        .block_on(lock::acquire_all(&bob.hosts, "deploy", "bob's rollout", ttl, call))
        .expect_err("still alice's");
    assert!(again.to_string().contains("held by alice"), "{again}");

    // Released at the end: bob can take it; all or nothing means that if
    // one host refuses him, he holds it nowhere.
    let released = rt.block_on(held.release());
    assert!(released.iter().all(|o| o.result == Ok(true)), "{released:?}");
    let one = berthctl::fleet::Selection {
        hosts: vec![alice.hosts[3].clone()],
        ..alice.clone()
    };
    let alice_one = rt
        .block_on(lock::acquire_all(&one.hosts, "deploy", "hotfix", ttl, call))
        .expect("alice on one host");
    let refusal = rt
        .block_on(lock::acquire_all(&bob.hosts, "deploy", "bob's rollout", ttl, call))
        .expect_err("one host is alice's");
    assert_eq!(refusal.host, alice.hosts[3].name);
    let status = lock_status(&fleet, &inv);
    let holders: Vec<usize> = status["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["result"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(holders.iter().sum::<usize>(), 1, "bob gave back what he took: {status}");
    drop(alice_one);

    // Not renewed (its holder gone), a lease lapses after its TTL.
    wait_until(Duration::from_secs(30), "alice's unrenewed lease to lapse", || {
        rt.block_on(lock::acquire_all(&bob.hosts, "deploy", "bob's rollout", ttl, call))
            .map(drop)
            .is_ok()
    });

    // A viewer cannot take a lock.
    let denied = rt
        .block_on(lock::acquire_all(&viewer.hosts, "other", "viewer", ttl, call))
        .expect_err("a viewer");
    assert!(denied.message.contains("needs an operator certificate"), "{denied}");

    // Alice breaks bob's lock; bob's berthctl sees its lease lost.
    let bob2 = rt
        .block_on(lock::acquire_all(
            &bob.hosts,
            "maint",
            "bob's maintenance",
            Duration::from_secs(10),
            call,
        ))
        .expect("bob takes maint");
    // A viewer may look, not break.
    let e = fails(
        &fleet
            .ctl_as(
                VIEWER,
                &[
                    "--inventory",
                    &inv.to_string_lossy(),
                    "lock",
                    "break",
                    "--fleet",
                    "prod",
                    "--name",
                    "deploy",
                ],
            )
            .output()
            .expect("run"),
    );
    assert!(e.contains("needs an operator certificate"), "{e}");
    let out = fleet
        .ctl(&[
            "--inventory",
            &inv.to_string_lossy(),
            "lock",
            "break",
            "--fleet",
            "prod",
            "--name",
            "maint",
            "--reason",
            "bob is on holiday",
        ])
        .output()
        .expect("run");
    let table = ok(&out);
    assert!(
        table.contains("yes") && table.contains("bob") && table.contains("bob's maintenance"),
        "{table}"
    );
    let mut watch = bob2.watch();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), watch.wait_for(|s| *s != LockState::Held))
            .await
            .expect("the loss is seen")
            .expect("watch");
    });
    assert!(matches!(bob2.lost(), Some(LockState::Lost { .. })), "{:?}", bob2.lost());
    for m in fleet.members() {
        let audit = std::fs::read_to_string(m.dir.join("state/audit.log")).expect("audit log");
        assert!(
            audit.contains("\"lock break\"") && audit.contains("held by bob"),
            "{}: {audit}",
            m.name
        );
    }
}
