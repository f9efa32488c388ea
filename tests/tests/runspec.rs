//! What real services need from a spec, against the real Docker Engine and
//! real agents (issue 16): bind mounts and named volumes kept across
//! deploys and rollbacks and removed only by `rm --volumes`, read-only
//! mounts; layered env (shared file + role file + inline values) and an
//! edit of the shared file rolling every service that uses it; log
//! rotation and log drivers; and the `docker run` flags runbooks use, each
//! seen in `docker inspect`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use berth_tests::{
    Agent, Pki, Spec, agent_config, apply, berthctl, docker, env_of, fails, history, image, inspect, ok, one_running,
    unique,
};

const T: Duration = Duration::from_secs(90);

/// `docker exec ID sh -c SCRIPT`: (success, stdout + stderr).
fn exec(id: &str, script: &str) -> (bool, String) {
    let out = Command::new("docker")
        .args(["exec", id, "sh", "-c", script])
        .output()
        .expect("run docker exec");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The log driver and options of `service`'s running container.
fn log_config(pki: &Pki, service: &str) -> String {
    let id = one_running(&pki.instance, service);
    inspect(
        &id,
        "{{.HostConfig.LogConfig.Type}} {{json .HostConfig.LogConfig.Config}}",
    )
    .trim()
    .to_owned()
}

/// The env of `service`'s only running container, if it has exactly one.
fn service_env(pki: &Pki, service: &str) -> Option<BTreeMap<String, String>> {
    let ids = berth_tests::running(&pki.instance, service);
    match ids.as_slice() {
        [id] => env_of(id),
        _ => None,
    }
}

#[test]
fn bind_mounts_and_named_volumes_survive_deploys_and_rollbacks_until_rm_volumes() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let service = "vols";
    let volume = unique("cache");
    // An existing host dir with a file (mounted read-only), and one that
    // does not exist yet: the agent creates it, mode 0750.
    let certs = pki.path("certs");
    std::fs::create_dir_all(&certs).expect("mkdir");
    std::fs::write(certs.join("ca.pem"), "the-ca").expect("write");
    let data = pki.path("host/data/piper");
    let mounts = [
        format!("{}:/data", data.display()),
        format!("{volume}:/cache"),
        format!("{}:/etc/ssl/certs:ro", certs.display()),
    ];
    let spec = Spec::new(service, "v1").key("volumes", mounts.clone());
    ok(&apply(&pki, &agent.addr, &spec));

    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&data)
            .expect("the bind's host dir was created")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
    }
    let id = one_running(&pki.instance, service);
    assert_eq!(exec(&id, "cat /etc/ssl/certs/ca.pem"), (true, "the-ca".to_owned()));
    let (wrote, why) = exec(&id, "echo x > /etc/ssl/certs/new.pem");
    assert!(!wrote && why.contains("Read-only file system"), "{why}");
    assert!(exec(&id, "echo kept > /cache/state && echo bound > /data/out").0);
    assert_eq!(
        std::fs::read_to_string(data.join("out")).expect("bind file").trim(),
        "bound"
    );
    let binds = inspect(&id, "{{json .HostConfig.Binds}}");
    for mount in &mounts {
        assert!(binds.contains(mount.as_str()), "{mount} in {binds}");
    }
    assert_eq!(
        docker(&[
            "volume",
            "inspect",
            "-f",
            "{{index .Labels \"berth.instance\"}} {{index .Labels \"berth.service\"}}",
            &volume
        ])
        .trim(),
        format!("{} {service}", pki.instance)
    );
    let h = history(&pki, &agent.addr, service);
    assert!(h[0]["spec_toml"].as_str().is_some_and(|t| t.contains(&volume)), "{h:?}");

    // A deploy of another image, then a rollback: both containers mount
    // the same data.
    ok(&berthctl(
        &pki,
        &agent.addr,
        &["deploy", service, "--image", &image("v2")],
    ));
    let id2 = one_running(&pki.instance, service);
    assert_ne!(id2, id);
    assert_eq!(
        exec(&id2, "cat /cache/state /data/out"),
        (true, "kept\nbound\n".to_owned())
    );
    assert!(exec(&id2, "echo v2 >> /cache/state").0);
    ok(&berthctl(&pki, &agent.addr, &["rollback", service]));
    let id3 = one_running(&pki.instance, service);
    let h = history(&pki, &agent.addr, service);
    assert_eq!(h[1]["spec_keys_changed"], serde_json::json!(["image"]), "{h:?}");
    assert_eq!(exec(&id3, "cat /cache/state").1, "kept\nv2\n");
    assert_eq!(exec(&id3, "cat /etc/ssl/certs/ca.pem").1, "the-ca");

    // A changed mount list is a new revision whose change history shows.
    ok(&apply(
        &pki,
        &agent.addr,
        &Spec::new(service, "v1").key("volumes", mounts[..2].to_vec()),
    ));
    let h = history(&pki, &agent.addr, service);
    assert_eq!(h[0]["spec_keys_changed"], serde_json::json!(["volumes"]), "{h:?}");
    let id = one_running(&pki.instance, service);
    assert_eq!(exec(&id, "cat /cache/state").1, "kept\nv2\n");
    assert!(!exec(&id, "test -e /etc/ssl/certs/ca.pem").0, "the ro mount is gone");

    // rm keeps the volume (a later apply finds its data); rm --volumes
    // removes it. The bind's host dir is the host's and stays.
    ok(&berthctl(&pki, &agent.addr, &["rm", service]));
    assert!(volume_exists(&volume), "rm without --volumes keeps {volume}");
    ok(&apply(&pki, &agent.addr, &spec));
    let id4 = one_running(&pki.instance, service);
    assert_eq!(exec(&id4, "cat /cache/state").1, "kept\nv2\n");
    let out = ok(&berthctl(&pki, &agent.addr, &["rm", service, "--volumes"]));
    assert!(out.contains(&volume), "{out}");
    assert!(!volume_exists(&volume), "rm --volumes removes {volume}");
    assert!(data.join("out").exists());
}

