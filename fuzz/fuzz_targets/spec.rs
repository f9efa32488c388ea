//! `berthctl apply -f SPEC.toml` and the agent's Apply: a spec's text goes
//! through `berth_core::spec::parse` (TOML + validate). An accepted spec
//! must survive the round trips the agent relies on (to TOML for its state
//! and `berthctl`, to JSON), stay accepted, and a refused one must say why
//! in bounded text.
#![no_main]

use berth_core::spec::{self, ServiceSpec};
use berth_fuzz::assert_bounded;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match spec::parse(text) {
        Ok(parsed) => {
            let toml = parsed.to_toml();
            match spec::parse(&toml) {
                Ok(again) => assert_eq!(again, parsed, "the spec changed through to_toml:\n{toml}"),
                Err(e) => panic!("to_toml of an accepted spec is refused: {e}\n{toml}"),
            }
            let json = serde_json::to_string(&parsed).expect("a spec serializes to JSON");
            let back: ServiceSpec = serde_json::from_str(&json).expect("the JSON of a spec reads back");
            assert_eq!(back, parsed, "the spec changed through JSON:\n{json}");
            back.validate().expect("a spec read back from JSON is still valid");
        }
        Err(e) => assert_bounded("spec error", &e.to_string(), text.len()),
    }
});
