//! The consumer group protocol (`KAFKA_GROUP_PROTOCOL`): the classic one every Kafka serves, or
//! KIP-848's, which keeps a member's assignment through a coordinator move (a broker fault).

use crate::foundation::env::{ConfigError, Env};

use super::security::one_of;

/// The consumer group protocol (`group.protocol`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[strum(ascii_case_insensitive)]
pub enum GroupProtocol {
    /// Join and sync rounds with a client-side session timeout (10 s here): served by every
    /// broker, Event Streams included. A member that loses its coordinator for longer than the
    /// session (a broker fault) gives up its partitions and joins again.
    #[default]
    #[strum(serialize = "classic")]
    Classic,
    /// KIP-848 (Kafka 4.0 and later): the broker assigns partitions and owns the session
    /// (`group.consumer.session.timeout.ms`, 45 s by default), so a member keeps its assignment
    /// while its coordinator moves; a member that dies unannounced is noticed only after that
    /// session.
    #[strum(serialize = "consumer")]
    Consumer,
}

impl GroupProtocol {
    /// The librdkafka name.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// `KAFKA_GROUP_PROTOCOL`: `classic` (the default) or `consumer`.
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        one_of(env, "KAFKA_GROUP_PROTOCOL", Self::default())
    }
}