#[test]
fn layered_env_merges_files_over_inline_values_and_a_shared_edit_rolls_every_user() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let env = pki.path("env");
    std::fs::create_dir_all(&env).expect("mkdir");
    let common = env.join("common.env");
    std::fs::write(
        &common,
        "REDIS_HOST=redis-1\nSENTRY_DSN=common-dsn\nSTATSD_HOST=statsd\n",
    )
    .expect("write");
    std::fs::write(env.join("web.env"), "ROLE=web\nSENTRY_DSN=web-dsn\n").expect("write");
    std::fs::write(env.join("worker.env"), "ROLE=worker\n").expect("write");
    for role in ["web", "worker"] {
        let spec = Spec::new(role, "v1")
            .key("env_files", ["common.env".to_owned(), format!("{role}.env")])
            .set("env", "LAUNCH_ENVIRONMENT", "prod")
            .set("env", "REDIS_HOST", "overridden-by-common");
        ok(&apply(&pki, &agent.addr, &spec));
    }
    // A third user of the shared file that only records env edits.
    let cron = Spec::new("cron", "v1")
        .key("env_files", ["common.env"])
        .key("env_change", "none");
    ok(&apply(&pki, &agent.addr, &cron));
    let cron_id = one_running(&pki.instance, "cron");
    let web = service_env(&pki, "web").expect("web runs");
    let worker = service_env(&pki, "worker").expect("worker runs");
    for (env, role, dsn) in [(&web, "web", "web-dsn"), (&worker, "worker", "common-dsn")] {
        assert_eq!(
            env.get("LAUNCH_ENVIRONMENT").map(String::as_str),
            Some("prod"),
            "{role}"
        );
        assert_eq!(env.get("REDIS_HOST").map(String::as_str), Some("redis-1"), "{role}");
        assert_eq!(env.get("STATSD_HOST").map(String::as_str), Some("statsd"), "{role}");
        assert_eq!(env.get("SENTRY_DSN").map(String::as_str), Some(dsn), "{role}");
        assert_eq!(env.get("ROLE").map(String::as_str), Some(role));
    }
    // The Env API does not write a layered env's files.
    let e = fails(&berthctl(&pki, &agent.addr, &["env", "set", "web", "A=1"]));
    assert!(e.contains("layered env") && e.contains("common.env"), "{e}");

    // One edit of the shared file: a new revision for both, both rolled.
    let before = (
        history(&pki, &agent.addr, "web").len(),
        history(&pki, &agent.addr, "worker").len(),
    );
    std::fs::write(
        &common,
        "REDIS_HOST=redis-2\nSENTRY_DSN=common-dsn\nSTATSD_HOST=statsd\n",
    )
    .expect("write");
    agent.wait_for(T, "both services running with the edited shared file", || {
        ["web", "worker"].iter().all(|s| {
            service_env(&pki, s).is_some_and(|e| e.get("REDIS_HOST").map(String::as_str) == Some("redis-2"))
                && history(&pki, &agent.addr, s)[0]["status"] == "active"
        })
    });
    for (service, count) in [("web", before.0), ("worker", before.1)] {
        let h = history(&pki, &agent.addr, service);
        assert_eq!(h.len(), count + 1, "{service}: {h:?}");
        assert_eq!(h[0]["reason"], "env file edited", "{service}");
        assert_eq!(h[0]["status"], "active", "{service}");
        let keys: Vec<&str> = h[0]["env_keys_changed"]
            .as_array()
            .map(|a| a.iter().filter_map(|k| k.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(keys, ["REDIS_HOST"], "{service}");
        assert!(
            h[0]["spec_toml"]
                .as_str()
                .is_some_and(|t| t.contains("common.env") && t.contains("LAUNCH_ENVIRONMENT")),
            "{h:?}"
        );
    }
    agent.wait_for(T, "cron's recorded revision", || {
        history(&pki, &agent.addr, "cron")[0]["status"] == "recorded"
    });
    assert_eq!(
        one_running(&pki.instance, "cron"),
        cron_id,
        "env_change = none restarts nothing"
    );
    assert_eq!(
        env_of(&cron_id).and_then(|e| e.get("REDIS_HOST").cloned()).as_deref(),
        Some("redis-1")
    );
    let env_now = service_env(&pki, "web").expect("web runs");
    assert_eq!(env_now.get("SENTRY_DSN").map(String::as_str), Some("web-dsn"));
    assert_eq!(
        std::fs::read_to_string(&common).expect("read"),
        "REDIS_HOST=redis-2\nSENTRY_DSN=common-dsn\nSTATSD_HOST=statsd\n",
        "the agent never rewrites a shared file"
    );
    // `env get` shows the merged env.
    let got = ok(&berthctl(&pki, &agent.addr, &["env", "get", "worker", "--reveal"]));
    assert!(got.contains("redis-2") && got.contains("LAUNCH_ENVIRONMENT"), "{got}");
}

#[test]
fn log_rotation_drivers_and_run_flags_show_in_docker_inspect() {
    let pki = Pki::new();
    let agent = Agent::start_ready(&pki, &agent_config(&pki, ""));
    let network = unique("net");

    // The agent's default rotation, and a spec's own.
    ok(&apply(&pki, &agent.addr, &Spec::new("logs-default", "v1")));
    assert_eq!(
        log_config(&pki, "logs-default"),
        r#"json-file {"max-file":"3","max-size":"50m"}"#
    );
    let own = Spec::new("logs-own", "v1")
        .set("logging", "driver", "local")
        .set("logging", "max_size", "5m")
        .set("logging", "max_file", 2);
    ok(&apply(&pki, &agent.addr, &own));
    assert_eq!(
        log_config(&pki, "logs-own"),
        r#"local {"max-file":"2","max-size":"5m"}"#
    );

    // Every run flag, in one container.
    let flags = Spec::new("flags", "v1")
        .key("user", "0:0")
        .key("workdir", "/tmp")
        .key("hostname", "worker-1")
        .key("extra_hosts", ["db.internal:10.0.0.5"])
        .key("network", network.as_str())
        .key("read_only", true)
        .key("tmpfs", ["/tmp", "/run:size=8m"])
        .key("cap_add", ["NET_ADMIN"])
        .key("cap_drop", ["MKNOD"])
        .key("init", true)
        .key("shm_size", "32m")
        .set("ulimits", "nofile", "1024:4096")
        .set("resources", "memory", "64m")
        .set("resources", "memory_reservation", "32m")
        .set("resources", "memory_swap", "128m")
        .set("resources", "pids_limit", 100)
        .set("logging", "driver", "none");
    ok(&apply(&pki, &agent.addr, &flags));
    let id = one_running(&pki.instance, "flags");
    // The network flags are the network holder's, whose namespace the
    // container joined (see holders.rs).
    let holder = berth_tests::network_of(&id);
    assert_ne!(holder, id, "a recreate service on a named network joins a holder");
    let network_flags = inspect(
        &holder,
        "{{.Config.Hostname}}|{{json .HostConfig.ExtraHosts}}|{{.HostConfig.NetworkMode}}",
    );
    assert_eq!(
        network_flags.trim(),
        format!(r#"worker-1|["db.internal:10.0.0.5"]|{network}"#)
    );
    let shown = inspect(
        &id,
        "{{.Config.User}}|{{.Config.WorkingDir}}|{{.Config.Hostname}}|\
         {{.HostConfig.NetworkMode}}|{{.HostConfig.ReadonlyRootfs}}|{{json .HostConfig.Tmpfs}}|\
         {{json .HostConfig.CapAdd}}|{{json .HostConfig.CapDrop}}|{{.HostConfig.Init}}|{{.HostConfig.ShmSize}}|\
         {{json .HostConfig.Ulimits}}|{{.HostConfig.MemoryReservation}}|{{.HostConfig.MemorySwap}}|\
         {{.HostConfig.PidsLimit}}|{{.HostConfig.LogConfig.Type}}",
    );
    let joined = format!("container:{holder}");
    let expected = [
        "0:0",
        "/tmp",
        "worker-1",
        joined.as_str(),
        "true",
        r#"{"/run":"size=8m","/tmp":""}"#,
        r#"["NET_ADMIN"]"#,
        r#"["MKNOD"]"#,
        "true",
        "33554432",
        r#"[{"Name":"nofile","Hard":4096,"Soft":1024}]"#,
        "33554432",
        "134217728",
        "100",
        "none",
    ];
    let got: Vec<&str> = shown.trim().split('|').collect();
    assert_eq!(got, expected);
    // Inside: the flags are in effect.
    assert_eq!(exec(&id, "hostname").1.trim(), "worker-1");
    assert!(exec(&id, "grep db.internal /etc/hosts").1.contains("10.0.0.5"));
    assert_eq!(exec(&id, "ulimit -n").1.trim(), "1024");
    let (wrote, why) = exec(&id, "echo x > /etc/x");
    assert!(!wrote && why.contains("Read-only file system"), "{why}");
    assert!(exec(&id, "echo x > /tmp/x").0, "tmpfs is writable");
    // The network berth created carries its labels.
    assert_eq!(
        docker(&[
            "network",
            "inspect",
            "-f",
            "{{index .Labels \"berth.instance\"}}",
            &network
        ])
        .trim(),
        pki.instance
    );

    // Limits Docker can change in place are set back when changed by hand.
    docker(&["update", "--pids-limit", "500", "--memory-reservation", "16m", &id]);
    agent.wait_for(T, "the pids limit and reservation set back", || {
        inspect(&id, "{{.HostConfig.PidsLimit}} {{.HostConfig.MemoryReservation}}").trim() == "100 33554432"
    });
    assert_eq!(one_running(&pki.instance, "flags"), id, "repaired in place");

    // A bad flag is refused, naming the key and the value.
    let bad = Spec::new("flags", "v1").set("ulimits", "nofiles", 10);
    let e = fails(&apply(&pki, &agent.addr, &bad));
    assert!(e.contains("ulimits \"nofiles\": is not a ulimit"), "{e}");
    // rm removes the network once nothing uses it.
    ok(&berthctl(&pki, &agent.addr, &["rm", "flags"]));
    let gone = Command::new("docker")
        .args(["network", "inspect", &network])
        .output()
        .is_ok_and(|o| !o.status.success());
    assert!(gone, "rm removes berth's network {network}");
}

#[test]
fn blue_green_containers_mount_the_same_named_volume() {
    let pki = Pki::new();
    let nginx = berth_tests::nginx::Nginx::start(pki.dir.path());
    let agent = Agent::start_ready(&pki, &agent_config(&pki, &nginx.agent_config()));
    let volume = unique("bg");
    let port = berth_tests::free_port();
    // With [proxy] and no strategy, deploys are blue-green: green starts
    // and passes its gate while blue still runs.
    let site = |tag: &str| {
        Spec::checked("bg", tag)
            .set("health", "http", "/__lbheartbeat__")
            .set("deploy", "drain", "1s")
            .proxy("bg.berth.test", port)
            .key("volumes", [format!("{volume}:/shared")])
    };
    ok(&apply(&pki, &agent.addr, &site("v1")));
    let blue = one_running(&pki.instance, "bg");
    assert!(exec(&blue, "echo from-blue > /shared/note").0);
    let out = ok(&berthctl(&pki, &agent.addr, &["deploy", "bg", "--image", &image("v2")]));
    let green = one_running(&pki.instance, "bg");
    assert_ne!(green, blue, "{out}");
    assert_eq!(exec(&green, "cat /shared/note").1, "from-blue\n");
    assert_eq!(
        inspect(&green, "{{json .HostConfig.Binds}}").trim(),
        format!("[\"{volume}:/shared\"]")
    );
    drop(agent);
    drop(nginx);
}
