//! Env files: what the agent reads from `env_dir` (hand edits included)
//! and what `berthctl env set KEY=VALUE` sends. Whatever parses must be
//! writable and read back to the same variables; errors name the line in
//! bounded text and never echo the value.
#![no_main]

use std::path::Path;

use berth_core::envfile::{self, Vars};
use berth_fuzz::assert_bounded;
use libfuzzer_sys::fuzz_target;

const PATH: &str = "/etc/berth/env/fuzz.env";

/// The writer's part of the round trip: `vars` passes the API's checks,
/// renders, and parses back to itself.
fn round_trips(vars: &Vars) {
    if envfile::render(vars).len() > envfile::MAX_BYTES {
        assert!(envfile::check_vars(vars).is_err(), "an oversized env passes check_vars");
        return;
    }
    if let Err(e) = envfile::check_vars(vars) {
        panic!("parsed variables fail check_vars: {e}");
    }
    let rendered = envfile::render(vars);
    match envfile::parse(&rendered, Path::new(PATH)) {
        Ok(again) => assert_eq!(&again, vars, "changed through render"),
        Err(e) => panic!("a rendered env file is refused: {e}"),
    }
}

fuzz_target!(|bytes: &[u8]| {
    match envfile::parse(bytes, Path::new(PATH)) {
        Ok(vars) => {
            round_trips(&vars);
            let text = std::str::from_utf8(bytes).expect("parse accepted it, so it is UTF-8");
            for quoted in envfile::quoted_values(text) {
                let value = vars.get(&quoted.key).expect("a quoted variable is a parsed one");
                assert!(envfile::unquote(value).is_some(), "{} is not quoted", quoted.key);
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert_bounded("env file error", &shown, bytes.len());
            // The prefix is PATH:LINE:, the rest a fixed sentence: nothing
            // from the file beyond that.
            assert!(shown.len() <= PATH.len() + 160, "env error echoes its input: {shown}");
        }
    }
    // The same bytes as one `berthctl env set` argument.
    if let Ok(arg) = std::str::from_utf8(bytes) {
        match envfile::parse_assignment(arg) {
            Ok((key, value)) => round_trips(&[(key, value)].into_iter().collect()),
            Err(e) => assert_bounded("env set error", &e, arg.len()),
        }
    }
});
