//! Money as integer minor units. Never a float: amounts travel as decimal strings ("100.00") and
//! are parsed digit by digit against the currency's number of decimals.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an amount or currency was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a decimal number (`"12.5"`, `"100"`).
    #[error("amount `{0}` is not a decimal number")]
    NotANumber(String),
    /// More fraction digits than the currency allows.
    #[error("amount `{amount}` has more than {decimals} decimal places for {currency}")]
    TooManyDecimals {
        /// The amount as given.
        amount: String,
        /// The currency's number of decimals.
        decimals: u8,
        /// The currency the amount was read in.
        currency: Currency,
    },
    /// Zero or negative where a positive amount is required.
    #[error("amount must be greater than zero")]
    NotPositive,
    /// Does not fit in 64-bit minor units.
    #[error("amount `{0}` is too large")]
    TooLarge(String),
    /// Not a three-letter ISO 4217 code.
    #[error("currency `{0}` is not a three-letter ISO 4217 code")]
    InvalidCurrency(String),
}

/// An ISO 4217 currency code (three upper-case letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// The default currency when a request names none.
    pub const USD: Currency = Currency(*b"USD");

    /// The code, e.g. `"EUR"`.
    pub fn code(&self) -> &str {
        // The bytes are validated ASCII letters on construction.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Number of decimal places of the currency's minor unit.
    pub fn decimals(&self) -> u8 {
        match &self.0 {
            b"BIF" | b"CLP" | b"DJF" | b"GNF" | b"ISK" | b"JPY" | b"KMF" | b"KRW" | b"PYG"
            | b"RWF" | b"UGX" | b"UYI" | b"VND" | b"VUV" | b"XAF" | b"XOF" | b"XPF" => 0,
            b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
            _ => 2,
        }
    }
}

