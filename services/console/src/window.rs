//! The recent window: the newest events across all topics, bounded in count and in bytes. It
//! keeps no state that matters: it is rebuilt from the topics' tails at every start.

use std::collections::BTreeMap;

use contracts::envelope::headers;
use serde::Serialize;
use serde_json::Value;

/// Largest payload kept as JSON; a bigger one is kept as a cut string.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Bytes the window may hold (estimated), whatever its count.
pub const MAX_WINDOW_BYTES: usize = 16 * 1024 * 1024;

/// One record of a topic, as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleEvent {
    /// Topic, without the configured prefix.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// The record's timestamp (milliseconds since the epoch).
    pub timestamp: i64,
    /// The record key (the aggregate id).
    pub key: Option<String>,
    /// `ce_id`, or `<topic>-<partition>-<offset>` for a record without one.
    pub id: String,
    /// `ce_type`.
    pub kind: Option<String>,
    /// The W3C trace id from `traceparent`.
    pub trace_id: Option<String>,
    /// The transaction it is about (`transactionId` of the payload).
    pub transaction_id: Option<String>,
    /// The customers it is about (customer id, `from`, `to`).
    pub customers: Vec<String>,
    /// Every header, as text (dead letters carry their error here).
    pub headers: BTreeMap<String, String>,
    /// The payload: JSON when it is, else (cut) text.
    pub payload: Value,
}

impl ConsoleEvent {
    /// The event of a record: `topic` (unprefixed), its place, timestamp, key, headers and
    /// payload bytes.
    pub fn of(
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: i64,
        key: Option<&[u8]>,
        record_headers: Vec<(String, Vec<u8>)>,
        payload: Option<&[u8]>,
    ) -> Self {
        let headers: BTreeMap<String, String> = record_headers
            .into_iter()
            .map(|(name, value)| (name, cut(&String::from_utf8_lossy(&value), 2_000)))
            .collect();
        let payload = decode_payload(payload.unwrap_or_default());
        let text = |field: &str| {
            payload
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let mut customers = Vec::new();
        // A Customer.created payload's `id` is the customer; a transaction names its accounts.
        if topic.starts_with(contracts::topics::CUSTOMER_CREATED) {
            customers.extend(text("id"));
        }
        customers.extend(text("from"));
        customers.extend(text("to"));
        customers.dedup();
        Self {
            topic: topic.to_string(),
            partition,
            offset,
            timestamp,
            key: key.map(|k| String::from_utf8_lossy(k).into_owned()),
            id: headers
                .get(headers::ID)
                .cloned()
                .unwrap_or_else(|| format!("{topic}-{partition}-{offset}")),
            kind: headers.get(headers::TYPE).cloned(),
            trace_id: headers
                .get(headers::TRACEPARENT)
                .and_then(|t| trace_id(t))
                .map(str::to_string),
            transaction_id: text("transactionId"),
            customers,
            headers,
            payload,
        }
    }

    /// Whether it came from a dead-letter topic.
    pub fn is_dead_letter(&self) -> bool {
        self.topic.ends_with(contracts::topics::DEAD_LETTER_SUFFIX)
    }

    /// Its estimated size in memory.
    pub fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        let payload = match &self.payload {
            Value::String(text) => text.len(),
            other => other.to_string().len(),
        };
        256 + self.id.len() + self.topic.len() + headers + payload
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace)
}

fn decode_payload(bytes: &[u8]) -> Value {
    if bytes.len() <= MAX_PAYLOAD_BYTES {
        if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
            return value;
        }
    }
    Value::String(cut(&String::from_utf8_lossy(bytes), MAX_PAYLOAD_BYTES))
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The newest events by timestamp, at most `capacity` of them and [`MAX_WINDOW_BYTES`].
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    bytes: usize,
    next: u64,
    events: BTreeMap<(i64, u64), ConsoleEvent>,
}

