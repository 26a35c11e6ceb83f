//! API keys with names and scopes.
//!
//! `API_KEYS` is a comma list, `API_KEYS_FILE` a file of lines (blank lines and `#` comments
//! skipped), of `name:scopes:secret`: `scopes` is one or more of `customers:read`,
//! `customers:write`, `transactions:read`, `transactions:write`, `notifications:read` and
//! `console:read`, joined with `+` (`dash:customers:read+transactions:read:<secret>`). A scope is
//! one service's reads (GET, HEAD, OPTIONS) or writes (every other method); `write` does not
//! imply `read`, and a key may do nothing it does not list. A plain secret has at least
//! [`MIN_SECRET_LEN`] characters; it may be given as `sha256:<64 hex>` instead, so a deployment
//! never stores the plain key. Only SHA-256 digests are kept in memory, and a presented key is
//! compared with every digest in constant time ([`subtle`]). A list that cannot be read is
//! refused at start-up with an error naming the entry's position, never any part of it.
//!
//! When any key is configured, every route behind [`protect`] needs `Authorization: Bearer <key>`:
//! 401 (with `WWW-Authenticate: Bearer`) without a key or with an unknown one, 403 with a key
//! that lacks the route's scope (its service's [`Area`] and the method's [`Action`]). The key's
//! *name* is recorded on the request span (`api_key`), never the key.

mod parse;
mod scope;

pub use parse::{KeyError, MAX_NAME_LEN, MIN_SECRET_LEN};
pub use scope::{Action, Area, Scope, Scopes, ALL as ALL_SCOPES};

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::foundation::problem::Problem;

/// A configured key: its name and scopes, and the SHA-256 digest of the secret.
#[derive(Clone)]
pub struct ApiKey {
    /// Logged with each request; never the secret.
    pub name: String,
    /// What it may do.
    pub scopes: Scopes,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes.to_string())
            .finish_non_exhaustive()
    }
}

/// The configured keys; none means no key is asked for (see [`crate::guard::bind`] for where a
/// service without keys may listen).
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(Arc<Vec<ApiKey>>);

