//! The agent's Rollouts service over real mutual TLS, against a real
//! service: `Plan` says what a change would do without doing it (image,
//! spec keys, env keys but never values, the nginx site diff; "no change"
//! when the host is at the target), and rollout records are stored,
//! controlled and listed, with env values and changes for operators only.
//! (The `berthctl rollout` runner over a fleet is tested in rollout.rs.)

use std::time::Duration;

use berth_core::identity::Role;
use berth_proto::v1::rollouts_client::RolloutsClient;
use berth_proto::v1::{
    EnvChange, GetRolloutRequest, ListRolloutsRequest, PlanRequest, PutRolloutRequest, RolloutRecord, RolloutState,
    SetRolloutControlRequest, plan_request,
};
use berth_tests::{Agent, Pki, Spec, agent_config, apply, berthctl, history, image, json, ok, rpc_as, runtime};

fn plan(service: &str, change: plan_request::Change) -> PlanRequest {
    PlanRequest {
        service: service.into(),
        change: Some(change),
    }
}

#[test]
fn plans_say_what_would_change_and_change_nothing() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let spec = Spec::checked("web", "v1");
    ok(&apply(&pki, &agent.addr, &spec));
    ok(&berthctl(
        &pki,
        &agent.addr,
        &["env", "set", "web", "A=1", "B=secret-b"],
    ));
    let state = std::fs::read(pki.path("state/state.json")).expect("state.json");
    let revisions = history(&pki, &agent.addr, "web").len();
    pki.issue_client("vic", Role::Viewer);

    let rt = runtime();
    rt.block_on(async {
        let vic = rpc_as(&pki, &agent.addr, "vic");
        let p = vic
            .call(|ch| async move {
                RolloutsClient::new(ch)
                    .plan(plan("web", plan_request::Change::Image(image("v2"))))
                    .await
            })
            .await
            .expect("viewers may plan");
        assert!(p.exists && p.would_change, "{p:?}");
        assert_eq!(p.image_from, image("v1"));
        assert_eq!(p.image_to, image("v2"));
        assert_eq!(p.spec_changes.len(), 1, "{p:?}");
        assert_eq!(p.spec_changes[0].key, "image");
        assert!(p.env_added.is_empty() && p.env_changed.is_empty(), "{p:?}");

        let same = vic
            .call(|ch| async move {
                RolloutsClient::new(ch)
                    .plan(plan("web", plan_request::Change::Image(image("v1"))))
                    .await
            })
            .await
            .expect("plan");
        assert!(!same.would_change, "the host runs v1 already: {same:?}");

        let env = EnvChange {
            set: [("B".to_owned(), "new-b".to_owned()), ("C".to_owned(), "c".to_owned())].into(),
            ..EnvChange::default()
        };
        let p = vic
            .call(|ch| async move {
                RolloutsClient::new(ch)
                    .plan(plan("web", plan_request::Change::Env(env)))
                    .await
            })
            .await
            .expect("plan env");
        assert_eq!(p.env_added, ["C"]);
        assert_eq!(p.env_changed, ["B"]);
        assert!(!format!("{p:?}").contains("new-b"), "values never in a plan: {p:?}");

        let proxied = Spec::checked("web", "v1").proxy("web.example", 18099).toml();
        let p = vic
            .call(|ch| async move {
                RolloutsClient::new(ch)
                    .plan(plan("web", plan_request::Change::SpecToml(proxied)))
                    .await
            })
            .await
            .expect("plan spec");
        assert!(p.spec_changes.iter().any(|c| c.key.starts_with("proxy.")), "{p:?}");
        assert!(p.site_diff.contains("+    server_name web.example;"), "{}", p.site_diff);
        assert_eq!(p.strategy, "blue-green");

        let missing = vic
            .call(|ch| async move {
                RolloutsClient::new(ch)
                    .plan(plan("nope", plan_request::Change::Image(image("v2"))))
                    .await
            })
            .await
            .expect_err("no such service");
        assert!(missing.to_string().contains("nope"), "{missing}");
    });
    assert_eq!(
        std::fs::read(pki.path("state/state.json")).expect("state.json"),
        state,
        "planning changed state.json"
    );
    let after = json(&berthctl(
        &pki,
        &agent.addr,
        &["--cert", "alice", "history", "web", "-o", "json"],
    ));
    assert_eq!(
        after.as_array().map(Vec::len),
        Some(revisions),
        "planning made a revision"
    );
}

