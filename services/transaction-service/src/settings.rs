//! The ledger's configuration knobs, read once at start-up.

use std::num::NonZeroU64;
use std::time::Duration;

use contracts::money::format_minor;
use contracts::{Currency, Money};
use platform::config::{ConfigError, Env};

/// How the ledger opens accounts and waits for accounts it does not know yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSettings {
    /// Currency of every new account (`ACCOUNT_CURRENCY`, default `USD`).
    pub account_currency: Currency,
    /// Balance of a new account in minor units (`OPENING_BALANCE`, a decimal, default 0).
    pub opening_balance: i64,
    /// How long after `requestedAt` a request naming an unknown account is retried before it
    /// fails with `unknown_account` (`UNKNOWN_ACCOUNT_GRACE_SECS`, default 10).
    pub unknown_account_grace: Duration,
    /// Largest amount a request over HTTP may carry, in minor units (`MAX_AMOUNT_MINOR`, default
    /// [`DEFAULT_MAX_AMOUNT_MINOR`]).
    pub max_amount_minor: i64,
    /// Accepted requests that may wait to be applied before `POST /transactions` refuses new ones
    /// with a 503 (`MAX_APPLY_BACKLOG`, default [`DEFAULT_MAX_APPLY_BACKLOG`]; `0` or `off`:
    /// `None`, never refused). See [`crate::backpressure`].
    pub max_apply_backlog: Option<NonZeroU64>,
}

/// Accepted requests that may wait to be applied when `MAX_APPLY_BACKLOG` is unset: some
/// seconds of the consumer's work (it applies some hundreds to thousands a second, depending on
/// the database), not minutes.
pub const DEFAULT_MAX_APPLY_BACKLOG: NonZeroU64 = match NonZeroU64::new(5_000) {
    Some(n) => n,
    None => NonZeroU64::MIN,
};

/// Largest amount of a request when `MAX_AMOUNT_MINOR` is unset: 100 000 000 000 minor units
/// (1 000 000 000.00 in a currency with two decimals).
pub const DEFAULT_MAX_AMOUNT_MINOR: i64 = 100_000_000_000;

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            account_currency: Currency::USD,
            opening_balance: 0,
            unknown_account_grace: Duration::from_secs(10),
            max_amount_minor: DEFAULT_MAX_AMOUNT_MINOR,
            max_apply_backlog: Some(DEFAULT_MAX_APPLY_BACKLOG),
        }
    }
}

impl LedgerSettings {
    /// Reads `ACCOUNT_CURRENCY`, `OPENING_BALANCE`, `UNKNOWN_ACCOUNT_GRACE_SECS`,
    /// `MAX_AMOUNT_MINOR` and `MAX_APPLY_BACKLOG`.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let account_currency = match env.var("ACCOUNT_CURRENCY") {
            Some(code) => currency(&code)?,
            None => defaults.account_currency,
        };
        let opening_balance = match env.var("OPENING_BALANCE") {
            Some(text) => opening_balance(&text, account_currency)?,
            None => defaults.opening_balance,
        };
        let unknown_account_grace = match env.var("UNKNOWN_ACCOUNT_GRACE_SECS") {
            Some(text) => grace(&text)?,
            None => defaults.unknown_account_grace,
        };
        let max_amount_minor = match env.var("MAX_AMOUNT_MINOR") {
            Some(text) => max_amount_minor(&text)?,
            None => defaults.max_amount_minor,
        };
        let max_apply_backlog = match env.var("MAX_APPLY_BACKLOG") {
            Some(text) => max_apply_backlog(&text)?,
            None => defaults.max_apply_backlog,
        };
        Ok(Self {
            account_currency,
            opening_balance,
            unknown_account_grace,
            max_amount_minor,
            max_apply_backlog,
        })
    }

    /// The opening balance as a decimal string, e.g. `"0.00"`.
    pub fn opening_balance_text(&self) -> String {
        format_minor(self.opening_balance, self.account_currency.decimals())
    }
}

/// `ACCOUNT_CURRENCY`: a three-letter ISO 4217 code.
fn currency(code: &str) -> Result<Currency, ConfigError> {
    code.parse::<Currency>().map_err(|_| {
        ConfigError::new(
            "ACCOUNT_CURRENCY",
            format!("`{code}` is not a three-letter ISO 4217 code"),
        )
    })
}

