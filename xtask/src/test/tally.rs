//! What the passes ran, a line each, and the closing lines `cargo xtask test` prints.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Result;

use super::report::PassReport;
use crate::counts::Counts;

/// What the passes ran: a line each, the summary lines tests handed over, the counts.
#[derive(Default)]
pub(super) struct Tally {
    /// One line per pass or step.
    lines: Vec<String>,
    /// Lines for the closing summary.
    pub(super) summary_lines: Vec<String>,
    /// The counts over everything.
    pub(super) total: Counts,
}

impl Tally {
    /// Runs a step that counts its own tests (API fuzzing, deploy checks) and records it as
    /// `<label>  N passed, M failed (S s)` (the counts aligned with the passes' lines).
    pub(super) fn step(
        &mut self,
        label: &str,
        step: impl FnOnce() -> Result<Counts>,
    ) -> Result<()> {
        let clock = Instant::now();
        let c = step()?;
        self.lines.push(format!(
            "{label:<33}{} passed, {} failed ({} s)",
            c.passed,
            c.failed,
            clock.elapsed().as_secs()
        ));
        self.total += c;
        Ok(())
    }

    /// Records the `cargo test` pass `name` begun at `clock`: the line `<label>  N passed, M
    /// failed in B test binaries (S s<detail>)`, its summary lines and its counts.
    pub(super) fn pass(
        &mut self,
        name: &str,
        label: &str,
        report: PassReport,
        clock: Instant,
        detail: &str,
    ) {
        let c = counted(name, &report);
        self.lines.push(format!(
            "{label:<33}{} passed, {} failed in {} test binaries ({} s{detail})",
            c.passed,
            c.failed,
            report.binaries.len(),
            clock.elapsed().as_secs()
        ));
        self.summary_lines.extend(report.summary_lines);
        self.total += c;
    }

    /// The closing lines: each pass, each distinct summary line, `N passed, M failed`.
    pub(super) fn print(&self) {
        println!();
        for l in &self.lines {
            println!("{l}");
        }
        let mut seen = BTreeSet::new();
        for l in self.summary_lines.iter().map(|l| l.trim()) {
            if !l.is_empty() && seen.insert(l) {
                println!("{l}");
            }
        }
        println!("{} passed, {} failed", self.total.passed, self.total.failed);
    }
}

/// The counts of a pass, with one failure added when it ran no test at all.
fn counted(name: &str, report: &PassReport) -> Counts {
    let mut c = report.total();
    if c.passed + c.failed == 0 {
        eprintln!("{name} pass: no test ran");
        c.failed += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_lines_keep_their_columns() {
        let report = || PassReport {
            binaries: vec![(
                "a: b".into(),
                Counts {
                    passed: 3,
                    failed: 0,
                },
            )],
            summary_lines: vec!["crash points: 2".into()],
        };
        let mut tally = Tally::default();
        tally.pass(
            "SQLite",
            "SQLite pass (every test):",
            report(),
            Instant::now(),
            "",
        );
        let label = "PostgreSQL pass (database tests): ";
        tally.pass("PostgreSQL", label, report(), Instant::now(), ": a, b");
        tally
            .step("deploy checks:", || {
                Ok(Counts {
                    passed: 1,
                    failed: 1,
                })
            })
            .unwrap();
        assert_eq!(
            tally.lines,
            [
                "SQLite pass (every test):        3 passed, 0 failed in 1 test binaries (0 s)",
                "PostgreSQL pass (database tests): 3 passed, 0 failed in 1 test binaries (0 s: a, b)",
                "deploy checks:                   1 passed, 1 failed (0 s)",
            ]
        );
        assert_eq!(tally.summary_lines.len(), 2);
        assert_eq!(
            tally.total,
            Counts {
                passed: 7,
                failed: 1
            }
        );
    }

    #[test]
    fn a_pass_without_tests_is_a_failure() {
        let empty = PassReport::default();
        assert_eq!(
            counted("x", &empty),
            Counts {
                passed: 0,
                failed: 1
            }
        );
    }
}
