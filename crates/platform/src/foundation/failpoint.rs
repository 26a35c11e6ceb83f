//! Crash points for the fault tests: named places in the pipeline where a crash could lose or
//! repeat work. Compiled in only with the `failpoints` feature (the test builds); a release
//! build has none ([`hit`] is an empty inline function there).
//!
//! `EMS_FAILPOINTS=name[=N][,name[=N]...]` makes the process abort (no destructors, no flush,
//! exactly like `kill -9`) the N-th time (default: the first) it passes the point `name`.

/// Passes the crash point `$name`: aborts the process when `EMS_FAILPOINTS` arms it.
#[macro_export]
macro_rules! failpoint {
    ($name:expr) => {
        $crate::failpoint::hit($name)
    };
}

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// The armed points and how many hits each still allows before the crash.
    fn points() -> &'static HashMap<String, (u64, AtomicU64)> {
        static POINTS: OnceLock<HashMap<String, (u64, AtomicU64)>> = OnceLock::new();
        POINTS.get_or_init(|| parse(&std::env::var("EMS_FAILPOINTS").unwrap_or_default()))
    }

    pub(super) fn parse(spec: &str) -> HashMap<String, (u64, AtomicU64)> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| match item.split_once('=') {
                Some((name, n)) => (name.to_string(), n.trim().parse().unwrap_or(1)),
                None => (item.to_string(), 1),
            })
            .map(|(name, n)| (name, (n, AtomicU64::new(0))))
            .collect()
    }

    /// Counts a pass through `name`; aborts the process on the armed pass.
    pub fn hit(name: &str) {
        if let Some((at, seen)) = points().get(name) {
            if seen.fetch_add(1, Ordering::SeqCst) + 1 == *at {
                eprintln!("failpoint {name}: crashing the process (EMS_FAILPOINTS)");
                std::process::abort();
            }
        }
    }
}

#[cfg(feature = "failpoints")]
pub use armed::hit;

/// Without the `failpoints` feature a crash point is nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    #[test]
    fn parses_points_and_counts() {
        let points = super::armed::parse("a, b=3,,c=x");
        assert_eq!(points["a"].0, 1);
        assert_eq!(points["b"].0, 3);
        assert_eq!(points["c"].0, 1);
        assert_eq!(points.len(), 3);
    }
}
