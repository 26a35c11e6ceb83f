//! The CloudEvents 1.0 binary-mode envelope: event attributes travel as Kafka headers, the payload
//! is the record value.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{de::DeserializeOwned, Serialize};

use strum::IntoEnumIterator;

use crate::topics;

/// Header names of the CloudEvents Kafka binding and W3C trace context.
pub mod headers {
    /// CloudEvents spec version, always `1.0`.
    pub const SPEC_VERSION: &str = "ce_specversion";
    /// Unique event id.
    pub const ID: &str = "ce_id";
    /// Event type, e.g. `customer.created.v1`.
    pub const TYPE: &str = "ce_type";
    /// Producer of the event, e.g. `/customer-service`.
    pub const SOURCE: &str = "ce_source";
    /// RFC 3339 time of the event.
    pub const TIME: &str = "ce_time";
    /// Payload media type.
    pub const CONTENT_TYPE: &str = "content-type";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// Dead letters: why the record could not be processed.
    pub const DLT_ERROR: &str = "dlt_error";
    /// Dead letters: topic the record came from.
    pub const DLT_ORIGINAL_TOPIC: &str = "dlt_original_topic";
    /// Dead letters: partition the record came from.
    pub const DLT_ORIGINAL_PARTITION: &str = "dlt_original_partition";
    /// Dead letters: offset the record came from.
    pub const DLT_ORIGINAL_OFFSET: &str = "dlt_original_offset";
    /// Dead letters: the consumer group that gave up on the record.
    pub const DLT_CONSUMER_GROUP: &str = "dlt_consumer_group";
    /// Dead letters: size in bytes of the original payload.
    pub const DLT_ORIGINAL_SIZE: &str = "dlt_original_size";
    /// Dead letters: SHA-256 (hex) of the original payload.
    pub const DLT_PAYLOAD_SHA256: &str = "dlt_payload_sha256";
    /// Dead letters: `true` when the payload was cut to fit the dead-letter topic.
    pub const DLT_TRUNCATED: &str = "dlt_truncated";
}

/// Longest event id (`ce_id`) a consumer accepts, in bytes. This system's ids are UUIDs (36);
/// the id is part of the inbox's key, so a longer one (a hostile or broken producer) is a
/// permanent failure that goes to the dead-letter topic rather than a key that the database
/// refuses again and again.
pub const MAX_ID_BYTES: usize = 128;

/// CloudEvents spec version written by this system.
pub const SPEC_VERSION: &str = "1.0";
/// Media type of every payload.
pub const CONTENT_TYPE: &str = "application/json";

/// The event types (name and schema version) this system understands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
)]
pub enum EventType {
    /// `customer.created.v1` on `Customer.created`.
    #[strum(serialize = "customer.created.v1")]
    CustomerCreated,
    /// `transaction.requested.v1` on `transaction.requested`.
    #[strum(serialize = "transaction.requested.v1")]
    TransactionRequested,
    /// `transaction.processed.v1` on `transaction.processed`.
    #[strum(serialize = "transaction.processed.v1")]
    TransactionProcessed,
    /// `transaction.failed.v1` on `transaction.failed`.
    #[strum(serialize = "transaction.failed.v1")]
    TransactionFailed,
}

impl EventType {
    /// The CloudEvents `type` attribute.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// The topic events of this type are published to.
    pub fn topic(&self) -> &'static str {
        match self {
            EventType::CustomerCreated => topics::CUSTOMER_CREATED,
            EventType::TransactionRequested => topics::TRANSACTION_REQUESTED,
            EventType::TransactionProcessed => topics::TRANSACTION_PROCESSED,
            EventType::TransactionFailed => topics::TRANSACTION_FAILED,
        }
    }

    /// The type from a `ce_type` header; `None` for unknown names or schema versions.
    pub fn parse(value: &str) -> Option<Self> {
        value.parse().ok()
    }

    /// The type expected on `topic` when a producer wrote no `ce_type` header.
    pub fn for_topic(topic: &str) -> Option<Self> {
        Self::iter().find(|t| t.topic() == topic)
    }
}

/// A payload type of one topic.
pub trait Event: Serialize + DeserializeOwned {
    /// Its event type.
    const TYPE: EventType;
    /// The record key: the aggregate id that orders this event.
    fn key(&self) -> &str;
}

/// The CloudEvents attributes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// Unique event id (`ce_id`).
    pub id: String,
    /// `ce_type`, as written by the producer.
    pub event_type: String,
    /// `ce_source`.
    pub source: String,
    /// `ce_time`.
    pub time: DateTime<Utc>,
    /// W3C `traceparent`, when the producer sent one.
    pub traceparent: Option<String>,
}

