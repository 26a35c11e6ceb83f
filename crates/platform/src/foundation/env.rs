//! The configuration primitives every layer reads its settings with: where values come from
//! ([`Env`]), the start-up error naming the variable ([`ConfigError`]), secrets that are never
//! printed ([`Secret`]), the log format, and the readers of numbers, durations and flags. Imports
//! nothing of the crate: the settings of each module (server, rate limit, retention, Kafka…) are
//! read with these, and [`crate::runtime::config`] gathers them into the service's configuration.

use std::collections::HashMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Where configuration values come from: the process environment, or a map in tests.
pub trait Env {
    /// The value of `key`, if set and not blank.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned().filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, key: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.trim().is_empty())
    }
}

/// A configuration error: which variable, and what is wrong with it (never its secret value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong, without secret values.
    pub problem: String,
}

impl ConfigError {
    /// An error about `variable`.
    pub fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
        }
    }
}

/// A secret string ([`secrecy::SecretString`]: zeroed when dropped): its `Debug` is redacted and
/// it has no `Display`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The secret itself, for the one place that must hand it on (a client library).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose()
            .as_bytes()
            .ct_eq(other.expose().as_bytes())
            .into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Log output format (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A positive whole number of seconds from `variable`, `default` when unset.
pub fn seconds(
    env: &impl Env,
    variable: &'static str,
    default: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    match env.var(variable) {
        Some(text) => match text.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(std::time::Duration::from_secs(secs)),
            _ => Err(ConfigError::new(
                variable,
                format!("`{text}` is not a positive whole number of seconds"),
            )),
        },
        None => Ok(default),
    }
}

/// A whole number of at least 1 from `variable`, `default` when unset.
pub fn positive(
    env: &impl Env,
    variable: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    match env.var(variable) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                ConfigError::new(
                    variable,
                    format!("`{text}` is not a whole number of at least 1"),
                )
            }),
    }
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`) from `variable`, `default` when unset.
pub fn flag(env: &impl Env, variable: &'static str, default: bool) -> Result<bool, ConfigError> {
    match env.var(variable) {
        None => Ok(default),
        Some(text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ConfigError::new(
                variable,
                format!("`{text}` is not `true` or `false`"),
            )),
        },
    }
}
