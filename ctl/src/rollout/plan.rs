//! The rollout planner: hosts and options in, batches and a failure budget
//! out. Pure, so property tests can hammer it; the runner only executes
//! what it returns.
//!
//! - The canary batch (`--canary N`) goes first and alone.
//! - Then batches of `--batch N` hosts, or `N%` of all selected hosts
//!   (canaries included), rounded up and at least 1; the last may be
//!   smaller. Hosts keep their order (the inventory's, or the order given).
//! - The failure budget (`--max-failures N|N%`) is how many hosts may fail
//!   before the rollout stops: a rollout stops when failures *exceed* it,
//!   so `0` stops at the first failure and `10%` of 25 hosts allows 2.

use std::fmt;
use std::str::FromStr;

/// A count of hosts: `5`, or `25%` of the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// This many hosts.
    Count(usize),
    /// This percentage of all selected hosts.
    Percent(u32),
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?}: expected a number of hosts like 2 or a percentage like 25%");
        match s.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.trim().parse().map_err(|_| bad())?;
                if p > 100 {
                    return Err(format!("{s:?}: a percentage is at most 100%"));
                }
                Ok(Size::Percent(p))
            }
            None => s.parse().map(Size::Count).map_err(|_| bad()),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Count(n) => write!(f, "{n}"),
            Size::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Size {
    /// As a batch size over `total` hosts: rounded up, at least 1.
    pub fn batch_of(self, total: usize) -> usize {
        match self {
            Size::Count(n) => n.max(1),
            Size::Percent(p) => (total * p as usize).div_ceil(100).max(1),
        }
    }

    /// As a failure budget over `total` hosts: the most failures that do
    /// not exceed it (a percentage rounds down).
    pub fn budget_of(self, total: usize) -> usize {
        match self {
            Size::Count(n) => n,
            Size::Percent(p) => total * p as usize / 100,
        }
    }
}

/// How to cut the hosts into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Hosts per batch after the canary.
    pub batch: Size,
    /// Hosts in the canary batch (0 = none).
    pub canary: usize,
    /// Failures allowed before the rollout stops.
    pub max_failures: Size,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch: Size::Count(1),
            canary: 0,
            max_failures: Size::Count(0),
        }
    }
}

/// One batch: hosts deployed at the same time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<H> {
    /// The hosts, in order.
    pub hosts: Vec<H>,
    /// True for the canary batch.
    pub canary: bool,
}

/// Batches in order and the failure budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<H> {
    /// Batches, the canary first when there is one.
    pub batches: Vec<Batch<H>>,
    /// Failures allowed; one more stops the rollout.
    pub budget: usize,
}

