//! `API_KEYS` entries for tests (`name:scopes:secret`, see `platform::auth`).

use platform::auth::{Scope, ALL_SCOPES};

/// The entry of key `name` with `secret` and `scopes`.
pub fn key_entry(name: &str, scopes: &[Scope], secret: &str) -> String {
    let scopes: Vec<String> = scopes.iter().map(Scope::to_string).collect();
    format!("{name}:{}:{secret}", scopes.join("+"))
}

/// The entry of key `name` with `secret` and every scope there is (an operator's key).
pub fn full_access_entry(name: &str, secret: &str) -> String {
    key_entry(name, &ALL_SCOPES, secret)
}
