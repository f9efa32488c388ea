//! Env files and secrets against the real Docker Engine: set, unset and
//! import reach the running container; the file is 0600; values are masked
//! unless an operator reveals them; hand edits are applied (or refused, and
//! reported); failed changes and rollbacks bring the earlier env back, file
//! and container; and no secret value ever shows in the agent's log, its
//! audit log, events or history.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use berth_tests::{
    Agent, Events, Pki, Spec, agent_config, apply, berthctl, containers, docker, fails, history, ok, one_running,
};
use berthctl::certs::Role;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A value no test output should ever contain unless revealed.
fn secret(tag: &str) -> String {
    format!("s3cr3t-{tag}-{}", std::process::id())
}

/// The environment of a running container, as `env` inside it prints it.
fn container_env(id: &str) -> BTreeMap<String, String> {
    docker(&["exec", id, "env"])
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Like [`container_env`], for polling: `None` while it is not running.
fn env_now(id: &str) -> Option<BTreeMap<String, String>> {
    berth_tests::env_of(id)
}

/// Whether the only container of `service` runs with `key=value`.
fn runs_with(pki: &Pki, service: &str, key: &str, value: &str) -> bool {
    let ids = containers(&pki.instance, Some(service));
    ids.len() == 1 && env_now(&ids[0]).is_some_and(|e| e.get(key).map(String::as_str) == Some(value))
}

/// The variables of an env file (comments and blank lines skipped).
fn file_env(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .expect("read env file")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn keys_of(rev: &Value) -> Vec<String> {
    rev["env_keys_changed"]
        .as_array()
        .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Everything the agent wrote that must never hold a secret value.
fn assert_never_leaked(pki: &Pki, agent: &Agent, secrets: &[&str], also: &[&str]) {
    let audit = std::fs::read_to_string(pki.path("state/audit.log")).unwrap_or_default();
    assert!(!audit.is_empty(), "the audit log records the env changes");
    for (what, text) in [("agent log", agent.logs()), ("audit log", audit)]
        .into_iter()
        .chain(also.iter().map(|t| ("output", (*t).to_owned())))
    {
        for s in secrets {
            assert!(!text.contains(s), "a secret value leaked into the {what}:\n{text}");
        }
    }
}

#[test]
fn set_unset_import_reach_the_container_masked_unless_revealed() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let file = pki.path("env/cfg.env");
    let (pw1, pw2) = (secret("pw1"), secret("pw2"));
    let ctl = |args: &[&str]| berthctl(&pki, &agent.addr, args);

    // Before the service exists: only its file is written, for the first apply.
    let out = ok(&ctl(&["env", "set", "cfg", "GREETING=hello"]));
    assert!(out.contains("first apply"), "{out}");
    assert_eq!(mode(&file), 0o600);
    ok(&apply(&pki, &agent.addr, &Spec::checked("cfg", "v1")));
    let id = one_running(&pki.instance, "cfg");
    assert_eq!(container_env(&id).get("GREETING").map(String::as_str), Some("hello"));

    // set: a new revision, a new container with the new env.
    let set = format!("DB_PASSWORD={pw1}");
    let out = ok(&ctl(&["env", "set", "cfg", &set, "QUEUE=jobs"]));
    assert!(out.contains("revision 2 is running and healthy"), "{out}");
    let id2 = one_running(&pki.instance, "cfg");
    assert_ne!(id, id2);
    let env = container_env(&id2);
    assert_eq!(env.get("DB_PASSWORD"), Some(&pw1));
    assert_eq!(env.get("QUEUE").map(String::as_str), Some("jobs"));
    assert_eq!(env.get("GREETING").map(String::as_str), Some("hello"));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(file_env(&file).get("DB_PASSWORD"), Some(&pw1));

    // The same values again change nothing.
    let out = ok(&ctl(&["env", "set", "cfg", &set]));
    assert!(out.contains("unchanged at revision 2"), "{out}");
    assert_eq!(one_running(&pki.instance, "cfg"), id2);

    // get: masked unless revealed.
    let masked = ok(&ctl(&["env", "get", "cfg"]));
    assert!(masked.contains("DB_PASSWORD") && masked.contains("****"), "{masked}");
    assert!(!masked.contains(&pw1), "{masked}");
    let revealed = ok(&ctl(&["env", "get", "cfg", "--reveal"]));
    assert!(revealed.contains(&pw1), "{revealed}");

    // unset: gone from the container; a key that is not set is refused.
    ok(&ctl(&["env", "unset", "cfg", "QUEUE"]));
    let env = container_env(&one_running(&pki.instance, "cfg"));
    assert!(!env.contains_key("QUEUE"), "{env:?}");
    assert_eq!(env.get("DB_PASSWORD"), Some(&pw1));
    let err = fails(&ctl(&["env", "unset", "cfg", "QUEUE"]));
    assert!(err.contains("not set: QUEUE"), "{err}");

    // import: the whole env replaced; a bad file is refused before sending.
    let import = pki.path("import.env");
    std::fs::write(&import, format!("# from the vault\nDB_PASSWORD={pw2}\nMODE=a=b \n")).expect("write");
    ok(&ctl(&["env", "import", "cfg", import.to_str().expect("utf8")]));
    let id4 = one_running(&pki.instance, "cfg");
    let env = container_env(&id4);
    assert_eq!(env.get("DB_PASSWORD"), Some(&pw2));
    assert_eq!(env.get("MODE").map(String::as_str), Some("a=b "));
    assert!(
        !env.contains_key("GREETING"),
        "import removes keys not in the file: {env:?}"
    );
    let expected: BTreeMap<String, String> = [("DB_PASSWORD", pw2.as_str()), ("MODE", "a=b ")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(file_env(&file), expected);
    assert_eq!(mode(&file), 0o600);

    let bad = pki.path("bad.env");
    std::fs::write(&bad, format!("A=1\n{pw1}\n")).expect("write");
    let err = fails(&ctl(&["env", "import", "cfg", bad.to_str().expect("utf8")]));
    assert!(err.contains("bad.env:2") && !err.contains(&pw1), "{err}");
    assert_eq!(one_running(&pki.instance, "cfg"), id4, "nothing changed");

    // History names the keys each revision changed, never values.
    let h = history(&pki, &agent.addr, "cfg");
    let reasons: Vec<String> = h
        .iter()
        .map(|r| {
            format!(
                "{} {} {:?}",
                r["revision"],
                r["reason"].as_str().unwrap_or(""),
                keys_of(r)
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            r#"4 env import ["DB_PASSWORD", "GREETING", "MODE"]"#,
            r#"3 env unset ["QUEUE"]"#,
            r#"2 env set ["DB_PASSWORD", "QUEUE"]"#,
            "1 create []",
        ]
    );
    let table = ok(&ctl(&["history", "cfg"]));
    assert!(table.contains("DB_PASSWORD,QUEUE"), "{table}");

    // A viewer sees keys, never values, and may not change anything.
    pki.issue_client("vic", Role::Viewer);
    let viewer = ok(&ctl(&["--cert", "vic", "env", "get", "cfg"]));
    assert!(
        viewer.contains("MODE") && viewer.contains("****") && !viewer.contains(&pw2),
        "{viewer}"
    );
    let err = fails(&ctl(&["--cert", "vic", "env", "get", "cfg", "--reveal"]));
    assert!(
        err.contains("permission denied") && err.contains("only operators may reveal"),
        "{err}"
    );
    assert!(!err.contains(&pw2), "{err}");
    let err = fails(&ctl(&["--cert", "vic", "env", "set", "cfg", "A=1"]));
    assert!(err.contains("permission denied"), "{err}");
    assert_eq!(one_running(&pki.instance, "cfg"), id4, "nothing changed");

    let json = serde_json::to_string(&h).expect("json");
    assert_never_leaked(&pki, &agent, &[&pw1, &pw2], &[&table, &json, &masked, &viewer]);
}

#[test]
fn hand_edits_are_applied_and_bad_ones_refused_and_reported() {
    let pki = Pki::new();
    let config = agent_config(&pki, "");
    let mut agent = Agent::start_ready(&pki, &config);
    let file = pki.path("env/hand.env");
    let (pw1, pw2, pw3) = (secret("hand1"), secret("hand2"), secret("hand3"));
    ok(&apply(&pki, &agent.addr, &Spec::checked("hand", "v1")));
    ok(&berthctl(
        &pki,
        &agent.addr,
        &["env", "set", "hand", &format!("TOKEN={pw1}")],
    ));
    let events = Events::watch(&pki, &agent.addr);

    // A config-management tool replaces the file (temp file + rename),
    // world-readable: applied as a new revision, and the mode is fixed.
    let tmp = pki.path("env/.hand.env.tool");
    std::fs::write(&tmp, format!("TOKEN={pw2}\nEXTRA=yes\n")).expect("write");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    std::fs::rename(&tmp, &file).expect("rename");
    agent.wait_for(T, "a container running the hand-edited env", || {
        runs_with(&pki, "hand", "TOKEN", &pw2)
    });
    let id = one_running(&pki.instance, "hand");
    assert_eq!(container_env(&id).get("EXTRA").map(String::as_str), Some("yes"));
    agent.wait_for(T, "the file's mode set back to 0600", || mode(&file) == 0o600);
    let h = history(&pki, &agent.addr, "hand");
    assert_eq!(h[0]["reason"], "env file edited", "{h:?}");
    assert_eq!(h[0]["author"], "file");
    assert_eq!(h[0]["status"], "active");
    assert_eq!(keys_of(&h[0]), ["EXTRA", "TOKEN"]);
    let revisions = h.len();

    // A bad edit (a pasted secret on line 2) is refused: nothing changes,
    // an event and a log line name the file and line, and it is reported
    // once, not at every look.
    std::fs::write(&file, format!("TOKEN={pw2}\n{pw3}\n")).expect("write");
    agent.wait_for(T, "the env-rejected event", || events.text().contains("env-rejected"));
    let where_ = format!("{}:2", file.display());
    let event = events.text();
    assert!(event.contains(&where_), "{event}");
    agent.wait_for(T, "the env-rejected log line", || agent.logs().contains(&where_));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.logs().matches("env-rejected").count(), 1, "{}", agent.logs());
    assert_eq!(one_running(&pki.instance, "hand"), id, "the container was left alone");
    assert_eq!(container_env(&id).get("TOKEN"), Some(&pw2));
    assert_eq!(
        history(&pki, &agent.addr, "hand").len(),
        revisions,
        "no revision for a refused edit"
    );
    let got = ok(&berthctl(&pki, &agent.addr, &["env", "get", "hand", "--reveal"]));
    assert!(
        got.contains(&pw2) && !got.contains(&pw3),
        "the last good env stays: {got}"
    );

    // Fixing the file applies it.
    std::fs::write(&file, format!("TOKEN={pw3}\n")).expect("write");
    agent.wait_for(T, "the fixed edit to run", || runs_with(&pki, "hand", "TOKEN", &pw3));

    // An edit made while the agent is down is picked up when it starts.
    // (Stop watching events first: an open WatchEvents stream holds the
    // agent's shutdown for its whole grace period.)
    let events_text = events.text();
    drop(events);
    agent.signal_and_wait(15, Duration::from_secs(20)).expect("agent stops");
    std::fs::write(&file, format!("TOKEN={pw1}\n")).expect("write");
    let agent = Agent::start_ready(&pki, &config);
    agent.wait_for(T, "the offline edit to run", || runs_with(&pki, "hand", "TOKEN", &pw1));
    assert_never_leaked(&pki, &agent, &[&pw1, &pw2, &pw3], &[&events_text]);
}

#[test]
fn failed_changes_and_rollbacks_bring_the_earlier_env_back() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let file = pki.path("env/gate.env");
    let (one, two) = (secret("one"), secret("two"));
    ok(&apply(&pki, &agent.addr, &Spec::checked("gate", "v1")));
    ok(&berthctl(
        &pki,
        &agent.addr,
        &["env", "set", "gate", &format!("GREETING={one}")],
    ));
    ok(&berthctl(
        &pki,
        &agent.addr,
        &["env", "set", "gate", &format!("GREETING={two}")],
    ));
    let id3 = one_running(&pki.instance, "gate");

    // PORT moves the test server off the checked port: the gate fails, the
    // old container runs again, and the file says what runs.
    let out = berthctl(&pki, &agent.addr, &["env", "set", "gate", "PORT=9999"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    fails(&out);
    assert!(stdout.contains("revision 4 FAILED"), "{stdout}");
    assert!(stdout.contains("rolled back: revision 3 is running again"), "{stdout}");
    assert_eq!(one_running(&pki.instance, "gate"), id3);
    assert!(!container_env(&id3).contains_key("PORT"));
    assert!(!file_env(&file).contains_key("PORT"), "the file was restored");
    assert_eq!(file_env(&file).get("GREETING"), Some(&two));
    let h = history(&pki, &agent.addr, "gate");
    assert!(h[0]["status"].as_str().unwrap_or("").starts_with("failed"), "{h:?}");
    assert_eq!(keys_of(&h[0]), ["PORT"]);

    // The same through a hand edit: refused by the gate, file restored.
    std::fs::write(&file, format!("GREETING={two}\nPORT=9998\n")).expect("write");
    agent.wait_for(T, "the hand edit's revision to settle", || {
        history(&pki, &agent.addr, "gate")
            .first()
            .is_some_and(|r| r["revision"] != 4 && r["status"] != "pending")
    });
    let h = history(&pki, &agent.addr, "gate");
    assert!(
        h[0]["revision"] == 5
            && h[0]["reason"] == "env file edited"
            && h[0]["status"].as_str().unwrap_or("").starts_with("failed"),
        "{h:#?}\n{}",
        agent.logs()
    );
    agent.wait_for(T, "the file to be restored", || !file_env(&file).contains_key("PORT"));
    assert_eq!(one_running(&pki.instance, "gate"), id3);
    assert!(agent.logs().contains("deploy-failed"));

    // Rolling back to revision 2 brings its env back: file and container.
    let out = ok(&berthctl(&pki, &agent.addr, &["rollback", "gate", "--to", "2"]));
    assert!(out.contains("revision 6 is running and healthy"), "{out}");
    let id6 = one_running(&pki.instance, "gate");
    assert_eq!(container_env(&id6).get("GREETING"), Some(&one));
    assert_eq!(file_env(&file).get("GREETING"), Some(&one));
    assert_eq!(mode(&file), 0o600);
    let h = history(&pki, &agent.addr, "gate");
    assert_eq!(h[0]["reason"], "rollback to 2");
    assert_eq!(keys_of(&h[0]), ["GREETING"]);
    // And a plain rollback returns to the env of revision 3.
    ok(&berthctl(&pki, &agent.addr, &["rollback", "gate"]));
    assert_eq!(
        container_env(&one_running(&pki.instance, "gate")).get("GREETING"),
        Some(&two)
    );
    assert_eq!(file_env(&file).get("GREETING"), Some(&two));
    let table = ok(&berthctl(&pki, &agent.addr, &["history", "gate"]));
    assert_never_leaked(&pki, &agent, &[&one, &two], &[&table]);
}

#[test]
fn env_change_none_records_without_restarting() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let file = pki.path("env/calm.env");
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::checked("calm", "v1").key("env_change", "none"),
    ));
    let id = one_running(&pki.instance, "calm");

    let out = ok(&berthctl(&pki, &agent.addr, &["env", "set", "calm", "A=1"]));
    assert!(out.contains("recorded revision 2; revision 1 keeps running"), "{out}");
    assert_eq!(file_env(&file).get("A").map(String::as_str), Some("1"));
    std::fs::write(&file, "A=1\nB=2\n").expect("write");
    agent.wait_for(T, "the hand edit to be recorded", || {
        history(&pki, &agent.addr, "calm")
            .first()
            .is_some_and(|r| r["revision"] == 3 && r["status"] == "recorded")
    });
    assert_eq!(one_running(&pki.instance, "calm"), id, "the container was left alone");
    assert!(!container_env(&id).contains_key("A"));
    let h = history(&pki, &agent.addr, "calm");
    assert_eq!(h[0]["reason"], "env file edited");
    assert_eq!(keys_of(&h[0]), ["B"]);

    // A restart runs the recorded env.
    ok(&berthctl(&pki, &agent.addr, &["restart", "calm"]));
    let env = container_env(&one_running(&pki.instance, "calm"));
    assert_eq!(env.get("A").map(String::as_str), Some("1"));
    assert_eq!(env.get("B").map(String::as_str), Some("2"));
    let h = history(&pki, &agent.addr, "calm");
    assert_eq!(h[0]["status"], "active");
    assert_eq!(keys_of(&h[0]), ["A", "B"]);
}

#[test]
fn a_file_caught_half_written_is_not_applied() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let file = pki.path("env/slow.env");
    ok(&apply(&pki, &agent.addr, &Spec::checked("slow", "v1")));
    ok(&berthctl(&pki, &agent.addr, &["env", "set", "slow", "A=1", "B=2"]));

    // A valid edit, then — just as its check comes due — a writer that
    // truncates the file and pauses before writing (an editor, `cat >`).
    // The half-written (empty) file must never be deployed.
    std::fs::write(&file, "A=1\nB=2\nC=3\n").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&file).expect("truncate");
        std::thread::sleep(Duration::from_millis(150));
        f.write_all(b"A=1\nB=2\nC=4\n").expect("write");
    }
    agent.wait_for(T, "the final edit to run", || runs_with(&pki, "slow", "C", "4"));
    let h = history(&pki, &agent.addr, "slow");
    for rev in &h {
        let keys = keys_of(rev);
        assert!(
            rev["reason"] != "env file edited" || keys == ["C"],
            "a hand-edit revision changed more than C, so a partial file ran: {h:#?}"
        );
    }
    let env = container_env(&one_running(&pki.instance, "slow"));
    assert_eq!(env.get("A").map(String::as_str), Some("1"));
    assert_eq!(env.get("B").map(String::as_str), Some("2"));
}