/// Cuts `hosts` into batches.
pub fn plan<H: Clone>(hosts: &[H], options: &Options) -> Result<Plan<H>, String> {
    if hosts.is_empty() {
        return Err("no hosts selected: check --fleet and --select".into());
    }
    if let Size::Count(0) | Size::Percent(0) = options.batch {
        return Err("--batch must be at least 1 host (or 1%)".into());
    }
    if options.canary > hosts.len() {
        return Err(format!(
            "--canary {} but only {} host{} selected",
            options.canary,
            hosts.len(),
            if hosts.len() == 1 { " is" } else { "s are" }
        ));
    }
    let total = hosts.len();
    let mut batches = Vec::new();
    let (canary, rest) = hosts.split_at(options.canary);
    if !canary.is_empty() {
        batches.push(Batch {
            hosts: canary.to_vec(),
            canary: true,
        });
    }
    let size = options.batch.batch_of(total);
    for chunk in rest.chunks(size) {
        batches.push(Batch {
            hosts: chunk.to_vec(),
            canary: false,
        });
    }
    Ok(Plan {
        batches,
        budget: options.max_failures.budget_of(total),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sizes(p: &Plan<u32>) -> Vec<usize> {
        p.batches.iter().map(|b| b.hosts.len()).collect()
    }

    #[test]
    fn canary_then_percent_batches() {
        let hosts: Vec<u32> = (0..10).collect();
        let p = plan(
            &hosts,
            &Options {
                batch: Size::Percent(25),
                canary: 1,
                max_failures: Size::Count(1),
            },
        )
        .expect("plan");
        // 25% of 10 rounds up to 3: canary 1, then 3, 3, 3.
        assert_eq!(sizes(&p), [1, 3, 3, 3]);
        assert!(p.batches[0].canary && !p.batches[1].canary);
        assert_eq!(p.batches[0].hosts, [0]);
        assert_eq!(p.budget, 1);
    }

    #[test]
    fn sizes_parse_and_refuse_nonsense() {
        assert_eq!("5".parse(), Ok(Size::Count(5)));
        assert_eq!(" 25% ".parse(), Ok(Size::Percent(25)));
        assert!("101%".parse::<Size>().is_err());
        assert!("-1".parse::<Size>().is_err());
        assert!("x%".parse::<Size>().is_err());
        assert_eq!(Size::Percent(10).budget_of(25), 2);
        assert_eq!(Size::Percent(10).budget_of(5), 0);
        assert_eq!(Size::Percent(1).batch_of(5), 1);
        let one = [1u32];
        assert!(plan::<u32>(&[], &Options::default()).is_err());
        let too_many = Options {
            canary: 2,
            ..Options::default()
        };
        assert!(plan(&one, &too_many).expect_err("canary").contains("only 1 host is"));
        let zero = Options {
            batch: Size::Count(0),
            ..Options::default()
        };
        assert!(plan(&one, &zero).is_err());
    }

    fn any_size() -> impl Strategy<Value = Size> {
        prop_oneof![(1usize..20).prop_map(Size::Count), (1u32..=100).prop_map(Size::Percent)]
    }

    proptest! {
        #[test]
        fn every_host_once_canary_first_sizes_and_budget(
            n in 1usize..300,
            batch in any_size(),
            canary_frac in 0.0f64..=1.0,
            budget in prop_oneof![(0usize..50).prop_map(Size::Count), (0u32..=100).prop_map(Size::Percent)],
        ) {
            let hosts: Vec<u32> = (0..n as u32).collect();
            let canary = ((n as f64) * canary_frac).floor() as usize;
            let options = Options { batch, canary, max_failures: budget };
            let p = plan(&hosts, &options).expect("plan");
            // Every host exactly once, in order.
            let flat: Vec<u32> = p.batches.iter().flat_map(|b| b.hosts.clone()).collect();
            prop_assert_eq!(&flat, &hosts);
            // The canary batch first, alone, of exactly `canary` hosts.
            if canary > 0 {
                prop_assert!(p.batches[0].canary);
                prop_assert_eq!(p.batches[0].hosts.len(), canary);
            }
            prop_assert!(p.batches.iter().skip(1).all(|b| !b.canary));
            prop_assert!(p.batches.iter().all(|b| !b.hosts.is_empty()));
            // Other batches: the computed size, the last one possibly smaller.
            let size = match batch {
                Size::Count(c) => c,
                Size::Percent(pc) => (n * pc as usize).div_ceil(100),
            }.max(1);
            let rest: Vec<usize> = p.batches.iter().filter(|b| !b.canary).map(|b| b.hosts.len()).collect();
            if let Some((last, full)) = rest.split_last() {
                prop_assert!(full.iter().all(|s| *s == size));
                prop_assert!(*last <= size && *last >= 1);
            }
            // The budget: never above the selection, a percentage rounds down.
            match budget {
                Size::Count(c) => prop_assert_eq!(p.budget, c),
                Size::Percent(pc) => {
                    prop_assert!(p.budget * 100 <= n * pc as usize);
                    prop_assert!((p.budget + 1) * 100 > n * pc as usize);
                }
            }
        }
    }
}
