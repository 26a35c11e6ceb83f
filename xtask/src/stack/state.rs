//! Where the stack keeps its data ([`Setup`]), and what a detached stack left behind
//! ([`State`], in `data/stack.state`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::paths;

/// The data directory of the stack: `$EMS_DATA_DIR`, else `<repo>/data`.
pub(super) fn data_dir() -> PathBuf {
    match std::env::var_os("EMS_DATA_DIR").filter(|v| !v.is_empty()) {
        Some(d) => paths::absolute(PathBuf::from(d)),
        None => paths::repo_root().join("data"),
    }
}

/// The file a detached stack leaves its pids in.
pub(super) fn state_file(data: &Path) -> PathBuf {
    data.join("stack.state")
}

/// Where `up` keeps the stack's data, and what it adds to every service's environment.
#[derive(Debug, Clone)]
pub struct Setup {
    /// SQLite files, `logs/`, the mail folder, `stack.state`.
    pub data: PathBuf,
    /// Added to every service's environment (a later entry wins).
    pub env: Vec<(String, String)>,
    /// How much of each service's log is kept.
    pub logs: crate::logs::Limits,
}

impl Setup {
    /// `EMS_DATA_DIR` (else `./data`), nothing added to the environment, logs kept as
    /// `EMS_LOG_MAX_MB` and `EMS_LOG_KEEP` say.
    pub(super) fn from_env() -> Result<Self> {
        Ok(Self {
            data: data_dir(),
            env: Vec::new(),
            logs: crate::logs::Limits::from_env()?,
        })
    }
}

/// What a detached stack left behind: `name pid` lines, and `broker started` when `up` started
/// the broker.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Each service and its pid.
    pub services: Vec<(String, u32)>,
    /// Whether `up` started the broker.
    pub broker_started: bool,
}

impl State {
    /// The file's text: `name pid` lines, then `broker started` when `up` started it.
    pub(super) fn render(&self) -> String {
        let mut s = String::new();
        for (name, pid) in &self.services {
            s.push_str(&format!("{name} {pid}\n"));
        }
        if self.broker_started {
            s.push_str("broker started\n");
        }
        s
    }

    /// The state [`State::render`] wrote (lines it cannot read are left out).
    fn parse(text: &str) -> Self {
        let mut st = State::default();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("broker", "started")) => st.broker_started = true,
                Some((name, pid)) => {
                    if let Ok(pid) = pid.trim().parse() {
                        st.services.push((name.to_string(), pid));
                    }
                }
                None => {}
            }
        }
        st
    }

    /// The state a detached stack left under `data`, if any.
    pub(super) fn load(data: &Path) -> Option<Self> {
        fs::read_to_string(state_file(data))
            .ok()
            .map(|t| Self::parse(&t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let st = State {
            services: vec![("a".into(), 1), ("b".into(), 22)],
            broker_started: true,
        };
        assert_eq!(State::parse(&st.render()), st);
        assert_eq!(State::parse(""), State::default());
    }
}
