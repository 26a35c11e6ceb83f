//! What the stack runs: the services in start order, and the command that starts one of them
//! (with the API key the console reads the others with).

use std::io::IsTerminal;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Result};

use super::state::Setup;
use crate::paths;

/// A service of the stack.
#[derive(Clone, Copy, Debug)]
pub struct Service {
    /// Cargo package and binary name.
    pub name: &'static str,
    /// HTTP port when `EMS_STACK_PORT` is unset.
    pub default_port: u16,
}

/// The variable that moves the stack's ports: the first service's port, the others after it.
pub const PORT_VARIABLE: &str = "EMS_STACK_PORT";

/// The first service's port as `EMS_STACK_PORT` sets it (1024-65531), else its default;
/// [`check_port_setting`] refuses any other value before a command uses it.
fn base_port() -> Option<u16> {
    let value = std::env::var(PORT_VARIABLE).ok()?;
    value
        .trim()
        .parse()
        .ok()
        .filter(|port| (1024..=u16::MAX - 4).contains(port))
}

/// Fails with one line when `EMS_STACK_PORT` is set to something that is not a port the four
/// services fit above.
pub fn check_port_setting() -> Result<()> {
    match std::env::var(PORT_VARIABLE) {
        Ok(value) if base_port().is_none() => {
            bail!("{PORT_VARIABLE}={value:?} is not a port from 1024 to 65531")
        }
        _ => Ok(()),
    }
}

impl Service {
    /// Its HTTP port: the default, or as far from `EMS_STACK_PORT` as the default is from the
    /// first service's.
    pub fn port(self) -> u16 {
        match base_port() {
            Some(base) => base + (self.default_port - SERVICES[0].default_port),
            None => self.default_port,
        }
    }

    /// Its base URL on this machine.
    pub fn url(self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }
}

/// The three services, then the read-only console (it reads their topics and APIs), in start
/// order.
pub const SERVICES: [Service; 4] = [
    Service {
        name: "customer-service",
        default_port: 3001,
    },
    Service {
        name: "transaction-service",
        default_port: 3002,
    },
    Service {
        name: "notification-service",
        default_port: 3003,
    },
    Service {
        name: "console",
        default_port: 3004,
    },
];

/// The scopes the console needs of the services it reads (`CONSOLE_API_KEY`).
pub const CONSOLE_SCOPES: [&str; 3] = ["customers:read", "transactions:read", "notifications:read"];

/// The secret of the first key of `API_KEYS` that has every one of `scopes`.
pub fn api_key_with(scopes: &[&str]) -> Option<String> {
    let list = std::env::var("API_KEYS").ok()?;
    keys_of(&list)
        .into_iter()
        .find(|(has, _)| scopes.iter().all(|s| has.iter().any(|h| h == s)))
        .map(|(_, secret)| secret)
}

/// The scopes and secrets of a key list (`name:scope+scope:secret`, as the services read it);
/// entries the services would refuse are left out.
fn keys_of(list: &str) -> Vec<(Vec<String>, String)> {
    list.split(',').filter_map(key_of).collect()
}

/// The scopes and secret of one entry: after the name, `area:action` pairs joined by `+`, then
/// `:` and the secret.
fn key_of(entry: &str) -> Option<(Vec<String>, String)> {
    let (_name, mut rest) = entry.trim().split_once(':')?;
    let mut scopes = Vec::new();
    loop {
        let (area, after) = rest.split_once(':')?;
        let end = after.find([':', '+'])?;
        scopes.push(format!("{}:{}", area.trim(), after[..end].trim()));
        rest = &after[end + 1..];
        if after[end..].starts_with(':') {
            return Some((scopes, rest.trim().to_string()));
        }
    }
}

/// The command that runs one service with the embedded defaults.
pub(super) fn service_command(
    bin_dir: &Path,
    setup: &Setup,
    brokers: &str,
    s: Service,
) -> Result<Command> {
    let data = setup.data.as_path();
    let exe = bin_dir.join(s.name);
    if !exe.is_file() {
        bail!("{} was not built ({} is missing)", s.name, exe.display());
    }
    let mut cmd = Command::new(exe);
    let db = if data == paths::repo_root().join("data") {
        format!("sqlite://data/{}.db", s.name)
    } else {
        format!("sqlite://{}/{}.db", data.display(), s.name)
    };
    if !std::io::stdout().is_terminal() {
        cmd.env("NO_COLOR", "1");
    }
    if s.name == "console" {
        // The console reads the three where this stack runs them.
        let [customers, transactions, notifications, _] = SERVICES;
        cmd.env("CUSTOMER_SERVICE_URL", customers.url())
            .env("TRANSACTION_SERVICE_URL", transactions.url())
            .env("NOTIFICATION_SERVICE_URL", notifications.url());
    }
    if s.name == "console" && std::env::var_os("CONSOLE_API_KEY").is_none() {
        // The console reads the services with a key of `API_KEYS` that may read all three.
        if let Some(key) = api_key_with(&CONSOLE_SCOPES) {
            cmd.env("CONSOLE_API_KEY", key);
        }
    }
    if std::env::var_os("MAIL_DIR").is_none() {
        // The file mailbox lives with the rest of the stack's data.
        cmd.env("MAIL_DIR", data.join("mail"));
    }
    cmd.current_dir(paths::repo_root())
        .env("PORT", s.port().to_string())
        .env("KAFKA_BROKERS", brokers)
        .env("DATABASE_URL", db)
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lists_give_scopes_and_secrets() {
        let scopes = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            keys_of("ops:customers:write + transactions:write:k1:x, dash:console:read:k2,bare"),
            [
                (
                    scopes(&["customers:write", "transactions:write"]),
                    "k1:x".to_string()
                ),
                (scopes(&["console:read"]), "k2".to_string()),
            ]
        );
        assert!(keys_of(" , ").is_empty());
    }
}
