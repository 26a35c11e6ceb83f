//! How clients talk to the brokers: the security protocol, the SASL mechanism and credentials,
//! and the CA file to trust, each read from its variable and checked against the others.

use std::path::PathBuf;
use std::str::FromStr;

use strum::VariantNames;

use crate::foundation::env::{ConfigError, Env, Secret};

/// How clients talk to the brokers (`security.protocol`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE", ascii_case_insensitive)]
pub enum SecurityProtocol {
    /// No TLS, no authentication: a local broker.
    Plaintext,
    /// TLS without SASL.
    Ssl,
    /// SASL without TLS (test set-ups only).
    SaslPlaintext,
    /// SASL over TLS: IBM Event Streams.
    SaslSsl,
}

impl SecurityProtocol {
    /// The librdkafka name.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    pub(super) fn uses_sasl(&self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub(super) fn uses_tls(&self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// The SASL mechanism (`sasl.mechanism`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr, strum::VariantNames,
)]
#[strum(ascii_case_insensitive)]
pub enum SaslMechanism {
    /// PLAIN: Event Streams (user `token`, password = API key).
    #[strum(serialize = "PLAIN")]
    Plain,
    /// SCRAM-SHA-256.
    #[strum(serialize = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[strum(serialize = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka name.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// The value of `variable`, one of `T`'s names (trimmed, in any case), else `default`; any
/// other value is an error naming the variable and every accepted value.
pub(super) fn one_of<T: FromStr + VariantNames>(
    env: &impl Env,
    variable: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    let Some(value) = env.var(variable) else {
        return Ok(default);
    };
    value.trim().parse().map_err(|_| {
        ConfigError::new(
            variable,
            format!(
                "`{}` is not one of {}",
                value.trim().to_ascii_uppercase(),
                T::VARIANTS.join(", ")
            ),
        )
    })
}

/// SASL credentials; the password is a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// User name (`token` on Event Streams).
    pub username: String,
    /// Password (an API key on Event Streams).
    pub password: Secret,
}

/// `EVENT_STREAMS_USER` and `EVENT_STREAMS_PASSWORD`: both or neither.
pub(super) fn credentials(env: &impl Env) -> Result<Option<(String, Secret)>, ConfigError> {
    match (
        env.var("EVENT_STREAMS_USER"),
        env.var("EVENT_STREAMS_PASSWORD"),
    ) {
        (Some(user), Some(password)) => Ok(Some((user.trim().to_string(), Secret::new(password)))),
        (Some(_), None) => Err(ConfigError::new(
            "EVENT_STREAMS_PASSWORD",
            "is required when EVENT_STREAMS_USER is set",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "EVENT_STREAMS_USER",
            "is required when EVENT_STREAMS_PASSWORD is set",
        )),
        (None, None) => Ok(None),
    }
}

/// The SASL settings: credentials exactly when `protocol` uses SASL.
pub(super) fn sasl(
    protocol: SecurityProtocol,
    mechanism: SaslMechanism,
    credentials: Option<(String, Secret)>,
) -> Result<Option<SaslCredentials>, ConfigError> {
    match (protocol.uses_sasl(), credentials) {
        (true, Some((username, password))) => Ok(Some(SaslCredentials {
            mechanism,
            username,
            password,
        })),
        (true, None) => Err(ConfigError::new(
            "EVENT_STREAMS_USER",
            format!(
                "SASL credentials are required with KAFKA_SECURITY_PROTOCOL={}",
                protocol.as_str()
            ),
        )),
        (false, Some(_)) => Err(ConfigError::new(
            "KAFKA_SECURITY_PROTOCOL",
            format!(
                "{} does not use SASL, but EVENT_STREAMS_USER/EVENT_STREAMS_PASSWORD are set",
                protocol.as_str()
            ),
        )),
        (false, None) => Ok(None),
    }
}

/// `KAFKA_SSL_CA_LOCATION`: a readable file, and only with a protocol that uses TLS.
pub(super) fn ssl_ca_location(
    env: &impl Env,
    protocol: SecurityProtocol,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(path) = env.var("KAFKA_SSL_CA_LOCATION") else {
        return Ok(None);
    };
    let path = PathBuf::from(path.trim());
    if !path.is_file() {
        return Err(ConfigError::new(
            "KAFKA_SSL_CA_LOCATION",
            format!("{} is not a readable file", path.display()),
        ));
    }
    if !protocol.uses_tls() {
        return Err(ConfigError::new(
            "KAFKA_SSL_CA_LOCATION",
            format!("is set but {} does not use TLS", protocol.as_str()),
        ));
    }
    Ok(Some(path))
}
