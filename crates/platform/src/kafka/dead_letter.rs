//! Dead letters: a record that can never be processed is copied to `<topic>.DLT` with why, where
//! it came from and which consumer group gave up on it. The copy is byte for byte (payload, key,
//! headers); a record too large for the dead-letter topic is cut to fit, with its original size
//! and SHA-256 in headers, so no record can wedge a partition.

use contracts::envelope::headers;
use contracts::topics;
use sha2::{Digest, Sha256};

use super::consumer::record::Record;

/// Largest dead letter we produce: under the producer's `message.max.bytes` (1,000,000) and
/// the broker's default `max.message.bytes`, with room for the record's framing.
pub const MAX_DEAD_LETTER_BYTES: usize = 900_000;
/// Longest error text kept in the `dlt_error` header.
const MAX_ERROR_BYTES: usize = 2_000;

/// A dead letter ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// `<topic>.DLT` (without the configured prefix).
    pub topic: String,
    /// The original key.
    pub key: Vec<u8>,
    /// The original payload, cut when it would not fit.
    pub payload: Vec<u8>,
    /// The original headers (cut when they would not fit), then the dead-letter headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    /// The dead letter of `record`, which consumer group `group` gave up on because of `error`.
    pub fn of(record: &Record, group: &str, error: &str) -> Self {
        let mut dlt = vec![
            (
                headers::DLT_ERROR,
                truncate(error, MAX_ERROR_BYTES).to_string(),
            ),
            (headers::DLT_ORIGINAL_TOPIC, record.topic.clone()),
            (
                headers::DLT_ORIGINAL_PARTITION,
                record.partition.to_string(),
            ),
            (headers::DLT_ORIGINAL_OFFSET, record.offset.to_string()),
            (headers::DLT_CONSUMER_GROUP, group.to_string()),
            (headers::DLT_ORIGINAL_SIZE, record.payload.len().to_string()),
        ];
        let mut budget = MAX_DEAD_LETTER_BYTES
            .saturating_sub(record.key.as_ref().map_or(0, String::len))
            .saturating_sub(dlt.iter().map(|(k, v)| k.len() + v.len() + 64).sum());
        // The original headers as far as they fit (they are small unless hostile).
        let mut kept = Vec::new();
        for (name, value) in &record.headers {
            let size = name.len() + value.len() + 16;
            if size > budget / 2 {
                continue;
            }
            budget -= size;
            kept.push((name.clone(), value.clone()));
        }
        let payload = if record.payload.len() > budget {
            dlt.push((headers::DLT_TRUNCATED, "true".to_string()));
            dlt.push((
                headers::DLT_PAYLOAD_SHA256,
                hex(&Sha256::digest(&record.payload)),
            ));
            record.payload[..budget.saturating_sub(256)].to_vec()
        } else {
            record.payload.clone()
        };
        kept.extend(
            dlt.into_iter()
                .map(|(name, value)| (name.to_string(), value.into_bytes())),
        );
        Self {
            topic: topics::dead_letter(&record.topic),
            key: record.key.clone().unwrap_or_default().into_bytes(),
            payload,
            headers: kept,
        }
    }

    /// The headers as the producer takes them.
    pub fn header_refs(&self) -> Vec<(&str, &[u8])> {
        self.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect()
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: Vec<u8>, headers: Vec<(&str, Vec<u8>)>) -> Record {
        Record {
            topic: topics::TRANSACTION_REQUESTED.to_string(),
            partition: 1,
            offset: 42,
            key: Some("k".into()),
            payload,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    fn header<'a>(dead: &'a DeadLetter, name: &str) -> Option<&'a [u8]> {
        dead.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn small_records_are_copied_byte_for_byte() {
        let invalid_utf8 = vec![0xff, 0xfe, b'{', 0x80];
        let original = record(
            invalid_utf8.clone(),
            vec![("ce_id", b"e1".to_vec()), ("odd", vec![0xc3])],
        );
        let dead = DeadLetter::of(&original, "g", "bad json");
        assert_eq!(dead.topic, "transaction.requested.DLT");
        assert_eq!(dead.payload, invalid_utf8);
        assert_eq!(dead.key, b"k");
        assert_eq!(header(&dead, "odd"), Some(&[0xc3][..]));
        assert_eq!(header(&dead, "ce_id"), Some(&b"e1"[..]));
        assert_eq!(header(&dead, headers::DLT_ERROR), Some(&b"bad json"[..]));
        assert_eq!(header(&dead, headers::DLT_CONSUMER_GROUP), Some(&b"g"[..]));
        assert_eq!(
            header(&dead, headers::DLT_ORIGINAL_OFFSET),
            Some(&b"42"[..])
        );
        assert_eq!(header(&dead, headers::DLT_TRUNCATED), None);
    }

    #[test]
    fn oversized_records_are_cut_with_their_size_and_hash() {
        let big = vec![b'x'; 1_000_100];
        let dead = DeadLetter::of(&record(big.clone(), vec![]), "g", &"e".repeat(10_000));
        let total: usize = dead.payload.len()
            + dead.key.len()
            + dead
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        assert!(total <= MAX_DEAD_LETTER_BYTES, "{total}");
        assert!(dead.payload.len() > 800_000);
        assert_eq!(header(&dead, headers::DLT_TRUNCATED), Some(&b"true"[..]));
        assert_eq!(
            header(&dead, headers::DLT_ORIGINAL_SIZE),
            Some(&b"1000100"[..])
        );
        let sha = String::from_utf8(header(&dead, headers::DLT_PAYLOAD_SHA256).unwrap().to_vec())
            .unwrap();
        assert_eq!(sha, hex(&Sha256::digest(&big)));
        assert_eq!(header(&dead, headers::DLT_ERROR).unwrap().len(), 2_000);
    }

    #[test]
    fn huge_headers_are_dropped_not_fatal() {
        let dead = DeadLetter::of(
            &record(b"{}".to_vec(), vec![("huge", vec![b'h'; 950_000])]),
            "g",
            "x",
        );
        assert_eq!(header(&dead, "huge"), None);
        assert_eq!(dead.payload, b"{}");
    }
}
