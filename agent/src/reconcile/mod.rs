//! The reconciler's decisions: a pure [`plan`] from desired state and what
//! Docker shows to a list of [`Action`]s.
//!
//! Level-triggered: whatever woke the loop (a Docker event, a health
//! verdict, the periodic resync, a finished deploy), the whole host is
//! re-read and re-planned, so a missed event costs at most one resync
//! interval. Services with a deploy in progress are left alone; the deploy
//! owns them until it finishes. The loop itself and the execution of actions
//! live in the supervisor, which talks to Docker.

mod plan;

pub use plan::{Action, Context, Desired, MAX_BACKOFF, Plan, backoff, plan};
