//! The agent's config file (`/etc/berth/agent.toml`, `berth-agent
//! check-config`): parse + validate through `Config::parse`. It must never
//! panic, and a refusal is bounded text. An accepted config is validated
//! again unchanged (validation is a pure check of the parsed values).
#![no_main]

use std::path::Path;

use berth_agent::config::Config;
use berth_fuzz::assert_bounded;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let path = Path::new("/etc/berth/agent.toml");
    match Config::parse(text, path) {
        Ok(config) => {
            if let Err(e) = config.validate(path) {
                panic!("an accepted config fails validation again: {e}");
            }
        }
        Err(e) => assert_bounded("agent config error", &e.to_string(), text.len()),
    }
});
