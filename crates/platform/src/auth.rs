//! API keys with names and scopes.
//!
//! `API_KEYS` is a comma list, `API_KEYS_FILE` a file of lines (blank lines and `#` comments
//! skipped), of `name:scope:secret` where `scope` is `read` or `write` (`write` implies `read`); a
//! bare `secret` is a write key named `key-<n>`. A secret may be given as `sha256:<64 hex>`, so a
//! deployment never stores the plain key. Only SHA-256 digests are kept in memory, and a presented
//! key is compared with every digest in constant time ([`subtle`]).
//!
//! When any key is configured, every route behind [`protect`] needs `Authorization: Bearer <key>`:
//! 401 (with `WWW-Authenticate: Bearer`) without a key or with an unknown one, 403 with a read key
//! on a write (any method other than GET, HEAD and OPTIONS). The key's *name* is recorded on the
//! request span (`api_key`), never the key.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::Problem;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// GET, HEAD and OPTIONS.
    Read,
    /// Everything (`write` implies `read`).
    Write,
}

impl Scope {
    /// The scope a request with `method` needs.
    pub fn needed_for(method: &Method) -> Self {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            Scope::Read
        } else {
            Scope::Write
        }
    }
}

/// A configured key: its name and scope, and the SHA-256 digest of the secret.
#[derive(Clone)]
pub struct ApiKey {
    /// Logged with each request; never the secret.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why a key list was refused. The messages never contain a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// An entry with an empty secret.
    #[error("entry {0} has an empty secret")]
    EmptySecret(usize),
    /// A name other than letters, digits, `.`, `_` and `-`.
    #[error("entry {0} has an invalid name (letters, digits, `.`, `_`, `-`; at most 64)")]
    InvalidName(usize),
    /// The scope is neither `read` nor `write`.
    #[error("entry {0} has scope `{1}`; expected `read` or `write`")]
    InvalidScope(usize, String),
    /// `sha256:` not followed by 64 hex digits.
    #[error("entry {0}: `sha256:` must be followed by 64 hex digits")]
    InvalidDigest(usize),
    /// Two keys with one name.
    #[error("the name `{0}` is used twice")]
    DuplicateName(String),
}

/// The configured keys; none means every endpoint is open.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(Arc<Vec<ApiKey>>);

impl ApiKeys {
    /// Parses entries (`name:scope:secret` or a bare secret), numbered from 1 in errors.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        let mut names = HashSet::new();
        for (index, entry) in entries
            .into_iter()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let key = parse_entry(index + 1, entry)?;
            if !names.insert(key.name.clone()) {
                return Err(KeyError::DuplicateName(key.name));
            }
            keys.push(key);
        }
        Ok(Self(Arc::new(keys)))
    }

    /// Parses the lines of an `API_KEYS_FILE` (blank lines and `#` comments skipped).
    pub fn parse_file(text: &str) -> Result<Self, KeyError> {
        Self::parse(text.lines().filter(|l| !l.trim_start().starts_with('#')))
    }

    /// These keys and `other`'s (names must stay distinct).
    pub fn merged(self, other: ApiKeys) -> Result<Self, KeyError> {
        let mut keys: Vec<ApiKey> = self.0.iter().chain(other.0.iter()).cloned().collect();
        let mut names = HashSet::new();
        for key in &keys {
            if !names.insert(key.name.as_str()) {
                return Err(KeyError::DuplicateName(key.name.clone()));
            }
        }
        keys.shrink_to_fit();
        Ok(Self(Arc::new(keys)))
    }

    /// Whether no key is configured (everything open).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names and scopes, for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|k| format!("{}:{}", k.name, scope_name(k.scope)))
            .collect()
    }

    /// The key whose secret is `presented`. Every digest is compared, in constant time.
    pub fn identify(&self, presented: &str) -> Option<&ApiKey> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in self.0.iter() {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }

    /// The decision for a request with `method` and `authorization` header value.
    pub fn decide(&self, method: &Method, authorization: Option<&str>) -> Decision {
        if self.is_empty() {
            return Decision::Open;
        }
        let Some(token) = authorization.and_then(bearer_token) else {
            return Decision::Missing;
        };
        match self.identify(token) {
            None => Decision::Unknown,
            Some(key) if key.scope < Scope::needed_for(method) => {
                Decision::Forbidden(key.name.clone())
            }
            Some(key) => Decision::Allowed(key.name.clone()),
        }
    }
}

/// What [`ApiKeys::decide`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No keys are configured.
    Open,
    /// The named key may do this.
    Allowed(String),
    /// No bearer token was given.
    Missing,
    /// The token is not a configured key.
    Unknown,
    /// The named key is a read key and this is a write.
    Forbidden(String),
}

fn parse_entry(index: usize, entry: &str) -> Result<ApiKey, KeyError> {
    let mut parts = entry.splitn(3, ':');
    let (name, scope, secret) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(scope), Some(secret)) if name != "sha256" => {
            let scope = match scope.trim() {
                "read" => Scope::Read,
                "write" => Scope::Write,
                other => return Err(KeyError::InvalidScope(index, other.to_string())),
            };
            (name.trim().to_string(), scope, secret.trim())
        }
        _ => (format!("key-{index}"), Scope::Write, entry),
    };
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid_name {
        return Err(KeyError::InvalidName(index));
    }
    let digest = match secret.strip_prefix("sha256:") {
        Some(hex_digest) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest.trim(), &mut digest)
                .map_err(|_| KeyError::InvalidDigest(index))?;
            digest
        }
        None if secret.is_empty() => return Err(KeyError::EmptySecret(index)),
        None => Sha256::digest(secret.as_bytes()).into(),
    };
    Ok(ApiKey {
        name,
        scope,
        digest,
    })
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Write => "write",
    }
}

