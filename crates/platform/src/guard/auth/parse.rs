//! One `API_KEYS` entry: `name:scope[+scope…]:secret`, e.g.
//! `registrar:customers:write:…` or `dash:customers:read+transactions:read:…`.
//!
//! Errors name the entry by its position only: a malformed entry may be a secret (or hold one
//! where the name or a scope should be), so no part of it is ever repeated.

use sha2::{Digest, Sha256};

use super::scope::{Scope, Scopes, KNOWN};

/// The fewest characters a plain secret may have. (A `sha256:` digest cannot be checked: whoever
/// made it is responsible for the key's length.)
pub const MIN_SECRET_LEN: usize = 24;

/// The longest key name.
pub const MAX_NAME_LEN: usize = 64;

/// Why a key list was refused. The messages never contain a secret, nor any other part of a
/// malformed entry: entries are numbered from 1.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not of the form `name:scopes:secret` (a bare secret, or no secret after the scopes).
    #[error(
        "entry {0} is not `name:scopes:secret` (e.g. `registrar:customers:write:<secret>`; \
         several scopes joined with `+`)"
    )]
    Malformed(usize),
    /// A name other than letters, digits, `.`, `_` and `-`.
    #[error("entry {0} has an invalid name (letters, digits, `.`, `_`, `-`; at most 64)")]
    InvalidName(usize),
    /// The scope `read` or `write` of the earlier format, which covered every service.
    #[error(
        "entry {0} has the scope `read` or `write` of the earlier format, which no longer \
         exists: name the service and action of each scope, e.g. \
         `customers:read+transactions:read`"
    )]
    OldScope(usize),
    /// A scope that does not exist.
    #[error("entry {0} has an unknown scope; the scopes are {KNOWN}")]
    UnknownScope(usize),
    /// An entry with an empty secret.
    #[error("entry {0} has an empty secret")]
    EmptySecret(usize),
    /// A plain secret shorter than [`MIN_SECRET_LEN`].
    #[error(
        "entry {0} has a secret shorter than {MIN_SECRET_LEN} characters \
         (make one with `openssl rand -base64 32`)"
    )]
    TooShort(usize),
    /// `sha256:` not followed by 64 hex digits.
    #[error("entry {0}: `sha256:` must be followed by 64 hex digits")]
    InvalidDigest(usize),
    /// Two keys with one name.
    #[error("the name `{0}` is used twice")]
    DuplicateName(String),
}

/// A parsed entry: name, scopes, and the SHA-256 digest of the secret.
pub(super) struct Entry {
    pub name: String,
    pub scopes: Scopes,
    pub digest: [u8; 32],
}

/// Parses entry number `index` (from 1).
pub(super) fn entry(index: usize, text: &str) -> Result<Entry, KeyError> {
    let (name, rest) = text.split_once(':').ok_or(KeyError::Malformed(index))?;
    let name = name.trim();
    let (scopes, secret) = scopes_and_secret(index, rest)?;
    let valid_name = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid_name {
        return Err(KeyError::InvalidName(index));
    }
    let secret = secret.trim();
    let digest = match secret.strip_prefix("sha256:") {
        Some(hex_digest) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest.trim(), &mut digest)
                .map_err(|_| KeyError::InvalidDigest(index))?;
            digest
        }
        None if secret.is_empty() => return Err(KeyError::EmptySecret(index)),
        None if secret.chars().count() < MIN_SECRET_LEN => return Err(KeyError::TooShort(index)),
        None => Sha256::digest(secret.as_bytes()).into(),
    };
    Ok(Entry {
        name: name.to_string(),
        scopes,
        digest,
    })
}

/// Splits `area:action[+area:action…]:secret` into the scopes and the secret. Areas and actions
/// hold no `:` or `+`, so the first `:` after an action ends the list.
fn scopes_and_secret(index: usize, mut rest: &str) -> Result<(Scopes, &str), KeyError> {
    let mut scopes = Scopes::default();
    loop {
        let (area, after_area) = rest.split_once(':').ok_or(KeyError::Malformed(index))?;
        if matches!(area.trim(), "read" | "write") {
            return Err(KeyError::OldScope(index));
        }
        let end = after_area
            .find([':', '+'])
            .ok_or(KeyError::Malformed(index))?;
        let action = &after_area[..end];
        let scope = Scope::parse(&format!("{}:{}", area.trim(), action.trim()))
            .ok_or(KeyError::UnknownScope(index))?;
        scopes = scopes.with(scope);
        rest = &after_area[end + 1..];
        if after_area[end..].starts_with(':') {
            return Ok((scopes, rest));
        }
    }
}