impl Window {
    /// An empty window of `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            bytes: 0,
            next: 0,
            events: BTreeMap::new(),
        }
    }

    /// Adds `event`, dropping the oldest events past the bounds. Returns whether it was kept
    /// (an event older than a full window's oldest is not).
    pub fn push(&mut self, event: ConsoleEvent) -> bool {
        let key = (event.timestamp, self.next);
        self.next += 1;
        self.bytes += event.size();
        self.events.insert(key, event);
        let mut kept = true;
        while self.events.len() > self.capacity
            || (self.bytes > MAX_WINDOW_BYTES && self.events.len() > 1)
        {
            if let Some((oldest, dropped)) = self.events.pop_first() {
                self.bytes -= dropped.size();
                kept &= oldest != key;
            }
        }
        kept
    }

    /// The events, newest first.
    pub fn newest_first(&self) -> Vec<ConsoleEvent> {
        self.events.values().rev().cloned().collect()
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(timestamp: i64, payload: &str) -> ConsoleEvent {
        ConsoleEvent::of(
            "transaction.processed",
            1,
            timestamp,
            timestamp,
            Some(b"cust-001"),
            vec![
                ("ce_id".into(), b"e-1".to_vec()),
                ("ce_type".into(), b"transaction.processed.v1".to_vec()),
                (
                    "traceparent".into(),
                    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
                ),
            ],
            Some(payload.as_bytes()),
        )
    }

    #[test]
    fn a_record_is_described_by_its_headers_and_payload() {
        let e = event(
            5,
            r#"{"transactionId":"txn-1","from":"a","to":"b","amount":"1.00"}"#,
        );
        assert_eq!(e.id, "e-1");
        assert_eq!(e.kind.as_deref(), Some("transaction.processed.v1"));
        assert_eq!(
            e.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(e.transaction_id.as_deref(), Some("txn-1"));
        assert_eq!(e.customers, ["a", "b"]);
        assert_eq!(e.key.as_deref(), Some("cust-001"));
        let customer = ConsoleEvent::of(
            "Customer.created",
            0,
            7,
            1,
            None,
            Vec::new(),
            Some(br#"{"id":"cust-9","name":"N"}"#),
        );
        assert_eq!(customer.customers, ["cust-9"]);
        assert_eq!(customer.id, "Customer.created-0-7", "no ce_id: its place");
        assert!(!customer.is_dead_letter());
    }

    #[test]
    fn a_payload_that_is_not_json_is_kept_as_cut_text() {
        let e = event(1, "not json");
        assert_eq!(e.payload, Value::String("not json".into()));
        let big = "x".repeat(MAX_PAYLOAD_BYTES * 2);
        let e = event(1, &big);
        assert!(e.payload.as_str().unwrap().len() <= MAX_PAYLOAD_BYTES + 3);
    }

    #[test]
    fn the_window_keeps_the_newest_events_by_time() {
        let mut window = Window::new(3);
        for t in [10, 30, 20, 40] {
            assert!(window.push(event(t, "{}")));
        }
        assert!(!window.push(event(5, "{}")), "older than the window");
        let times: Vec<i64> = window.newest_first().iter().map(|e| e.timestamp).collect();
        assert_eq!(times, [40, 30, 20]);
        assert_eq!(window.len(), 3);
    }

    #[test]
    fn the_window_is_bounded_in_bytes() {
        let mut window = Window::new(100_000);
        let big = format!("\"{}\"", "y".repeat(MAX_PAYLOAD_BYTES - 10));
        for t in 0..2_000 {
            window.push(event(t, &big));
        }
        assert!(window.len() < 2_000);
        assert!(window.bytes <= MAX_WINDOW_BYTES);
        assert_eq!(window.newest_first()[0].timestamp, 1_999);
    }

    #[test]
    fn trace_ids_come_from_well_formed_traceparents_only() {
        assert_eq!(trace_id("00-abc-def-01"), None);
        assert_eq!(
            trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
