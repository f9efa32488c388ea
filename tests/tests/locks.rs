//! The agent's FleetLock service over real mutual TLS: a lease refuses a
//! second holder naming the first, lapses when nobody renews it, survives
//! an agent restart, is refused to viewers, and every step is audited.
//! (berthctl's `lock` commands over a whole fleet are tested in
//! fleet_lock.rs.)

use std::time::Duration;

use berth_core::identity::Role;
use berth_proto::v1::fleet_lock_client::FleetLockClient;
use berth_proto::v1::{AcquireLockRequest, BreakLockRequest, ListLocksRequest, ReleaseLockRequest, RenewLockRequest};
use berth_tests::{Agent, Pki, agent_config, rpc_as, runtime};

fn acquire(ttl_seconds: u32) -> AcquireLockRequest {
    AcquireLockRequest {
        name: "deploy".into(),
        client: "test pid 1".into(),
        ttl_seconds,
        purpose: "rollout api -> v2".into(),
    }
}

#[test]
fn leases_refuse_lapse_survive_restarts_and_are_audited() {
    let pki = Pki::new();
    pki.issue_client("bob", Role::Operator);
    pki.issue_client("vic", Role::Viewer);
    let config = agent_config(&pki, "");
    let mut agent = Agent::start(&pki, &config);
    let rt = runtime();
    rt.block_on(async {
        let alice = rpc_as(&pki, &agent.addr, "alice");
        let bob = rpc_as(&pki, &agent.addr, "bob");
        let vic = rpc_as(&pki, &agent.addr, "vic");

        let lease = alice
            .call(|ch| async move { FleetLockClient::new(ch).acquire_lock(acquire(30)).await })
            .await
            .expect("alice takes the lock");
        assert_eq!(lease.holder, "alice", "the holder is the certificate's name");
        assert_eq!(lease.ttl_seconds, 30);
        assert!(!lease.lease_id.is_empty());

        let refused = bob
            .call(|ch| async move { FleetLockClient::new(ch).acquire_lock(acquire(30)).await })
            .await
            .expect_err("held by alice");
        let text = refused.to_string();
        assert!(
            text.contains("held by alice (test pid 1) for \"rollout api -> v2\" since"),
            "{text}"
        );

        let denied = vic
            .call(|ch| async move { FleetLockClient::new(ch).acquire_lock(acquire(30)).await })
            .await
            .expect_err("a viewer");
        assert!(denied.to_string().contains("needs an operator certificate"), "{denied}");
        let seen = vic
            .call(|ch| async move { FleetLockClient::new(ch).list_locks(ListLocksRequest {}).await })
            .await
            .expect("viewers may list");
        assert_eq!(seen.leases.len(), 1);
        assert!(seen.leases[0].lease_id.is_empty(), "the id stays with its holder");

        let id = lease.lease_id.clone();
        let renewed = alice
            .call(|ch| {
                let id = id.clone();
                async move {
                    FleetLockClient::new(ch)
                        .renew_lock(RenewLockRequest {
                            name: "deploy".into(),
                            lease_id: id,
                            ttl_seconds: 30,
                        })
                        .await
                }
            })
            .await
            .expect("renew");
        assert!(renewed.expires_at_ms >= lease.expires_at_ms);
    });

    // The lease is on disk: a restarted agent still holds it for alice.
    // Dropping the runtime closes the test's connections before the agent stops.
    drop(rt);
    let status = agent.signal_and_wait(15, Duration::from_secs(30)).expect("agent stops");
    assert!(status.success(), "{status:?}\n{}", agent.logs());
    let agent = Agent::start(&pki, &config);
    let rt = runtime();
    rt.block_on(async {
        let bob = rpc_as(&pki, &agent.addr, "bob");
        let still = bob
            .call(|ch| async move { FleetLockClient::new(ch).acquire_lock(acquire(30)).await })
            .await
            .expect_err("still held after the restart");
        assert!(still.to_string().contains("held by alice"), "{still}");

        // Bob breaks it; the answer names whose lock it was.
        let broken = bob
            .call(|ch| async move {
                FleetLockClient::new(ch)
                    .break_lock(BreakLockRequest {
                        name: "deploy".into(),
                        reason: "alice's laptop died".into(),
                    })
                    .await
            })
            .await
            .expect("break");
        assert_eq!(broken.holder, "alice");

        // A short lease nobody renews lapses on its own.
        let short = bob
            .call(|ch| async move { FleetLockClient::new(ch).acquire_lock(acquire(1)).await })
            .await
            .expect("bob takes it");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let alice = rpc_as(&pki, &agent.addr, "alice");
        alice
            .call(|ch| async move { FleetLockClient::new(ch).acquire_lock(acquire(30)).await })
            .await
            .expect("bob's lease lapsed");
        // Bob's release of his lapsed lease is no error, and releases nothing.
        let released = bob
            .call(|ch| {
                let id = short.lease_id.clone();
                async move {
                    FleetLockClient::new(ch)
                        .release_lock(ReleaseLockRequest {
                            name: "deploy".into(),
                            lease_id: id,
                        })
                        .await
                }
            })
            .await;
        assert!(released.is_err(), "alice holds it now under another id: {released:?}");
    });

    let audit = std::fs::read_to_string(pki.path("state/audit.log")).expect("audit log");
    for needle in [
        "\"lock acquire\"",
        "refused: held by alice",
        "\"lock break\"",
        "\"lock expired\"",
    ] {
        assert!(audit.contains(needle), "{needle} not in the audit log:\n{audit}");
    }
}
