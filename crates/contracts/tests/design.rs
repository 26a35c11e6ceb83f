//! `docs/design.md`'s configuration table against the code: every environment variable the
//! production code reads has a row, and every row names a variable the code still reads.
//!
//! It reads files only (no broker, no database), so it lives in the lightest crate and runs once,
//! in the SQLite pass (`xtask::test::NO_DATABASE_TESTS`).
//!
//! **What counts as a read.** The production sources are `crates/*/src` and `services/*/src`,
//! without `#[cfg(test)]` items and comments. In them a variable name is a string literal in
//! SCREAMING_SNAKE_CASE that
//! - holds an underscore (`"KAFKA_BROKERS"`, `"CE_APP"`): whatever reads it (`env.var(…)`, a
//!   helper such as `positive(env, "HTTP_MAX_CONNECTIONS", …)`, a `const` or an array of names
//!   read in a loop), unless listed in [`NOT_VARIABLES`] or compile-time (`env!`); or
//! - is read directly: `var("PORT")`, `var_os("…")`, a helper's name after `env,`, or a
//!   `ConfigError::new("…")` (which names the variable at fault);
//!
//! plus the reads no literal shows ([`INDIRECT`]: `RUST_LOG` through `EnvFilter`).
//!
//! **Left out, on purpose** ([`EXCLUDED`]): the test harness (`crates/platform/src/testing`,
//! feature `testing`, never in a binary) and the developer tooling (`xtask`, `tests/system`);
//! their variables are documented where they are used (README's *Test it*, *The local Kafka
//! broker*) and are not the services' configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Upper-case literals with an underscore that are not environment variables, with why.
const NOT_VARIABLES: &[(&str, &str)] = &[
    (
        "SCREAMING_SNAKE_CASE",
        "strum's `serialize_all` case, not a variable",
    ),
    (
        "EVENT_STREAMS_",
        "the prefix a broker variable's name is tested for (`starts_with`)",
    ),
];

/// Variables read without their name in a literal: (variable, a text of the code that reads it).
const INDIRECT: &[(&str, &str)] = &[(
    "RUST_LOG",
    // tracing_subscriber's `EnvFilter::try_from_default_env` reads `RUST_LOG`.
    "from_default_env",
)];

/// Source folders left out of the scan, with why.
const EXCLUDED: &[(&str, &str)] = &[
    (
        "crates/platform/src/testing",
        "the test harness (feature `testing`): TEST_DATABASE_URL, EMS_KAFKA_ENV, … configure tests, not a binary",
    ),
];

/// The heading of the section of `docs/design.md` whose tables list the variables.
const SECTION: &str = "## Configuration";

#[test]
fn every_variable_the_code_reads_is_in_the_design_and_no_other() {
    let root = workspace_root();
    let read = variables_read(&root);
    assert!(
        read.len() > 40 && read.contains_key("DATABASE_URL") && read.contains_key("PORT"),
        "the scan found too few variables, it no longer sees the code's reads: {:?}",
        read.keys()
    );
    let design = fs::read_to_string(root.join("docs/design.md")).expect("docs/design.md");
    let documented = configuration_table(&design);

    let missing: Vec<String> = read
        .iter()
        .filter(|(name, _)| !documented.contains(*name))
        .map(|(name, files)| format!("{name} (read in {})", join(files)))
        .collect();
    let stale: Vec<&String> = documented
        .iter()
        .filter(|name| !read.contains_key(*name))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/design.md's configuration table and the code disagree.\n\
         Read by the code but not in the table (add a row: variable, binaries, default, meaning):\n  {}\n\
         In the table but read nowhere (remove the row, or fix this test's scan):\n  {}",
        missing.join("\n  "),
        stale
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
    );
}

