//! The console's own settings (beyond the platform's): where the services' public APIs are, and
//! how many events the recent window keeps.

use platform::config::{positive, Env, Secret};
use platform::ConfigError;

/// Events the window keeps when `CONSOLE_WINDOW` is unset.
pub const DEFAULT_WINDOW: usize = 1_000;
/// Largest accepted `CONSOLE_WINDOW` (the window is kept in memory).
pub const MAX_WINDOW: usize = 20_000;

/// Where the console reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// customer-service base URL (`CUSTOMER_SERVICE_URL`, default `http://127.0.0.1:3001`).
    pub customer_service: String,
    /// transaction-service base URL (`TRANSACTION_SERVICE_URL`, default `http://127.0.0.1:3002`).
    pub transaction_service: String,
    /// notification-service base URL (`NOTIFICATION_SERVICE_URL`, default `http://127.0.0.1:3003`).
    pub notification_service: String,
    /// Most recent events kept (`CONSOLE_WINDOW`, default 1,000).
    pub window: usize,
    /// The (read) key the console presents to the services when they require keys
    /// (`CONSOLE_API_KEY`).
    pub api_key: Option<Secret>,
}

impl Settings {
    /// Reads the settings from `env`, for a console listening on `bind`: the services' URLs
    /// default to this machine only while it listens on loopback (local development); beyond
    /// it, each must be set (a deploy that lost one fails at start, not silently blind).
    pub fn from_env_for(env: &impl Env, bind: std::net::IpAddr) -> Result<Self, ConfigError> {
        if !bind.is_loopback() {
            for variable in UPSTREAMS {
                if env.var(variable).is_none() {
                    return Err(ConfigError::new(
                        variable,
                        format!(
                            "must be set: the console listens on {bind}, and the default \
                             (http://127.0.0.1:…) only works on a developer's machine"
                        ),
                    ));
                }
            }
        }
        Self::from_env(env)
    }

    /// Reads the settings from `env` (the services' URLs default to this machine).
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let window = positive(env, "CONSOLE_WINDOW", DEFAULT_WINDOW)?;
        if window > MAX_WINDOW {
            return Err(ConfigError::new(
                "CONSOLE_WINDOW",
                format!("at most {MAX_WINDOW} events are kept"),
            ));
        }
        Ok(Self {
            customer_service: url(env, "CUSTOMER_SERVICE_URL", 3001)?,
            transaction_service: url(env, "TRANSACTION_SERVICE_URL", 3002)?,
            notification_service: url(env, "NOTIFICATION_SERVICE_URL", 3003)?,
            window,
            api_key: env.var("CONSOLE_API_KEY").map(|k| Secret::new(k.trim())),
        })
    }
}

/// The variables naming the services the console reads.
const UPSTREAMS: [&str; 3] = [
    "CUSTOMER_SERVICE_URL",
    "TRANSACTION_SERVICE_URL",
    "NOTIFICATION_SERVICE_URL",
];

fn url(env: &impl Env, variable: &'static str, port: u16) -> Result<String, ConfigError> {
    let Some(text) = env.var(variable) else {
        return Ok(format!("http://127.0.0.1:{port}"));
    };
    let text = text.trim().trim_end_matches('/').to_string();
    let lower = text.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(ConfigError::new(
            variable,
            "must be an http:// or https:// URL",
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_local_stack() {
        let settings = Settings::from_env(&[("X", "")]).unwrap();
        assert_eq!(settings.customer_service, "http://127.0.0.1:3001");
        assert_eq!(settings.transaction_service, "http://127.0.0.1:3002");
        assert_eq!(settings.notification_service, "http://127.0.0.1:3003");
        assert_eq!(settings.window, DEFAULT_WINDOW);
    }

    #[test]
    fn urls_are_trimmed_and_checked() {
        let env = [
            ("CUSTOMER_SERVICE_URL", " https://customers.example/ "),
            ("CONSOLE_WINDOW", "50"),
        ];
        let settings = Settings::from_env(&env).unwrap();
        assert_eq!(settings.customer_service, "https://customers.example");
        assert_eq!(settings.window, 50);
        let err = Settings::from_env(&[("TRANSACTION_SERVICE_URL", "localhost:3002")]).unwrap_err();
        assert_eq!(err.variable, "TRANSACTION_SERVICE_URL");
        let err = Settings::from_env(&[("CONSOLE_WINDOW", "1000000")]).unwrap_err();
        assert_eq!(err.variable, "CONSOLE_WINDOW");
    }

    #[test]
    fn beyond_loopback_every_service_url_must_be_set() {
        let local = std::net::IpAddr::from([127, 0, 0, 1]);
        let everywhere = std::net::IpAddr::from([0, 0, 0, 0]);
        assert!(Settings::from_env_for(&[("X", "")], local).is_ok());
        let some = [
            ("CUSTOMER_SERVICE_URL", "http://customer-service"),
            ("TRANSACTION_SERVICE_URL", "http://transaction-service"),
            ("NOTIFICATION_SERVICE_URL", " "),
        ];
        let err = Settings::from_env_for(&some, everywhere).unwrap_err();
        assert_eq!(err.variable, "NOTIFICATION_SERVICE_URL");
        let all = [
            ("CUSTOMER_SERVICE_URL", "http://customer-service"),
            ("TRANSACTION_SERVICE_URL", "http://transaction-service"),
            ("NOTIFICATION_SERVICE_URL", "http://notification-service"),
        ];
        assert!(Settings::from_env_for(&all, everywhere).is_ok());
    }
}
