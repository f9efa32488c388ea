//! Fleets: which agents a berthctl command talks to.
//!
//! [`inventory`] reads `fleets.toml` (named fleets of hosts with labels and
//! call settings); [`hostlist`] reads hosts a discovery command or
//! `--hosts-from` gives; [`select`] filters them with `--select`. All three
//! are pure but for running a discovery command.

pub mod hostlist;
pub mod inventory;
pub mod select;

pub use inventory::{Fleet, Host, Inventory, InventoryError, Settings, Source};
pub use select::Selector;