#[test]
fn the_table_reader_and_the_scan_see_what_they_should() {
    let table = "# x\n## Configuration\n\nText `NOT_A_ROW`.\n\n| variable | x |\n|---|---|\n\
                 | `A_B`, `C_D` | uses `E_F` |\n| `PORT` | x |\n## Next\n| `G_H` | x |\n";
    let names: Vec<String> = configuration_table(table).into_iter().collect();
    assert_eq!(names, ["A_B", "C_D", "PORT"]);

    let source = r##"
        const CA: &str = "DATABASE_CA_CERT_BASE64"; // "IN_A_COMMENT"
        const NAMES: [&str; 2] = ["FIRST_NAME", "SECOND_NAME"];
        fn f(env: &impl Env) {
            env.var("PORT"); std::env::var_os("HOSTNAME"); positive(env, "LIMIT", 1);
            let _ = ("GET", "SCREAMING_SNAKE_CASE", env!("CARGO_PKG_VERSION"), r#"RAW_"QUOTE"#);
            let _ = '"'; let _: &'static str = "X";
            /* "IN_A_BLOCK" /* nested */ "STILL_IN_A_BLOCK" */
        }
        #[cfg(test)]
        mod tests { fn g() { let _ = ("TEST_ONLY", '}', "}"); } }
        fn h() { let _ = "AFTER_TESTS"; }
    "##;
    let found = names_read(source);
    let expected = [
        "AFTER_TESTS",
        "DATABASE_CA_CERT_BASE64",
        "FIRST_NAME",
        "HOSTNAME",
        "LIMIT",
        "PORT",
        "SECOND_NAME",
    ];
    assert_eq!(found.into_iter().collect::<Vec<_>>(), expected);
}

/// Every variable the production sources read, with the files that read it.
fn variables_read(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    for parent in ["crates", "services"] {
        let Ok(entries) = fs::read_dir(root.join(parent)) else {
            continue;
        };
        for entry in entries.flatten() {
            rust_files(&entry.path().join("src"), &mut files);
        }
    }
    let mut read: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        if EXCLUDED
            .iter()
            .any(|(folder, _)| relative.starts_with(folder))
        {
            continue;
        }
        let text = fs::read_to_string(&file).expect("a source file");
        for name in names_read(&text) {
            read.entry(name).or_default().insert(relative.clone());
        }
    }
    read
}

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The variable names one source file reads (see the module's documentation).
fn names_read(source: &str) -> BTreeSet<String> {
    let (code, literals) = strip(source);
    let code = without_test_items(&code);
    let mut names = BTreeSet::new();
    let mut rest = code.as_str();
    let mut before = String::new();
    while let Some(start) = rest.find("\"§") {
        before.push_str(&rest[..start]);
        let after = &rest[start + "\"§".len()..];
        let Some(end) = after.find('"') else { break };
        let index: usize = after[..end].parse().expect("a literal's index");
        let text = &literals[index];
        let mut context: Vec<char> = before
            .chars()
            .rev()
            .filter(|c| !c.is_whitespace())
            .take(24)
            .collect();
        context.reverse();
        let context: String = context.into_iter().collect();
        let compile_time = context.ends_with("env!(");
        let direct = ["var(", "var_os(", "(env,", "ConfigError::new("]
            .iter()
            .any(|call| context.ends_with(call));
        let named = text.contains('_') && !NOT_VARIABLES.iter().any(|(n, _)| n == text);
        if screaming(text) && !compile_time && (direct || named) {
            names.insert(text.clone());
        }
        before.push_str("\"\"");
        rest = &after[end + 1..];
    }
    for (variable, marker) in INDIRECT {
        if code.contains(marker) {
            names.insert(variable.to_string());
        }
    }
    names
}

/// Whether `text` is SCREAMING_SNAKE_CASE (an upper-case letter first).
fn screaming(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_uppercase())
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `source` without comments, each string literal replaced by `"§<index>"`, and the literals.
fn strip(source: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = source.chars().collect();
    let mut code = String::new();
    let mut literals = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let literal = match (c, next) {
            ('/', Some('/')) => {
                i = chars[i..]
                    .iter()
                    .position(|c| *c == '\n')
                    .map_or(chars.len(), |p| i + p);
                continue;
            }
            ('/', Some('*')) => {
                i = block_comment_end(&chars, i);
                continue;
            }
            ('r', Some('#' | '"')) if !ident_before(&chars, i) => raw_string(&chars, i),
            ('"', _) => Some(string(&chars, i)),
            ('\'', _) => {
                // A char literal ('x', '\n', '\u{..}') is skipped; a lifetime ('a) is code.
                let end = char_literal_end(&chars, i);
                code.push_str(if end.is_some() { "' '" } else { "'" });
                i = end.map_or(i + 1, |end| end + 1);
                continue;
            }
            _ => None,
        };
        match literal {
            Some((text, end)) => {
                code.push_str(&format!("\"§{}\"", literals.len()));
                literals.push(text);
                i = end;
            }
            None => {
                code.push(c);
                i += 1;
            }
        }
    }
    (code, literals)
}