/// `OPENING_BALANCE`: a decimal in `currency`, not negative; in minor units.
fn opening_balance(text: &str, currency: Currency) -> Result<i64, ConfigError> {
    let money = Money::parse(text, currency)
        .map_err(|e| ConfigError::new("OPENING_BALANCE", e.to_string()))?;
    if money.minor_units() < 0 {
        return Err(ConfigError::new(
            "OPENING_BALANCE",
            format!("`{text}` is negative; balances never go below zero"),
        ));
    }
    Ok(money.minor_units())
}

/// `UNKNOWN_ACCOUNT_GRACE_SECS`: whole seconds.
fn grace(text: &str) -> Result<Duration, ConfigError> {
    text.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| {
            ConfigError::new(
                "UNKNOWN_ACCOUNT_GRACE_SECS",
                format!("`{text}` is not a whole number of seconds"),
            )
        })
}

/// `MAX_AMOUNT_MINOR`: a whole number of minor units greater than zero.
fn max_amount_minor(text: &str) -> Result<i64, ConfigError> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ConfigError::new(
                "MAX_AMOUNT_MINOR",
                format!("`{text}` is not a whole number of minor units greater than zero"),
            )
        })
}

/// `MAX_APPLY_BACKLOG`: a whole number of requests; `0` or `off` turns the bound off.
fn max_apply_backlog(text: &str) -> Result<Option<NonZeroU64>, ConfigError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    text.parse::<u64>().map(NonZeroU64::new).map_err(|_| {
        ConfigError::new(
            "MAX_APPLY_BACKLOG",
            format!(
                "`{text}` is not a whole number of requests (accepted requests that may wait to \
                 be applied; 0 or `off` turns the bound off)"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_environment() {
        let settings = LedgerSettings::from_env(&[("X", "")]).unwrap();
        assert_eq!(settings, LedgerSettings::default());
        assert_eq!(settings.opening_balance_text(), "0.00");
    }

    #[test]
    fn reads_currency_balance_and_grace() {
        let env = [
            ("ACCOUNT_CURRENCY", "eur"),
            ("OPENING_BALANCE", "250.5"),
            ("UNKNOWN_ACCOUNT_GRACE_SECS", "3"),
            ("MAX_AMOUNT_MINOR", "5000"),
            ("MAX_APPLY_BACKLOG", " 250 "),
        ];
        let settings = LedgerSettings::from_env(&env).unwrap();
        assert_eq!(settings.max_apply_backlog, NonZeroU64::new(250));
        assert_eq!(settings.account_currency.code(), "EUR");
        assert_eq!(settings.opening_balance, 25_050);
        assert_eq!(settings.unknown_account_grace, Duration::from_secs(3));
        assert_eq!(settings.max_amount_minor, 5_000);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (variable, value) in [
            ("ACCOUNT_CURRENCY", "EURO"),
            ("OPENING_BALANCE", "ten"),
            ("OPENING_BALANCE", "-1"),
            ("OPENING_BALANCE", "1.001"),
            ("UNKNOWN_ACCOUNT_GRACE_SECS", "1.5"),
            ("MAX_AMOUNT_MINOR", "0"),
            ("MAX_AMOUNT_MINOR", "1.5"),
            ("MAX_APPLY_BACKLOG", "-1"),
            ("MAX_APPLY_BACKLOG", "lots"),
            ("MAX_APPLY_BACKLOG", "1e4"),
        ] {
            let err = LedgerSettings::from_env(&[(variable, value)]).unwrap_err();
            assert_eq!(err.variable, variable, "{value}");
        }
        let err =
            LedgerSettings::from_env(&[("ACCOUNT_CURRENCY", "JPY"), ("OPENING_BALANCE", "1.5")])
                .unwrap_err();
        assert_eq!(err.variable, "OPENING_BALANCE");
    }

    #[test]
    fn the_apply_backlog_bound_can_be_turned_off() {
        for off in ["0", "off", "OFF"] {
            let settings = LedgerSettings::from_env(&[("MAX_APPLY_BACKLOG", off)]).unwrap();
            assert_eq!(settings.max_apply_backlog, None, "{off}");
        }
    }
}
