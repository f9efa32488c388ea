//! Fleet rollouts: one change deployed host by host in health-gated
//! batches, with a canary, a failure budget, rollback, pause/resume/abort,
//! and a record kept on every agent touched.
//!
//! [`plan`] cuts the selected hosts into batches (pure); [`change`] maps the
//! change to the agents' calls; [`record`] merges the agents' copies of a
//! rollout (pure); [`run`] runs the batches; [`view`] renders plan,
//! progress and result. The command is `cmd/rollout.rs`.

pub mod change;
pub mod plan;
pub mod record;
pub mod run;
pub mod view;