/// The token of a `Bearer` authorization (the scheme is case-insensitive, RFC 9110 §11.1).
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The name of the key a request was made with, left on its response for the access log.
#[derive(Debug, Clone)]
pub struct KeyName(pub String);

/// Puts every route of `router` behind `keys` (see the module documentation).
pub fn protect<S: Clone + Send + Sync + 'static>(router: Router<S>, keys: &ApiKeys) -> Router<S> {
    router.route_layer(axum::middleware::from_fn_with_state(
        keys.clone(),
        authorize,
    ))
}

/// Middleware: admits the request, or answers 401 or 403.
pub async fn authorize(State(keys): State<ApiKeys>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match keys.decide(request.method(), authorization) {
        Decision::Open => next.run(request).await,
        Decision::Allowed(name) => {
            tracing::Span::current().record("api_key", name.as_str());
            let mut response = next.run(request).await;
            response.extensions_mut().insert(KeyName(name));
            response
        }
        Decision::Missing => unauthorized(
            "this endpoint needs `Authorization: Bearer <api key>`",
            "Bearer",
        ),
        Decision::Unknown => unauthorized(
            "the API key was not accepted",
            "Bearer error=\"invalid_token\"",
        ),
        Decision::Forbidden(name) => {
            tracing::Span::current().record("api_key", name.as_str());
            let mut response = Problem::new(
                StatusCode::FORBIDDEN,
                "this key may only read; a write needs a key with scope `write`",
            )
            .into_response();
            response.extensions_mut().insert(KeyName(name));
            response
        }
    }
}

fn unauthorized(detail: &str, challenge: &'static str) -> Response {
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &str) -> ApiKeys {
        ApiKeys::parse(list.split(',')).unwrap()
    }

    #[test]
    fn named_scoped_and_bare_keys() {
        let k = keys("ops:write:k1, dash:read:k2,bare-secret");
        assert_eq!(k.describe(), ["ops:write", "dash:read", "key-3:write"]);
        assert_eq!(k.identify("k1").unwrap().name, "ops");
        assert_eq!(k.identify("k2").unwrap().scope, Scope::Read);
        assert_eq!(k.identify("bare-secret").unwrap().scope, Scope::Write);
        assert!(k.identify("k3").is_none());
        assert!(k.identify("").is_none());
    }

    #[test]
    fn a_digest_stands_for_the_secret() {
        let digest = hex::encode(Sha256::digest(b"plain-key"));
        let k = ApiKeys::parse_file(&format!(
            "# keys of the ops team\n\nops:write:sha256:{digest}\n  dash:read:other\n"
        ))
        .unwrap();
        assert_eq!(k.identify("plain-key").unwrap().name, "ops");
        assert!(k.identify(&format!("sha256:{digest}")).is_none());
        assert_eq!(k.identify("other").unwrap().name, "dash");
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_the_secret() {
        let cases = [
            ("a:admin:s", KeyError::InvalidScope(1, "admin".into())),
            (":read:s", KeyError::InvalidName(1)),
            ("a b:read:s", KeyError::InvalidName(1)),
            ("a:read:", KeyError::EmptySecret(1)),
            ("a:read:sha256:12", KeyError::InvalidDigest(1)),
            ("a:read:x,a:write:y", KeyError::DuplicateName("a".into())),
        ];
        for (list, expected) in cases {
            let error = ApiKeys::parse(list.split(',')).unwrap_err();
            assert_eq!(error, expected, "{list}");
            assert!(!error.to_string().contains(":s"), "{error}");
        }
        assert!(keys("").is_empty());
    }

    #[test]
    fn decisions_follow_scope_and_method() {
        let k = keys("ops:write:k1,dash:read:k2");
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(k.decide(&get, None), Decision::Missing);
        assert_eq!(k.decide(&get, Some("Bearer nope")), Decision::Unknown);
        assert_eq!(k.decide(&get, Some("Basic k1")), Decision::Missing);
        assert_eq!(k.decide(&get, Some("Bearer")), Decision::Missing);
        assert_eq!(
            k.decide(&get, Some("bearer k2")),
            Decision::Allowed("dash".into())
        );
        assert_eq!(
            k.decide(&post, Some("Bearer k2")),
            Decision::Forbidden("dash".into())
        );
        assert_eq!(
            k.decide(&post, Some("BEARER  k1 ")),
            Decision::Allowed("ops".into())
        );
        assert_eq!(ApiKeys::default().decide(&post, None), Decision::Open);
    }

    #[test]
    fn merged_lists_keep_names_distinct() {
        let merged = keys("a:read:x").merged(keys("b:write:y")).unwrap();
        assert_eq!(merged.describe(), ["a:read", "b:write"]);
        assert_eq!(
            keys("a:read:x").merged(keys("a:write:y")).unwrap_err(),
            KeyError::DuplicateName("a".into())
        );
    }
}
