//! berthctl's fleet inventory (`fleets.toml`, `--inventory FILE`): parse +
//! check through `Inventory::parse`. Every listed host it accepts must be
//! dialable as written (its address makes the URI the client dials and
//! reads back to the same target), host names and addresses are unique per
//! fleet, and a refusal is bounded text.
#![no_main]

use std::collections::BTreeSet;
use std::path::Path;

use berth_fuzz::assert_bounded;
use berthctl::fleet::inventory::{Inventory, Source, parse_address};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match Inventory::parse(text, Path::new("/home/op/.config/berth/fleets.toml")) {
        Ok(inventory) => {
            for fleet in inventory.fleets.values() {
                let Source::Listed(hosts) = &fleet.source else {
                    continue;
                };
                let mut names = BTreeSet::new();
                for host in hosts {
                    assert!(names.insert(&host.name), "{:?} twice in {}", host.name, fleet.name);
                    let shown = host.target.to_string();
                    let again = parse_address(&shown, None)
                        .unwrap_or_else(|e| panic!("host {shown:?} does not read back: {e}"));
                    assert_eq!(again, host.target, "host {shown:?} reads back differently");
                    let uri = format!("http://{shown}");
                    if let Err(e) = uri.parse::<http::Uri>() {
                        panic!("host {shown:?} is accepted but cannot be dialed ({uri:?}: {e})");
                    }
                }
            }
            if let Some(name) = inventory.fleets.keys().next() {
                assert!(inventory.fleet(name).is_ok());
            }
        }
        Err(e) => assert_bounded("inventory error", &e.to_string(), text.len()),
    }
});