/// Whether the character before `i` continues an identifier (`for` in `for"…` is not `r"…`).
fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Where the block comment opening at `i` ends (comments nest).
fn block_comment_end(chars: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                break;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// The text of the raw string `r#"…"#` at `i` and where it ends; `None` if it is not one.
fn raw_string(chars: &[char], i: usize) -> Option<(String, usize)> {
    let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
    let open = i + 1 + hashes;
    if chars.get(open) != Some(&'"') {
        return None;
    }
    let mut j = open + 1;
    let mut text = String::new();
    while j < chars.len() {
        if chars[j] == '"' && chars[j + 1..].iter().take(hashes).all(|c| *c == '#') {
            break;
        }
        text.push(chars[j]);
        j += 1;
    }
    Some((text, j + 1 + hashes))
}

/// The text of the string literal opening at `i` and where it ends.
fn string(chars: &[char], i: usize) -> (String, usize) {
    let mut j = i + 1;
    let mut text = String::new();
    while j < chars.len() && chars[j] != '"' {
        if chars[j] == '\\' {
            j += 1;
        }
        if let Some(c) = chars.get(j) {
            text.push(*c);
        }
        j += 1;
    }
    (text, j + 1)
}

/// Where the char literal at `i` closes; `None` for a lifetime.
fn char_literal_end(chars: &[char], i: usize) -> Option<usize> {
    if chars.get(i + 1) == Some(&'\\') {
        chars
            .get(i + 3..)?
            .iter()
            .position(|c| *c == '\'')
            .map(|p| i + 3 + p)
    } else if chars.get(i + 2) == Some(&'\'') {
        Some(i + 2)
    } else {
        None
    }
}

/// `code` (from [`strip`]) without the items after each `#[cfg(test)]`: up to the `;` or the
/// brace that closes the item.
fn without_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(start) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..start]);
        let item = &rest[start..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (at, c) in item.char_indices() {
            match c {
                ';' if depth == 0 => {
                    end = at + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = at + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The variables the tables of `design`'s configuration section list: every backticked
/// SCREAMING_SNAKE_CASE name in a row's first cell.
fn configuration_table(design: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(start) = design.find(&format!("\n{SECTION}\n")) else {
        return names;
    };
    let section = &design[start + SECTION.len() + 2..];
    let section = section.find("\n## ").map_or(section, |end| &section[..end]);
    for line in section.lines() {
        let Some(row) = line.trim().strip_prefix('|') else {
            continue;
        };
        let first = row.split('|').next().unwrap_or_default();
        for (n, part) in first.split('`').enumerate() {
            if n % 2 == 1 && screaming(part) {
                names.insert(part.to_string());
            }
        }
    }
    names
}

/// The workspace root: two levels above this crate.
fn workspace_root() -> PathBuf {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .ancestors()
        .nth(2)
        .expect("crates/contracts lies two levels below the root")
        .to_path_buf()
}

/// `files` as one comma list.
fn join(files: &BTreeSet<String>) -> String {
    files.iter().cloned().collect::<Vec<_>>().join(", ")
}
