//! Where a service listens: closed unless said otherwise.
//!
//! Without an API key a service answers anyone who reaches it, so it listens on loopback
//! (`127.0.0.1`) only: the laptop flow (`cargo xtask up` and its `curl` commands) works, nobody
//! else gets in. With keys it listens on all interfaces (`0.0.0.0`). `BIND_ADDRESS` chooses the
//! address; a non-loopback one without keys is refused at start-up, with one line, unless
//! `ALLOW_ANONYMOUS=true` says that anonymous access is intended.

use std::net::{IpAddr, Ipv4Addr};

use crate::foundation::env::{flag, ConfigError, Env};
use crate::guard::auth::ApiKeys;

/// The variable that chooses the address.
pub const BIND_VARIABLE: &str = "BIND_ADDRESS";
/// The variable that allows a keyless service on a non-loopback address.
pub const ANONYMOUS_VARIABLE: &str = "ALLOW_ANONYMOUS";

/// Where to listen, and why that is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind {
    /// The address (`BIND_ADDRESS`).
    pub address: IpAddr,
    /// Whether requests need no key (no key is configured).
    pub anonymous: bool,
}

impl Bind {
    /// Reads `BIND_ADDRESS` and `ALLOW_ANONYMOUS` for a service with `keys`.
    ///
    /// | keys | `ALLOW_ANONYMOUS` | `BIND_ADDRESS` unset | `BIND_ADDRESS` not loopback |
    /// |---|---|---|---|
    /// | some | any | `0.0.0.0` | allowed |
    /// | none | `false` (default) | `127.0.0.1` | refused |
    /// | none | `true` | `0.0.0.0` | allowed |
    pub fn from_env(env: &impl Env, keys: &ApiKeys) -> Result<Self, ConfigError> {
        let allow_anonymous = flag(env, ANONYMOUS_VARIABLE, false)?;
        let anonymous = keys.is_empty();
        let explicit = match env.var(BIND_VARIABLE) {
            None => None,
            Some(text) => Some(text.trim().parse::<IpAddr>().map_err(|_| {
                ConfigError::new(
                    BIND_VARIABLE,
                    format!("`{}` is not an IP address (e.g. 0.0.0.0)", text.trim()),
                )
            })?),
        };
        let open = !anonymous || allow_anonymous;
        let address = match explicit {
            Some(address) => address,
            None if open => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        if !open && !address.is_loopback() {
            return Err(ConfigError::new(
                BIND_VARIABLE,
                format!(
                    "{address} is not a loopback address and no API key is configured, so \
                     anyone who reaches it could use every endpoint: set API_KEYS or \
                     API_KEYS_FILE, or {ANONYMOUS_VARIABLE}=true if anonymous access is intended"
                ),
            ));
        }
        Ok(Self { address, anonymous })
    }

    /// One line at start-up: the keys' names and scopes, or what is open to whom.
    pub fn log(&self, keys: &ApiKeys) {
        if !self.anonymous {
            tracing::info!(keys = ?keys.describe(), "API keys configured");
        } else if self.address.is_loopback() {
            tracing::info!(address = %self.address,
                "no API keys configured (API_KEYS, API_KEYS_FILE): listening on loopback only; \
                 configure keys to listen on other interfaces");
        } else {
            tracing::warn!(address = %self.address,
                "no API keys configured and ALLOW_ANONYMOUS=true: every endpoint is open to \
                 anyone who can reach this address");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(env: &[(&str, &str); 3]) -> Result<Bind, ConfigError> {
        let keys = match env.iter().find(|(k, _)| *k == "KEYS") {
            Some((_, list)) if !list.is_empty() => ApiKeys::parse(list.split(',')).unwrap(),
            _ => ApiKeys::default(),
        };
        Bind::from_env(env, &keys)
    }

    const KEY: &str = "ops:console:read:0123456789abcdefghijklmnop";

    #[test]
    fn without_keys_loopback_only_unless_anonymous_access_is_asked_for() {
        let loopback = bind(&[("KEYS", ""), ("BIND_ADDRESS", ""), ("ALLOW_ANONYMOUS", "")]);
        assert_eq!(loopback.unwrap().address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let v6 = bind(&[
            ("KEYS", ""),
            ("BIND_ADDRESS", "::1"),
            ("ALLOW_ANONYMOUS", ""),
        ]);
        assert!(v6.unwrap().address.is_loopback());
        let refused = bind(&[
            ("KEYS", ""),
            ("BIND_ADDRESS", "0.0.0.0"),
            ("ALLOW_ANONYMOUS", "false"),
        ])
        .unwrap_err();
        assert_eq!(refused.variable, "BIND_ADDRESS");
        let line = refused.to_string();
        assert!(!line.contains('\n'));
        for named in ["0.0.0.0", "API_KEYS", "ALLOW_ANONYMOUS=true"] {
            assert!(line.contains(named), "{line}");
        }
        let asked = bind(&[
            ("KEYS", ""),
            ("BIND_ADDRESS", ""),
            ("ALLOW_ANONYMOUS", "true"),
        ]);
        let asked = asked.unwrap();
        assert_eq!(asked.address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert!(asked.anonymous);
        let lan = bind(&[
            ("KEYS", ""),
            ("BIND_ADDRESS", "10.0.0.7"),
            ("ALLOW_ANONYMOUS", "yes"),
        ]);
        assert_eq!(lan.unwrap().address.to_string(), "10.0.0.7");
    }

    #[test]
    fn with_keys_all_interfaces_or_the_chosen_one() {
        let all = bind(&[("KEYS", KEY), ("BIND_ADDRESS", ""), ("ALLOW_ANONYMOUS", "")]).unwrap();
        assert_eq!(all.address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert!(!all.anonymous);
        let local = bind(&[
            ("KEYS", KEY),
            ("BIND_ADDRESS", "127.0.0.1"),
            ("ALLOW_ANONYMOUS", ""),
        ]);
        assert!(local.unwrap().address.is_loopback());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = bind(&[
            ("KEYS", ""),
            ("BIND_ADDRESS", "localhost"),
            ("ALLOW_ANONYMOUS", ""),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "BIND_ADDRESS");
        let err = bind(&[
            ("KEYS", ""),
            ("BIND_ADDRESS", ""),
            ("ALLOW_ANONYMOUS", "sure"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "ALLOW_ANONYMOUS");
    }
}