impl EventMetadata {
    /// Metadata for a new event of `event_type` produced by `source` now.
    pub fn new(id: impl Into<String>, event_type: EventType, source: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            event_type: event_type.as_str().to_string(),
            source: source.into(),
            time: Utc::now(),
            traceparent: None,
        }
    }

    /// The Kafka headers of this event, in binary content mode.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (headers::SPEC_VERSION, SPEC_VERSION.to_string()),
            (headers::ID, self.id.clone()),
            (headers::TYPE, self.event_type.clone()),
            (headers::SOURCE, self.source.clone()),
            (
                headers::TIME,
                self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
            (headers::CONTENT_TYPE, CONTENT_TYPE.to_string()),
        ];
        if let Some(tp) = &self.traceparent {
            out.push((headers::TRACEPARENT, tp.clone()));
        }
        out
    }

    /// Reads the attributes from Kafka headers; `None` when `ce_id` is missing.
    pub fn from_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<Self> {
        let mut id = None;
        let mut event_type = String::new();
        let mut source = String::new();
        let mut time = None;
        let mut traceparent = None;
        for (name, value) in pairs {
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            match name {
                headers::ID => id = Some(value.to_string()),
                headers::TYPE => event_type = value.to_string(),
                headers::SOURCE => source = value.to_string(),
                headers::TIME => {
                    time = DateTime::parse_from_rfc3339(value)
                        .ok()
                        .map(|t| t.with_timezone(&Utc))
                }
                headers::TRACEPARENT => traceparent = Some(value.to_string()),
                _ => {}
            }
        }
        Some(Self {
            id: id?,
            event_type,
            source,
            time: time.unwrap_or_else(Utc::now),
            traceparent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut meta = EventMetadata::new("e-1", EventType::CustomerCreated, "/customer-service");
        meta.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let headers = meta.to_headers();
        let back =
            EventMetadata::from_headers(headers.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap();
        assert_eq!(back.id, "e-1");
        assert_eq!(back.event_type, "customer.created.v1");
        assert_eq!(back.traceparent, meta.traceparent);
        assert_eq!(back.time.timestamp_millis(), meta.time.timestamp_millis());
    }

    #[test]
    fn missing_id_means_no_metadata() {
        let pairs = [(headers::TYPE, b"customer.created.v1".as_slice())];
        assert!(EventMetadata::from_headers(pairs).is_none());
    }

    #[test]
    fn event_types_parse_only_known_versions() {
        assert_eq!(
            EventType::parse("transaction.failed.v1"),
            Some(EventType::TransactionFailed)
        );
        assert_eq!(EventType::parse("transaction.failed.v2"), None);
        assert_eq!(
            EventType::for_topic("transaction.requested"),
            Some(EventType::TransactionRequested)
        );
        assert_eq!(EventType::for_topic("nope"), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                headers::SPEC_VERSION,
                headers::ID,
                headers::TYPE,
                headers::SOURCE,
                headers::TIME,
                headers::CONTENT_TYPE,
                headers::TRACEPARENT,
            ])
            .prop_map(str::to_string),
            "\\PC{0,12}",
        ]
    }

    proptest! {
        /// Any header names and bytes decode without a panic; metadata exists exactly when a
        /// UTF-8 `ce_id` is among them, and then it is the last such one.
        #[test]
        fn arbitrary_headers_never_panic(pairs in prop::collection::vec((header_name(), prop::collection::vec(any::<u8>(), 0..40)), 0..12)) {
            let decoded = EventMetadata::from_headers(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
            let last_id = pairs
                .iter()
                .rev()
                .filter(|(k, _)| k == headers::ID)
                .find_map(|(_, v)| std::str::from_utf8(v).ok());
            prop_assert_eq!(decoded.map(|m| m.id), last_id.map(str::to_string));
        }

        /// Encoding then decoding gives the same attributes (time at millisecond precision).
        #[test]
        fn encode_then_decode_round_trips(
            id in "\\PC{1,40}",
            event_type in "\\PC{0,40}",
            source in "\\PC{0,40}",
            millis in 0i64..4_102_444_800_000,
            traceparent in prop::option::of("[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"),
        ) {
            let time = Utc.timestamp_millis_opt(millis).single().expect("in range");
            let meta = EventMetadata { id, event_type, source, time, traceparent };
            let headers = meta.to_headers();
            let back = EventMetadata::from_headers(headers.iter().map(|(k, v)| (*k, v.as_bytes())));
            prop_assert_eq!(back, Some(meta));
        }
    }
}
