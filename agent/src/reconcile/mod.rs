//! The reconciler: keeps the host converged to the desired state.
//!
//! Level-triggered: whatever woke the loop (a Docker event, a health
//! verdict, the periodic resync, a finished change), the whole host is
//! re-read and re-planned, so a missed event costs at most one resync
//! interval. [`plan`] is pure (desired state, Docker's containers and
//! nginx's site files in, [`Action`]s out); [`apply`] carries actions out
//! against Docker and nginx; [`run`] is the loop. Services a change holds
//! are left alone: the change owns them until it ends, and the pass takes a
//! permit from the supervisor for every service it acts on.
//!
//! Inputs: the supervisor's snapshot and wake-ups, Docker, the sites dir.
//! Outputs: container and site changes, events, restart counts (to the
//! supervisor's owner). Shutdown: [`run`] ends on cancel.

mod apply;
mod plan;
mod run;

pub use apply::apply;
pub use plan::{Action, Context, Desired, Plan, SiteFiles, plan};
pub use run::{pass, run};
