//! The log filter's syntax (`log.level`, or `RUST_LOG`): parsed here so
//! the config check refuses a bad one and telemetry installs the same.
//! Pure; owns nothing.

use tracing_subscriber::filter::{LevelFilter, Targets};

/// The log filter `filter` (`log.level`, or `RUST_LOG`) names: a default
/// level and `target=level` directives, comma-separated, such as
/// `info,berth_agent::supervisor=debug`; a bare target is logged at every
/// level. tracing-subscriber's `Targets` rather than its `EnvFilter`: the
/// same syntax for levels and targets, without the regex engine EnvFilter
/// brings for span and field filters (a tenth of the agent's binary).
pub fn parse_filter(filter: &str) -> Result<Targets, String> {
    let mut targets = Targets::new();
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.contains(['[', ']', '{', '}']) {
            return Err(format!("{directive:?}: span and field filters are not supported"));
        }
        match directive.split_once('=') {
            Some((target, level)) => {
                let (target, level) = (target.trim(), level.trim());
                if target.is_empty() || level.is_empty() {
                    return Err(format!("{directive:?}: expected TARGET=LEVEL"));
                }
                let level = level.parse::<LevelFilter>().map_err(|_| {
                    format!("{directive:?}: {level:?} is not a level (error, warn, info, debug, trace, off)")
                })?;
                targets = targets.with_target(target, level);
            }
            None => match directive.parse::<LevelFilter>() {
                Ok(level) => targets = targets.with_default(level),
                Err(_) => targets = targets.with_target(directive, LevelFilter::TRACE),
            },
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_a_default_level_and_target_levels() {
        use tracing::Level;
        let f = parse_filter("info,berth_agent::supervisor=debug").expect("filter");
        assert!(f.would_enable("berth_agent::supervisor::timing", &Level::DEBUG));
        assert!(!f.would_enable("berth_agent::reconcile", &Level::DEBUG));
        assert!(f.would_enable("berth_agent::reconcile", &Level::INFO));
        assert!(f.would_enable("h2", &Level::INFO));
        assert!(parse_filter("debug").expect("filter").would_enable("x", &Level::DEBUG));
        let spaced = parse_filter(" warn , berth_agent = debug ").expect("filter");
        assert!(spaced.would_enable("berth_agent::x", &Level::DEBUG));
        assert!(!spaced.would_enable("h2", &Level::INFO));
        assert!(parse_filter("info,a=b=c").is_err());
        assert!(parse_filter("=").is_err());
        assert!(parse_filter("a[span]=debug").is_err());
        assert!(parse_filter("berth_agent=loud").is_err());
    }
}