async fn get(agent: &berthctl::client::Agent, id: &str) -> Result<RolloutState, berthctl::client::ConnectError> {
    let id = id.to_owned();
    agent
        .call(|ch| async move { RolloutsClient::new(ch).get_rollout(GetRolloutRequest { id }).await })
        .await
}

async fn control(
    agent: &berthctl::client::Agent,
    id: &str,
    action: &str,
) -> Result<RolloutState, berthctl::client::ConnectError> {
    let req = SetRolloutControlRequest {
        id: id.into(),
        action: action.into(),
    };
    agent
        .call(|ch| async move { RolloutsClient::new(ch).set_rollout_control(req).await })
        .await
}

#[test]
fn records_are_kept_controlled_by_operators_and_masked_for_viewers() {
    let pki = Pki::new();
    pki.issue_client("vic", Role::Viewer);
    let config = agent_config(&pki, "");
    let mut agent = Agent::start(&pki, &config);
    let record = RolloutRecord {
        id: "r-test-1".into(),
        fleet: "prod".into(),
        service: "web".into(),
        change: "env set TOKEN".into(),
        status: "running".into(),
        env: Some(EnvChange {
            set: [("TOKEN".to_owned(), "hunter2".to_owned())].into(),
            ..EnvChange::default()
        }),
        ..RolloutRecord::default()
    };
    let rt = runtime();
    rt.block_on(async {
        let alice = rpc_as(&pki, &agent.addr, "alice");
        let vic = rpc_as(&pki, &agent.addr, "vic");
        let r = record.clone();
        let denied = vic
            .call(|ch| async move {
                RolloutsClient::new(ch)
                    .put_rollout(PutRolloutRequest { record: Some(r) })
                    .await
            })
            .await
            .expect_err("a viewer cannot write records");
        assert!(denied.to_string().contains("needs an operator certificate"), "{denied}");
        let r = record.clone();
        alice
            .call(|ch| async move {
                RolloutsClient::new(ch)
                    .put_rollout(PutRolloutRequest { record: Some(r) })
                    .await
            })
            .await
            .expect("put");
        let denied = control(&vic, "r-test-1", "pause")
            .await
            .expect_err("a viewer cannot pause");
        assert!(denied.to_string().contains("operator"), "{denied}");
        let paused = control(&alice, "r-test-1", "pause").await.expect("pause");
        assert_eq!(paused.control.as_ref().map(|c| c.action.as_str()), Some("pause"));
        let seen = get(&vic, "r-test-1").await.expect("viewers may read");
        let env = seen.record.and_then(|r| r.env).expect("env change");
        assert_eq!(
            env.set.get("TOKEN").map(String::as_str),
            Some("****"),
            "masked for viewers"
        );
    });
    // Records survive the agent's restart. Dropping the runtime closes the
    // test's connections before the agent stops.
    drop(rt);
    let status = agent.signal_and_wait(15, Duration::from_secs(30)).expect("agent stops");
    assert!(status.success(), "{status:?}\n{}", agent.logs());
    let agent = Agent::start(&pki, &config);
    let rt = runtime();
    rt.block_on(async {
        let alice = rpc_as(&pki, &agent.addr, "alice");
        let all = alice
            .call(|ch| async move { RolloutsClient::new(ch).list_rollouts(ListRolloutsRequest {}).await })
            .await
            .expect("list");
        assert_eq!(all.rollouts.len(), 1);
        let r = all.rollouts[0].clone();
        assert_eq!(r.record.as_ref().map(|r| r.id.as_str()), Some("r-test-1"));
        assert_eq!(r.control.as_ref().map(|c| c.by.as_str()), Some("alice"));
        let full = get(&alice, "r-test-1").await.expect("get");
        let env = full.record.and_then(|r| r.env).expect("env change");
        assert_eq!(
            env.set.get("TOKEN").map(String::as_str),
            Some("hunter2"),
            "operators read values back"
        );
    });
    let audit = std::fs::read_to_string(pki.path("state/audit.log")).expect("audit.log");
    assert!(audit.contains("rollout pause"), "{audit}");
    let file = pki.path("state/rollouts/r-test-1.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).expect("record").permissions());
    assert_eq!(mode & 0o777, 0o600, "a record may carry env values");
}
