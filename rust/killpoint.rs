//! Kill points: test-only crash injection at the writer's commit boundaries.
//!
//! `FLIGHTLOG_KILL_POINT=<point>[:<n>]` makes the process SIGKILL itself the `n`th time (1 by
//! default) its writer reaches `<point>` while writing a batch of traces:
//!
//! - `before_put`: the write transaction is open, nothing of the batch is written yet;
//! - `after_put`: every record and index entry of the batch is written, not committed;
//! - `after_commit`: the batch is committed, no caller has been told yet.
//!
//! The crash tests (tests/test_crash.py) use them to prove a batch is all or nothing and
//! that nothing is acknowledged before its commit. The variable is read once when a writer
//! starts; unset, each point costs one branch on a field that is `None`.

use std::cell::Cell;

use crate::error::{Error, Result};

/// The environment variable that arms a kill point.
pub const VARIABLE: &str = "FLIGHTLOG_KILL_POINT";

/// A commit boundary of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    BeforePut,
    AfterPut,
    AfterCommit,
}

impl Point {
    fn parse(name: &str) -> Option<Point> {
        match name {
            "before_put" => Some(Point::BeforePut),
            "after_put" => Some(Point::AfterPut),
            "after_commit" => Some(Point::AfterCommit),
            _ => None,
        }
    }
}

/// The armed kill point of one writer, if any, and how often it was reached.
#[derive(Debug, Default)]
pub struct KillPoints {
    armed: Option<(Point, u64)>,
    reached: Cell<u64>,
}

impl KillPoints {
    /// Reads [`VARIABLE`]; a value it cannot parse is an error, so a typo in a test never
    /// silently disarms the crash it meant to cause.
    pub fn from_env() -> Result<KillPoints> {
        match std::env::var(VARIABLE) {
            Err(_) => Ok(KillPoints::default()),
            Ok(spec) => KillPoints::parse(&spec).ok_or_else(|| {
                Error::Storage(format!(
                    "{VARIABLE}={spec:?}: expected before_put, after_put or after_commit, \
                     optionally followed by :N (N >= 1)"
                ))
            }),
        }
    }

    fn parse(spec: &str) -> Option<KillPoints> {
        let (name, count) = match spec.split_once(':') {
            Some((name, count)) => (name, count.parse().ok().filter(|&n: &u64| n >= 1)?),
            None => (spec, 1),
        };
        Some(KillPoints { armed: Some((Point::parse(name)?, count)), reached: Cell::new(0) })
    }

    /// Kills the process if `point` is armed and this is its `n`th arrival.
    pub fn reach(&self, point: Point) {
        let Some((armed, count)) = self.armed else { return };
        if armed != point {
            return;
        }
        self.reached.set(self.reached.get() + 1);
        if self.reached.get() == count {
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions. SIGKILL cannot
            // be caught, so nothing of this process runs after it: exactly a crash.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            // SIGKILL to oneself is delivered before kill(2) returns; never continue regardless.
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_and_without_a_count() {
        let parsed = |spec: &str| KillPoints::parse(spec).and_then(|k| k.armed);
        assert_eq!(parsed("before_put"), Some((Point::BeforePut, 1)));
        assert_eq!(parsed("after_put:3"), Some((Point::AfterPut, 3)));
        assert_eq!(parsed("after_commit:12"), Some((Point::AfterCommit, 12)));
        for bad in ["", "after", "after_put:", "after_put:0", "after_put:-1", "before_put:x"] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn other_points_do_not_count_towards_the_armed_one() {
        let points = KillPoints::parse("after_commit:2").unwrap();
        for _ in 0..5 {
            points.reach(Point::BeforePut);
            points.reach(Point::AfterPut);
        }
        points.reach(Point::AfterCommit);
        assert_eq!(points.reached.get(), 1, "one arrival at the armed point, still alive");
    }
}
