//! Reading what a pass printed: cargo's `Running …` lines paired with libtest's `test result:`
//! lines ([`PassReport`]), the summary lines tests hand over, and plain `N passed, M failed` lines.

use crate::counts::Counts;
use crate::process;

/// Prefixes of lines a test prints for the closing summary (also taken from the test output).
pub(super) const SUMMARY_PREFIXES: [&str; 2] = ["sasl_ssl:", "crash points:"];

/// What one `cargo test` pass ran.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Each test binary (`<binary>: <what>`) and its counts, in run order.
    pub binaries: Vec<(String, Counts)>,
    /// Lines for the closing summary the output carried.
    pub summary_lines: Vec<String>,
}

impl PassReport {
    /// The counts over all binaries.
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for (_, c) in &self.binaries {
            total += *c;
        }
        total
    }
}

/// Pairs cargo's `Running …` / `Doc-tests …` lines with the `test result:` line that follows
/// each; keeps the summary lines.
pub fn parse_pass(lines: &[String]) -> PassReport {
    let mut report = PassReport::default();
    let mut current: Option<String> = None;
    for line in lines {
        let line = process::strip_ansi(line);
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Running ") {
            // `unittests src/lib.rs (target/debug/deps/platform-0123abcd)`
            let (what, binary) = match rest.rsplit_once(" (") {
                Some((what, path)) => {
                    let file = path
                        .trim_end_matches(')')
                        .rsplit('/')
                        .next()
                        .unwrap_or(path);
                    let stem = file.rsplit_once('-').map_or(file, |(stem, _)| stem);
                    (what, stem.to_string())
                }
                None => (rest, String::new()),
            };
            current = Some(format!("{binary}: {what}"));
        } else if let Some(krate) = line.strip_prefix("Doc-tests ") {
            current = Some(format!("{krate}: doc tests"));
        } else if let Some(counts) = parse_test_result(line) {
            let label = current.take().unwrap_or_else(|| "(unnamed)".to_string());
            report.binaries.push((label, counts));
        } else if SUMMARY_PREFIXES.iter().any(|p| line.starts_with(p)) {
            report.summary_lines.push(line.to_string());
        }
    }
    report
}

/// Parses libtest's `test result: ok. 3 passed; 1 failed; 0 ignored; ...`.
pub fn parse_test_result(line: &str) -> Option<Counts> {
    let rest = &line[line.find("test result:")? + "test result:".len()..];
    let mut counts = Counts::default();
    for part in rest.split([';', '.']) {
        let mut words = part.split_whitespace();
        if let (Some(n), Some(what)) = (words.next(), words.next()) {
            match (n.parse::<u64>(), what) {
                (Ok(n), "passed") => counts.passed = n,
                (Ok(n), "failed") => counts.failed = n,
                _ => {}
            }
        }
    }
    Some(counts)
}

/// Parses a plain closing line `N passed, M failed` (optionally `word: ` before it and
/// `, K skipped` after it).
pub fn parse_plain_summary(line: &str) -> Option<Counts> {
    let line = line.trim();
    let line = match line.split_once(": ") {
        Some((word, rest)) if !word.contains(' ') => rest,
        _ => line,
    };
    let mut parts = line.split(", ");
    let passed = parts.next()?.strip_suffix(" passed")?.parse().ok()?;
    let failed = parts.next()?.strip_suffix(" failed")?.parse().ok()?;
    match parts.next() {
        None => {}
        Some(p) if p.strip_suffix(" skipped")?.parse::<u64>().is_ok() => {}
        Some(_) => return None,
    }
    Some(Counts { passed, failed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_result_lines() {
        let c = parse_test_result(
            "test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        assert_eq!(
            c,
            Some(Counts {
                passed: 3,
                failed: 2
            })
        );
        assert_eq!(
            parse_test_result("test result: ok. 0 passed; 0 failed; 0 ignored"),
            Some(Counts::default())
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }

    #[test]
    fn pairs_each_test_binary_with_its_result() {
        let lines: Vec<String> = [
            "\u{1b}[1m\u{1b}[92m     Running\u{1b}[0m unittests src/lib.rs (target/debug/deps/platform-0a1b2c)",
            "test result: ok. 36 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "     Running tests/kafka.rs (target/debug/deps/kafka-99ff)",
            "sasl_ssl: seed flow passed (PLAIN, SCRAM-SHA-512)",
            "test result: FAILED. 6 passed; 1 failed; 0 ignored",
            "   Doc-tests contracts",
            "test result: ok. 0 passed; 0 failed; 0 ignored",
        ]
        .map(String::from)
        .to_vec();
        let report = parse_pass(&lines);
        assert_eq!(
            report.binaries,
            vec![
                (
                    "platform: unittests src/lib.rs".to_string(),
                    Counts {
                        passed: 36,
                        failed: 0
                    }
                ),
                (
                    "kafka: tests/kafka.rs".to_string(),
                    Counts {
                        passed: 6,
                        failed: 1
                    }
                ),
                ("contracts: doc tests".to_string(), Counts::default()),
            ]
        );
        assert_eq!(
            report.total(),
            Counts {
                passed: 42,
                failed: 1
            }
        );
        assert_eq!(
            report.summary_lines,
            ["sasl_ssl: seed flow passed (PLAIN, SCRAM-SHA-512)"]
        );
    }

    #[test]
    fn parses_plain_summary_lines() {
        assert_eq!(
            parse_plain_summary("12 passed, 0 failed"),
            Some(Counts {
                passed: 12,
                failed: 0
            })
        );
        assert_eq!(
            parse_plain_summary("deploy: 4 passed, 1 failed, 2 skipped"),
            Some(Counts {
                passed: 4,
                failed: 1
            })
        );
        assert_eq!(parse_plain_summary("all 4 passed, 1 failed"), None);
        assert_eq!(parse_plain_summary("nothing here"), None);
    }
}
