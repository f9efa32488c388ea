//! Registry logins that expire, against the real Docker Engine and an
//! authenticated registry (Debian's docker-registry with htpasswd auth,
//! see `AuthRegistry`): the agent pulls through a `password_command`, the
//! registry's password is rotated and a later pull still works (the
//! refused cached password makes the agent run the command again), and a
//! failing command is an error naming the registry and the command, never
//! the password, which no log ever shows.
//!
//! The `password_command` is `fake-aws`, a fake of AWS's
//! `aws ecr get-login-password --region us-west-2` (which cannot run here):
//! it answers only those arguments, with the password the test put in its
//! file, counts its runs, and fails like the real one when told to.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use berth_tests::{Agent, AuthRegistry, Pki, Spec, agent_config, apply, fails, inspect, ok, one_running};

/// The fake `aws` CLI in `dir`: prints `dir/password`, appends a line to
/// `dir/runs` per run; with `dir/expired` present it fails the way the
/// real one does when its session has expired.
fn fake_aws(dir: &Path) -> PathBuf {
    let path = dir.join("fake-aws");
    let d = dir.display();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             # A fake of `aws ecr get-login-password`, for berth's tests.\n\
             echo run >> '{d}/runs'\n\
             if [ \"$*\" != 'ecr get-login-password --region us-west-2' ]; then\n\
             \techo \"usage: aws [options] <command> <subcommand> (got: $*)\" >&2; exit 252\n\
             fi\n\
             if [ -e '{d}/expired' ]; then\n\
             \techo 'An error occurred (ExpiredTokenException) when calling the GetAuthorizationToken operation' >&2\n\
             \texit 254\n\
             fi\n\
             cat '{d}/password'\n"
        ),
    )
    .expect("write fake-aws");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs")).map_or(0, |t| t.lines().count())
}

#[test]
fn a_pull_through_password_command_survives_a_password_rotation() {
    let pid = std::process::id();
    let (pw1, pw2) = (format!("ecr-token-1-{pid}"), format!("ecr-token-2-{pid}"));
    let mut reg = AuthRegistry::start("AWS", &pw1);
    let v1 = reg.push("v1", &pw1);
    let v2 = reg.push("v2", &pw1);
    let crashy = reg.push("crashy", &pw1);

    let pki = Pki::new();
    let fake = pki.path("fake");
    std::fs::create_dir_all(&fake).expect("fake dir");
    std::fs::write(fake.join("password"), format!("{pw1}\n")).expect("password");
    let aws = fake_aws(&fake);
    let extra = format!(
        "[[registries]]\nregistry = \"{}\"\nusername = \"AWS\"\n\
         password_command = [\"{}\", \"ecr\", \"get-login-password\", \"--region\", \"us-west-2\"]\nttl = \"1h\"\n",
        reg.addr,
        aws.display()
    );
    let agent = Agent::start_ready(&pki, &agent_config(&pki, &extra));
    assert_eq!(runs(&fake), 0, "run when a pull needs it, not at start");

    let spec = |image: &str| Spec::checked("ecr", "v1").key("image", image);
    ok(&apply(&pki, &agent.addr, &spec(&v1)));
    let id = one_running(&pki.instance, "ecr");
    assert_eq!(inspect(&id, "{{.Config.Image}}"), v1);
    assert_eq!(runs(&fake), 1);

    // The registry's password changes (the 12-hour token ran out); the
    // agent's cached one is refused, so it runs the command again.
    std::fs::write(fake.join("password"), format!("{pw2}\n")).expect("password");
    reg.set_password(&pw2);
    ok(&apply(&pki, &agent.addr, &spec(&v2)));
    let id = one_running(&pki.instance, "ecr");
    assert_eq!(inspect(&id, "{{.Config.Image}}"), v2);
    assert_eq!(runs(&fake), 2, "the refused password was fetched anew, once");

    // Rotated again, and now the command fails: the deploy fails with an
    // error naming registry and command; revision 2 keeps running.
    reg.set_password(&format!("ecr-token-3-{pid}"));
    std::fs::write(fake.join("expired"), "").expect("expired");
    let err = fails(&apply(&pki, &agent.addr, &spec(&crashy)));
    assert!(
        err.contains(&format!("registry {}: password_command", reg.addr)),
        "{err}"
    );
    assert!(
        err.contains(&format!("{} ecr get-login-password --region us-west-2", aws.display())),
        "{err}"
    );
    assert!(err.contains("ExpiredTokenException"), "{err}");
    assert_eq!(inspect(&one_running(&pki.instance, "ecr"), "{{.Config.Image}}"), v2);

    let logs = agent.logs();
    for pw in [&pw1, &pw2] {
        assert!(!logs.contains(pw.as_str()), "a password in the agent's log:\n{logs}");
        assert!(!err.contains(pw.as_str()), "{err}");
    }
    assert_eq!(runs(&fake), 3, "one more run, which failed:\n{}", reg.logs());
}
