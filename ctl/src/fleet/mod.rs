//! Fleets: which agents a berthctl command talks to, and talking to many.
//!
//! [`inventory`] reads `fleets.toml` (named fleets of hosts with labels and
//! call settings); [`hostlist`] reads hosts a discovery command or
//! `--hosts-from` gives; [`select`] filters them with `--select`;
//! [`selection`] turns the flags every agent command takes into the hosts
//! to call ([`SelectionArgs::resolve`] → [`Selection`]); [`fanout`] calls
//! them all at once, bounded and under deadlines; [`lock`] holds a fleet
//! lock (a lease on every selected agent) for as long as a change runs.

pub mod fanout;
pub mod hostlist;
pub mod inventory;
pub mod lock;
pub mod select;
pub mod selection;

pub use fanout::{Failure, HostError, Outcome, Summary, fan_out};
pub use inventory::{Fleet, Host, Inventory, InventoryError, Settings, Source};
pub use lock::{HeldLocks, LockRefusal, LockState, acquire_all};
pub use select::Selector;
pub use selection::{SelectedHost, Selection, SelectionArgs, SelectionError};
