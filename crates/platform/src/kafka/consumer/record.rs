//! [`Record`]: a consumed record, detached from the client.

use contracts::envelope::{headers, Event, EventMetadata, EventType, MAX_ID_BYTES};
use contracts::Validate;
use rdkafka::message::{BorrowedMessage, Headers, Message};

use super::error::HandleError;

/// A consumed record, detached from the client.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic (without the configured prefix).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, when present and UTF-8.
    pub key: Option<String>,
    /// Value.
    pub payload: Vec<u8>,
    /// Headers with UTF-8 names.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The CloudEvents attributes; a record from a producer that sent none gets an id derived
    /// from its position, so a redelivery carries the same id.
    pub fn metadata(&self) -> EventMetadata {
        EventMetadata::from_headers(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .unwrap_or_else(|| {
                let event_type = EventType::for_topic(&self.topic)
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default();
                EventMetadata {
                    id: format!("{}-{}-{}", self.topic, self.partition, self.offset),
                    event_type,
                    source: String::new(),
                    time: chrono::Utc::now(),
                    traceparent: None,
                }
            })
    }

    /// Decodes the payload as `E`, checking the event type and schema version when a `ce_type`
    /// header is present. Failures are permanent: the record goes to the dead-letter topic.
    pub fn decode<E: Event>(&self) -> Result<(EventMetadata, E), HandleError> {
        let metadata = self.metadata();
        if metadata.id.len() > MAX_ID_BYTES {
            return Err(HandleError::permanent(format!(
                "the event id ({}) is {} bytes, more than the {MAX_ID_BYTES} an event id may have",
                headers::ID,
                metadata.id.len()
            )));
        }
        if !metadata.event_type.is_empty() && metadata.event_type != E::TYPE.as_str() {
            return Err(HandleError::permanent(format!(
                "unsupported event type `{}` on {} (expected `{}`)",
                metadata.event_type,
                self.topic,
                E::TYPE.as_str()
            )));
        }
        let event = serde_json::from_slice(&self.payload).map_err(|e| {
            HandleError::permanent(format!("payload is not a valid {}: {e}", E::TYPE.as_str()))
        })?;
        Ok((metadata, event))
    }

    /// Decodes the payload as `E` ([`Record::decode`]) and checks it against its contract
    /// ([`Validate`]). An event that breaks it is a permanent failure, `invalid <topic> event:
    /// <field>: <why>`: dead-lettered, never applied.
    pub fn decode_valid<E: Event + Validate>(&self) -> Result<(EventMetadata, E), HandleError> {
        let (metadata, event) = self.decode::<E>()?;
        event.validate().map_err(|e| {
            HandleError::permanent(e).context(format!("invalid {} event", E::TYPE.topic()))
        })?;
        Ok((metadata, event))
    }

    /// The event id for logs: cut to [`MAX_ID_BYTES`] (a longer one is refused by
    /// [`Record::decode`], and must not flood the log on its way to the dead-letter topic).
    pub fn event_id_for_logs(&self) -> String {
        let id = self.metadata().id;
        if id.len() <= MAX_ID_BYTES {
            return id;
        }
        let mut end = MAX_ID_BYTES;
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &id[..end], id.len())
    }

    /// The W3C `traceparent` header, when present and UTF-8 (with or without CloudEvents
    /// headers; not validated).
    pub fn traceparent(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name == headers::TRACEPARENT)
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
            .map(str::trim)
    }

    pub(crate) fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_string),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        }
    }
}