impl ApiKeys {
    /// Parses entries (`name:scopes:secret`), numbered from 1 in errors; blank ones are skipped.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        let mut names = HashSet::new();
        for (index, entry) in entries
            .into_iter()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let parse::Entry {
                name,
                scopes,
                digest,
            } = parse::entry(index + 1, entry)?;
            if !names.insert(name.clone()) {
                return Err(KeyError::DuplicateName(name));
            }
            keys.push(ApiKey {
                name,
                scopes,
                digest,
            });
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

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names and scopes (`dash:customers:read+transactions:read`), for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|k| format!("{}:{}", k.name, k.scopes))
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

    /// The decision for a request with `method`, to a route of `area`, with `authorization` as
    /// its header value.
    pub fn decide(&self, area: Area, method: &Method, authorization: Option<&str>) -> Decision {
        if self.is_empty() {
            return Decision::Open;
        }
        let Some(token) = authorization.and_then(bearer_token) else {
            return Decision::Missing;
        };
        let needed = Scope::needed(area, method);
        match self.identify(token) {
            None => Decision::Unknown,
            Some(key) if !key.scopes.allows(needed) => {
                Decision::Forbidden(key.name.clone(), needed)
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
    /// The named key lacks the scope this needs.
    Forbidden(String, Scope),
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

/// Puts every route of `router` behind `keys`: each is a route of `area` (see the module
/// documentation).
pub fn protect<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    keys: &ApiKeys,
    area: Area,
) -> Router<S> {
    router.route_layer(axum::middleware::from_fn_with_state(
        Guard {
            keys: keys.clone(),
            area,
        },
        authorize,
    ))
}

/// What [`authorize`] checks a request against: the keys, and the area of the routes it guards.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The configured keys.
    pub keys: ApiKeys,
    /// The service's area.
    pub area: Area,
}

/// Middleware: admits the request, or answers 401 or 403.
pub async fn authorize(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match guard
        .keys
        .decide(guard.area, request.method(), authorization)
    {
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
        Decision::Forbidden(name, needed) => {
            tracing::Span::current().record("api_key", name.as_str());
            let mut response = Problem::new(
                StatusCode::FORBIDDEN,
                format!("this key lacks the scope `{needed}`"),
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

    /// Secrets long enough to be accepted.
    const K1: &str = "k1-0123456789abcdefghijkl";
    const K2: &str = "k2-0123456789abcdefghijkl";
    const K3: &str = "k3-0123456789abcdefghijkl";

    fn keys(list: &str) -> ApiKeys {
        ApiKeys::parse(list.split(',')).unwrap()
    }

    fn error(list: &str) -> KeyError {
        ApiKeys::parse(list.split(',')).unwrap_err()
    }

    #[test]
    fn names_and_scopes() {
        let k = keys(&format!(
            "ops:customers:read+customers:write+transactions:read+transactions:write:{K1}, \
             dash : notifications:read + console:read : {K2},registrar:customers:write:{K3}"
        ));
        assert_eq!(
            k.describe(),
            [
                "ops:customers:read+customers:write+transactions:read+transactions:write",
                "dash:notifications:read+console:read",
                "registrar:customers:write",
            ]
        );
        assert_eq!(k.identify(K1).unwrap().name, "ops");
        let dash = k.identify(K2).unwrap();
        assert!(dash.scopes.allows(Scope::new(Area::Console, Action::Read)));
        assert!(!dash
            .scopes
            .allows(Scope::new(Area::Customers, Action::Read)));
        assert!(k.identify("k4-0123456789abcdefghijkl").is_none());
        assert!(k.identify("").is_none());
    }

    #[test]
    fn a_digest_stands_for_the_secret() {
        let digest = hex::encode(Sha256::digest(b"plain-key"));
        let k = ApiKeys::parse_file(&format!(
            "# keys of the ops team\n\nops:console:read:sha256:{digest}\n  dash:console:read:{K2}\n"
        ))
        .unwrap();
        assert_eq!(k.identify("plain-key").unwrap().name, "ops");
        assert!(k.identify(&format!("sha256:{digest}")).is_none());
        assert_eq!(k.identify(K2).unwrap().name, "dash");
    }

    #[test]
    fn bad_entries_are_refused_by_position_without_echoing_them() {
        let secret = "s3cret-0123456789abcdefghij";
        let cases = [
            (secret.to_string(), KeyError::Malformed(1)),
            (format!("a:{secret}"), KeyError::Malformed(1)),
            ("a:customers:read".to_string(), KeyError::Malformed(1)),
            (format!("a:customers:read+{secret}"), KeyError::Malformed(1)),
            (format!("a:write:{secret}"), KeyError::OldScope(1)),
            (format!("a:read:{secret}"), KeyError::OldScope(1)),
            (format!("a:admin:all:{secret}"), KeyError::UnknownScope(1)),
            (
                format!("a:notifications:write:{secret}"),
                KeyError::UnknownScope(1),
            ),
            (
                format!("a:console:read+{secret}:x:{secret}"),
                KeyError::UnknownScope(1),
            ),
            (format!(":console:read:{secret}"), KeyError::InvalidName(1)),
            (
                format!("a b:console:read:{secret}"),
                KeyError::InvalidName(1),
            ),
            ("a:console:read:".to_string(), KeyError::EmptySecret(1)),
            (
                "a:console:read: s3cret-short ".to_string(),
                KeyError::TooShort(1),
            ),
            (
                "a:console:read:sha256:12".to_string(),
                KeyError::InvalidDigest(1),
            ),
            (
                format!("a:console:read:{K1},b:console:read:s3cret-short"),
                KeyError::TooShort(2),
            ),
            (
                format!("a:console:read:{K1},a:customers:read:{K2}"),
                KeyError::DuplicateName("a".into()),
            ),
        ];
        for (list, expected) in cases {
            let refused = error(&list);
            assert_eq!(refused, expected, "{list}");
            let message = refused.to_string();
            for fragment in ["s3cret", "admin", "all", "x:", "a b"] {
                assert!(!message.contains(fragment), "{message}");
            }
        }
        assert!(keys("").is_empty());
        assert!(keys(" , ").is_empty());
    }

    #[test]
    fn the_minimum_length_counts_characters_of_the_plain_secret() {
        let just_long_enough = "x".repeat(MIN_SECRET_LEN);
        assert!(ApiKeys::parse([format!("a:console:read:{just_long_enough}").as_str()]).is_ok());
        let short = "x".repeat(MIN_SECRET_LEN - 1);
        assert_eq!(
            error(&format!("a:console:read:{short}")),
            KeyError::TooShort(1)
        );
        assert!(error(&format!("a:console:read:{short}"))
            .to_string()
            .contains("shorter than 24 characters"));
    }

    #[test]
    fn decisions_follow_area_scope_and_method() {
        let k = keys(&format!(
            "registrar:customers:write:{K1},teller:transactions:read+transactions:write:{K2}"
        ));
        let (get, post) = (Method::GET, Method::POST);
        let registrar = format!("Bearer {K1}");
        let teller = format!("bearer  {K2} ");
        let customers = Area::Customers;
        let transactions = Area::Transactions;
        assert_eq!(k.decide(customers, &get, None), Decision::Missing);
        assert_eq!(
            k.decide(customers, &get, Some("Bearer nope")),
            Decision::Unknown
        );
        assert_eq!(
            k.decide(customers, &get, Some(&format!("Basic {K1}"))),
            Decision::Missing
        );
        assert_eq!(k.decide(customers, &get, Some("Bearer")), Decision::Missing);
        assert_eq!(
            k.decide(customers, &post, Some(&registrar)),
            Decision::Allowed("registrar".into())
        );
        assert_eq!(
            k.decide(customers, &get, Some(&registrar)),
            Decision::Forbidden("registrar".into(), Scope::new(customers, Action::Read))
        );
        assert_eq!(
            k.decide(transactions, &post, Some(&registrar)),
            Decision::Forbidden("registrar".into(), Scope::new(transactions, Action::Write))
        );
        assert_eq!(
            k.decide(transactions, &post, Some(&teller)),
            Decision::Allowed("teller".into())
        );
        assert_eq!(
            k.decide(Area::Console, &get, Some(&teller)),
            Decision::Forbidden("teller".into(), Scope::new(Area::Console, Action::Read))
        );
        assert_eq!(
            ApiKeys::default().decide(transactions, &post, None),
            Decision::Open
        );
    }

    #[test]
    fn merged_lists_keep_names_distinct() {
        let merged = keys(&format!("a:console:read:{K1}"))
            .merged(keys(&format!("b:customers:write:{K2}")))
            .unwrap();
        assert_eq!(merged.describe(), ["a:console:read", "b:customers:write"]);
        assert_eq!(
            keys(&format!("a:console:read:{K1}"))
                .merged(keys(&format!("a:console:read:{K2}")))
                .unwrap_err(),
            KeyError::DuplicateName("a".into())
        );
    }
}
