//! Fleet rollouts: one change deployed host by host in health-gated
//! batches. [`plan`] cuts the selected hosts into batches (pure).

pub mod plan;