impl Default for Currency {
    fn default() -> Self {
        Currency::USD
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.trim().as_bytes();
        match bytes {
            [a, b, c] if bytes.iter().all(u8::is_ascii_alphabetic) => Ok(Currency([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
                c.to_ascii_uppercase(),
            ])),
            _ => Err(MoneyError::InvalidCurrency(s.to_string())),
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.code().to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl schemars::JsonSchema for Currency {
    fn schema_name() -> String {
        "Currency".to_string()
    }
    fn json_schema(gen: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        let mut schema = String::json_schema(gen).into_object();
        schema.string().pattern = Some("^[A-Z]{3}$".to_string());
        schema.into()
    }
}

/// An amount of money in integer minor units of a currency (cents for USD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor_units: i64,
    currency: Currency,
}

impl Money {
    /// Money from minor units.
    pub fn from_minor(minor_units: i64, currency: Currency) -> Self {
        Self {
            minor_units,
            currency,
        }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self::from_minor(0, currency)
    }

    /// Parses a decimal string (`"100"`, `"100.5"`, `"100.50"`) with at most the currency's decimals.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let minor_units = parse_decimal(text, currency)?;
        Ok(Self::from_minor(minor_units, currency))
    }

    /// Like [`Money::parse`], and the amount must be greater than zero.
    pub fn parse_positive(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let money = Self::parse(text, currency)?;
        if money.minor_units <= 0 {
            return Err(MoneyError::NotPositive);
        }
        Ok(money)
    }

    /// The amount in minor units.
    pub fn minor_units(&self) -> i64 {
        self.minor_units
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The decimal string of the amount, e.g. `"100.00"` (no currency code).
    pub fn to_decimal_string(&self) -> String {
        format_minor(self.minor_units, self.currency.decimals())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

/// Formats minor units with `decimals` fraction digits: `(12345, 2)` -> `"123.45"`.
pub fn format_minor(minor_units: i64, decimals: u8) -> String {
    let sign = if minor_units < 0 { "-" } else { "" };
    let abs = minor_units.unsigned_abs();
    if decimals == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u64.pow(u32::from(decimals));
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = usize::from(decimals)
    )
}

fn parse_decimal(text: &str, currency: Currency) -> Result<i64, MoneyError> {
    let decimals = currency.decimals();
    let trimmed = text.trim();
    let not_a_number = || MoneyError::NotANumber(text.to_string());
    let too_large = || MoneyError::TooLarge(text.to_string());
    let (negative, unsigned) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || unsigned.ends_with('.') {
        return Err(not_a_number());
    }
    // Trailing zeros beyond the currency's decimals are harmless ("1.500" is 1.50 USD).
    let significant = fraction.trim_end_matches('0');
    if significant.len() > usize::from(decimals) {
        return Err(MoneyError::TooManyDecimals {
            amount: text.to_string(),
            decimals,
            currency,
        });
    }
    let scale = 10i64.pow(u32::from(decimals));
    let whole: i64 = whole.parse().map_err(|_| too_large())?;
    let padded = format!("{significant:0<width$}", width = usize::from(decimals));
    let fraction: i64 = if padded.is_empty() {
        0
    } else {
        padded.parse().map_err(|_| not_a_number())?
    };
    let value = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(too_large)?;
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(text: &str) -> Result<i64, MoneyError> {
        Money::parse(text, Currency::USD).map(|m| m.minor_units())
    }

    #[test]
    fn parses_whole_and_fractional_amounts() {
        assert_eq!(usd("100"), Ok(10_000));
        assert_eq!(usd("100.5"), Ok(10_050));
        assert_eq!(usd("100.50"), Ok(10_050));
        assert_eq!(usd("0.01"), Ok(1));
        assert_eq!(usd("1.500"), Ok(150));
        assert_eq!(usd("-2.25"), Ok(-225));
    }

    #[test]
    fn rejects_malformed_amounts() {
        for bad in ["", "abc", "1.2.3", ".5", "5.", "1e3", "1,00", " ", "--1"] {
            assert!(
                matches!(usd(bad), Err(MoneyError::NotANumber(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            usd("1.001"),
            Err(MoneyError::TooManyDecimals { decimals: 2, .. })
        ));
        assert!(matches!(
            usd("99999999999999999999"),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn respects_currency_decimals() {
        let jpy: Currency = "JPY".parse().unwrap();
        assert_eq!(Money::parse("500", jpy).unwrap().minor_units(), 500);
        assert!(Money::parse("500.5", jpy).is_err());
        let kwd: Currency = "kwd".parse().unwrap();
        assert_eq!(kwd.code(), "KWD");
        assert_eq!(
            Money::parse("1.234", kwd).unwrap().to_decimal_string(),
            "1.234"
        );
    }

    #[test]
    fn positive_amounts_only_where_required() {
        assert_eq!(
            Money::parse_positive("0", Currency::USD),
            Err(MoneyError::NotPositive)
        );
        assert_eq!(
            Money::parse_positive("-1", Currency::USD),
            Err(MoneyError::NotPositive)
        );
    }

    #[test]
    fn formats_minor_units() {
        assert_eq!(format_minor(10_000, 2), "100.00");
        assert_eq!(format_minor(5, 2), "0.05");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(7, 0), "7");
        assert_eq!(
            Money::from_minor(1234, Currency::USD).to_string(),
            "12.34 USD"
        );
    }

    #[test]
    fn currency_codes_are_validated() {
        assert!("US".parse::<Currency>().is_err());
        assert!("U5D".parse::<Currency>().is_err());
        assert_eq!(serde_json::to_string(&Currency::USD).unwrap(), "\"USD\"");
        assert!(serde_json::from_str::<Currency>("\"EURO\"").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn currency() -> impl Strategy<Value = Currency> {
        prop::sample::select(vec!["USD", "JPY", "KWD", "EUR", "CLP", "BHD"])
            .prop_map(|code| code.parse().expect("valid code"))
    }

    proptest! {
        /// Formatting then parsing gives the same minor units, in every currency.
        #[test]
        fn format_then_parse_round_trips(minor in any::<i64>().prop_filter("i64::MIN has no positive twin", |m| *m != i64::MIN), currency in currency()) {
            let text = format_minor(minor, currency.decimals());
            prop_assert_eq!(Money::parse(&text, currency).map(|m| m.minor_units()), Ok(minor));
            prop_assert_eq!(Money::from_minor(minor, currency).to_decimal_string(), text);
        }

        /// Parsing then formatting gives the canonical text: the digits, padded to the currency's
        /// decimals; trailing zeros past them are harmless.
        #[test]
        fn parse_then_format_is_canonical(whole in 0u64..1_000_000_000_000, fraction in "[0-9]{0,2}", zeros in "0{0,3}") {
            let text = if fraction.is_empty() && zeros.is_empty() {
                whole.to_string()
            } else {
                format!("{whole}.{fraction}{zeros}")
            };
            let money = Money::parse(&text, Currency::USD).expect("a USD amount");
            let expected = format!("{whole}.{fraction:0<2}");
            prop_assert_eq!(money.to_decimal_string(), expected);
        }

        /// Anything that is not `[+-]digits[.digits]` is refused as not a number, never accepted
        /// and never a panic.
        #[test]
        fn malformed_text_is_refused(text in "\\PC{0,24}") {
            let plain = regex_lite_is_decimal(text.trim());
            let parsed = Money::parse(&text, Currency::USD);
            if !plain {
                prop_assert!(matches!(parsed, Err(MoneyError::NotANumber(_))), "{:?} -> {:?}", text, parsed);
            }
        }

        /// Exponents, separators and stray characters around valid digits are refused.
        #[test]
        fn decorated_numbers_are_refused(whole in 1u32..1_000_000, decoration in prop::sample::select(vec!["e2", "E-1", ",00", "_0", "..5", "x", " 1x"]) ) {
            let text = format!("{whole}{decoration}");
            prop_assert!(matches!(Money::parse(&text, Currency::USD), Err(MoneyError::NotANumber(_))), "{}", text);
        }

        /// More significant decimals than the currency has are refused, whatever the digits.
        #[test]
        fn extra_decimals_are_refused(whole in 0u32..1_000_000, fraction in "[0-9]{0,2}[1-9]", currency in currency()) {
            let text = format!("{whole}.{:0>width$}", fraction, width = usize::from(currency.decimals()) + 1);
            let parsed = Money::parse(&text, currency);
            prop_assert!(matches!(parsed, Err(MoneyError::TooManyDecimals { .. })), "{} {} -> {:?}", text, currency, parsed);
        }
    }

    /// `[+-]?[0-9]+(\.[0-9]+)?`, written out (the crate needs no regex engine).
    fn regex_lite_is_decimal(text: &str) -> bool {
        let unsigned = text
            .strip_prefix('-')
            .or_else(|| text.strip_prefix('+'))
            .unwrap_or(text);
        let (whole, fraction) = match unsigned.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (unsigned, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(whole) && fraction.is_none_or(digits)
    }
}