#[test]
fn a_quoted_value_is_warned_about_and_stripped_with_strip_quotes() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let ctl = |args: &[&str]| berthctl(&pki, &agent.addr, args);
    ok(&apply(&pki, &agent.addr, &Spec::checked("quoted", "v1")));
    let runbook = pki.path("runbook.env");
    std::fs::write(
        &runbook,
        "# copied from a runbook\nLAUNCH_ENVIRONMENT=\"prod\"\nREGION=us-west-2\n",
    )
    .expect("write");
    let file = runbook.to_str().expect("utf8");

    // As Docker would: the quotes stay, and berthctl says so.
    let out = ctl(&["env", "import", "quoted", file]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runbook.env:2: the value of LAUNCH_ENVIRONMENT is wrapped in quotes"),
        "{err}"
    );
    assert!(err.contains("--strip-quotes"), "{err}");
    let env = container_env(&one_running(&pki.instance, "quoted"));
    assert_eq!(env.get("LAUNCH_ENVIRONMENT").map(String::as_str), Some("\"prod\""));

    let out = ctl(&["env", "import", "quoted", file, "--strip-quotes"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("removed the quotes around the value of LAUNCH_ENVIRONMENT"),
        "{err}"
    );
    let env = container_env(&one_running(&pki.instance, "quoted"));
    assert_eq!(env.get("LAUNCH_ENVIRONMENT").map(String::as_str), Some("prod"));
    assert_eq!(env.get("REGION").map(String::as_str), Some("us-west-2"));
}
