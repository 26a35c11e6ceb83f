//! The AsyncAPI 3.0 document of the topics and events, generated from this crate: the topic names
//! of [`topics`], the CloudEvents headers of [`envelope::headers`](crate::envelope::headers), the
//! payload schemas the payload types derive (the same `schemars` derivation as the committed JSON
//! Schemas), and who sends and receives each topic. `schemas/asyncapi.json` is this document,
//! checked by the contracts' schema test.

use schemars::gen::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::envelope::{headers, Event, EventType, CONTENT_TYPE, SPEC_VERSION};
use crate::events::{
    CustomerCreated, TransactionFailed, TransactionProcessed, TransactionRequested,
};
use crate::topics::{self, groups};

/// Version of the AsyncAPI Kafka bindings the document uses.
const KAFKA_BINDING_VERSION: &str = "0.5.0";
/// Name of the one dead-letter message, shared by every `<topic>.DLT` channel.
const DEAD_LETTER_MESSAGE: &str = "deadLetter";
/// Pattern of a W3C `traceparent` header value.
const TRACEPARENT_PATTERN: &str = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$";

/// A service's part in a topic: it sends the topic's events, or receives them in a consumer group.
struct Role {
    service: &'static str,
    topic: &'static str,
    /// `None`: the service sends; `Some(group)`: it receives in that consumer group.
    group: Option<&'static str>,
    /// What the service does with the topic.
    summary: &'static str,
}

/// Who sends and who receives each business topic (consumer groups without `KAFKA_TOPIC_PREFIX`).
/// Every receiving group also sends the records it can never process to `<topic>.DLT`.
const ROLES: [Role; 9] = [
    Role {
        service: "customer-service",
        topic: topics::CUSTOMER_CREATED,
        group: None,
        summary: "A registration (`POST /app/customers`) writes the customer and its event in one \
            transaction (outbox); the relay publishes it.",
    },
    Role {
        service: "transaction-service",
        topic: topics::TRANSACTION_REQUESTED,
        group: None,
        summary: "An accepted `POST /transactions` writes the request and its event in one \
            transaction (outbox); the relay publishes it. Other producers may write this topic \
            too.",
    },
    Role {
        service: "transaction-service",
        topic: topics::CUSTOMER_CREATED,
        group: Some(groups::TRANSACTION_ACCOUNTS),
        summary: "Opens the customer's account (balance `OPENING_BALANCE`).",
    },
    Role {
        service: "transaction-service",
        topic: topics::TRANSACTION_REQUESTED,
        group: Some(groups::TRANSACTION_REQUESTS),
        summary: "Applies the request to the ledger, or parks it while an account is unknown \
            (`UNKNOWN_ACCOUNT_GRACE_SECS`), and writes its one outcome through the outbox.",
    },
    Role {
        service: "transaction-service",
        topic: topics::TRANSACTION_PROCESSED,
        group: None,
        summary: "The outcome of a request that was applied, with the balances it left.",
    },
    Role {
        service: "transaction-service",
        topic: topics::TRANSACTION_FAILED,
        group: None,
        summary: "The outcome of a request that was rejected, with the reason.",
    },
    Role {
        service: "notification-service",
        topic: topics::CUSTOMER_CREATED,
        group: Some(groups::NOTIFICATION_CUSTOMERS),
        summary: "Records the customer in its projection and sends the welcome e-mail.",
    },
    Role {
        service: "notification-service",
        topic: topics::TRANSACTION_PROCESSED,
        group: Some(groups::NOTIFICATION_TRANSACTIONS),
        summary: "Sends each touched customer one alert (debit, credit).",
    },
    Role {
        service: "notification-service",
        topic: topics::TRANSACTION_FAILED,
        group: Some(groups::NOTIFICATION_TRANSACTIONS),
        summary: "Tells the requester (the debited account, or the credited one for a deposit) \
            that the transaction failed, and why.",
    },
];

/// The read-only console reads every topic, dead letters included, in a group of its own.
const CONSOLE: (&str, &str) = ("console", groups::CONSOLE);

/// An AsyncAPI 3.0 document; serialize it (JSON) to get the document, its sections in reading
/// order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    asyncapi: &'static str,
    info: Value,
    default_content_type: &'static str,
    servers: Value,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    components: Value,
}

/// The AsyncAPI 3.0 document of every topic, its events, dead letters, senders and receivers.
pub fn document() -> Document {
    let mut generator = SchemaSettings::draft07()
        .with(|s| s.definitions_path = "#/components/schemas/".to_string())
        .into_generator();
    let mut messages = Map::new();
    let mut channels = Map::new();
    for (event_type, payload) in [
        payload::<CustomerCreated>(&mut generator),
        payload::<TransactionRequested>(&mut generator),
        payload::<TransactionProcessed>(&mut generator),
        payload::<TransactionFailed>(&mut generator),
    ] {
        messages.insert(
            event_type.as_str().to_string(),
            message(event_type, payload),
        );
        let topic = event_type.topic();
        channels.insert(
            topic.to_string(),
            channel(topic, event_type.as_str(), summary(event_type)),
        );
        let dead_letters = topics::dead_letter(topic);
        let about = format!("Records of `{topic}` a consumer group could never process.");
        channels.insert(
            dead_letters.clone(),
            channel(&dead_letters, DEAD_LETTER_MESSAGE, &about),
        );
    }
    messages.insert(DEAD_LETTER_MESSAGE.to_string(), dead_letter_message());
    let schemas: Map<String, Value> = generator
        .take_definitions()
        .into_iter()
        .map(|(name, schema)| (name, json!(schema)))
        .collect();
    Document {
        asyncapi: "3.0.0",
        info: info(),
        default_content_type: CONTENT_TYPE,
        servers: servers(),
        operations: operations(&channels),
        channels,
        components: json!({
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": security_schemes(),
        }),
    }
}

/// The event type of `E` and a reference to its payload schema (added to the generator's
/// definitions, which become `components.schemas`).
fn payload<E: Event + JsonSchema>(generator: &mut SchemaGenerator) -> (EventType, Value) {
    (E::TYPE, json!(generator.subschema_for::<E>()))
}

/// One line on what an event means.
fn summary(event_type: EventType) -> &'static str {
    match event_type {
        EventType::CustomerCreated => "A new customer was registered.",
        EventType::TransactionRequested => "A debit, credit or transfer was requested.",
        EventType::TransactionProcessed => {
            "A requested transaction was applied to the ledger; carries the balances it left."
        }
        EventType::TransactionFailed => "A requested transaction was rejected, with the reason.",
    }
}

/// What the record key of an event is.
fn key_description(event_type: EventType) -> &'static str {
    match event_type {
        EventType::CustomerCreated => "The customer id.",
        _ => {
            "The debited account, or the credited one for a deposit (else the transaction id), so \
             that one account's transactions stay ordered."
        }
    }
}

/// The `info` section.
fn info() -> Value {
    json!({
        "title": "event-microservices events",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "The Kafka topics and events of the event-microservices banking example. \
            Every record is a CloudEvents 1.0 event in Kafka binary content mode: the attributes \
            are headers (`ce_*`), the value is the JSON payload, the key orders one customer's \
            or account's events. Consumers are effectively once: they skip an event whose \
            `ce_id` they have applied, so a re-published copy is harmless. With \
            `KAFKA_TOPIC_PREFIX` set, every topic address and consumer group carries the prefix. \
            Generated from the `contracts` crate; do not edit by hand.",
        "license": { "name": "Apache-2.0" },
    })
}

/// The brokers: IBM Event Streams and the local development broker.
fn servers() -> Value {
    json!({
        "event-streams": {
            "host": "{broker}",
            "protocol": "kafka-secure",
            "title": "IBM Event Streams",
            "description": "SASL_SSL with PLAIN (user `token`, an API key as password), TLS 1.2+ \
                with the system CA store. Brokers from `EVENT_STREAMS_KAFKA_BROKERS_SASL` or \
                `EVENT_STREAMS_BOOTSTRAP_ENDPOINTS`; credentials `EVENT_STREAMS_USER`, \
                `EVENT_STREAMS_PASSWORD`.",
            "variables": { "broker": {
                "description": "One broker of the instance's credentials.",
                "examples": ["broker-0-xxxx.kafka.svc01.eu-de.eventstreams.cloud.ibm.com:9093"],
            }},
            "security": [{ "$ref": "#/components/securitySchemes/sasl-plain" }],
        },
        "local": {
            "host": "127.0.0.1:9092",
            "protocol": "kafka",
            "title": "Local broker, PLAINTEXT",
            "description": "`cargo xtask kafka start`; the default of `KAFKA_BROKERS`.",
        },
        "local-sasl": {
            "host": "127.0.0.1:9093",
            "protocol": "kafka-secure",
            "title": "Local broker, SASL_SSL",
            "description": "The local broker's SASL_SSL listener (its own CA, written to \
                `kafka.env` by `cargo xtask kafka start`), with SASL/PLAIN or SCRAM-SHA-512.",
            "security": [
                { "$ref": "#/components/securitySchemes/sasl-plain" },
                { "$ref": "#/components/securitySchemes/sasl-scram-sha-512" },
            ],
        },
    })
}

/// The SASL mechanisms the services speak over TLS.
fn security_schemes() -> Value {
    json!({
        "sasl-plain": { "type": "plain", "description": "SASL/PLAIN over TLS." },
        "sasl-scram-sha-512": {
            "type": "scramSha512",
            "description": "SASL/SCRAM-SHA-512 over TLS (`KAFKA_SASL_MECHANISM`).",
        },
    })
}

/// A channel on `topic` carrying the message `message` (a key of `components.messages`).
fn channel(topic: &str, message: &str, description: &str) -> Value {
    json!({
        "address": topic,
        "description": description,
        "messages": { message: { "$ref": format!("#/components/messages/{message}") } },
    })
}

/// The message of an event type: its CloudEvents headers, key and payload.
fn message(event_type: EventType, payload: Value) -> Value {
    let sender = ROLES
        .iter()
        .find(|r| r.topic == event_type.topic() && r.group.is_none())
        .map_or(String::new(), |r| format!("/{}", r.service));
    json!({
        "name": event_type.as_str(),
        "title": event_type.topic(),
        "summary": summary(event_type),
        "contentType": CONTENT_TYPE,
        "headers": {
            "type": "object",
            "required": [
                headers::SPEC_VERSION, headers::ID, headers::TYPE, headers::SOURCE, headers::TIME,
                headers::CONTENT_TYPE,
            ],
            "properties": cloud_event_headers(Some(event_type), &sender),
        },
        "payload": payload,
        "bindings": { "kafka": {
            "key": { "type": "string", "description": key_description(event_type) },
            "bindingVersion": KAFKA_BINDING_VERSION,
        }},
    })
}

/// The CloudEvents binary-mode headers and `traceparent`; `ce_type` fixed when `event_type` is
/// given, `ce_source` with `source` as its example when not empty.
fn cloud_event_headers(event_type: Option<EventType>, source: &str) -> Map<String, Value> {
    let mut ce_type = json!({ "type": "string", "description": "Event type and schema version." });
    if let Some(event_type) = event_type {
        ce_type["const"] = json!(event_type.as_str());
    }
    let mut ce_source = json!({ "type": "string", "description": "Producer of the event." });
    if !source.is_empty() {
        ce_source["examples"] = json!([source]);
    }
    let properties = json!({
        headers::SPEC_VERSION: {
            "type": "string", "const": SPEC_VERSION, "description": "CloudEvents spec version.",
        },
        headers::ID: {
            "type": "string",
            "description": "Unique event id: consumers skip an id they have applied. A record \
                without one is given `<topic>-<partition>-<offset>`.",
        },
        headers::TYPE: ce_type,
        headers::SOURCE: ce_source,
        headers::TIME: {
            "type": "string", "format": "date-time", "description": "When the event happened.",
        },
        headers::CONTENT_TYPE: {
            "type": "string", "const": CONTENT_TYPE, "description": "Media type of the value.",
        },
        headers::TRACEPARENT: {
            "type": "string", "pattern": TRACEPARENT_PATTERN,
            "description": "W3C trace context of the request that caused the event.",
        },
    });
    match properties {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The message of every `<topic>.DLT`: the original record byte for byte, with why and where from.
fn dead_letter_message() -> Value {
    let mut properties = cloud_event_headers(None, "");
    let dead_letter_headers = [
        (
            headers::DLT_ERROR,
            "Why the record could not be processed (at most 2,000 bytes).",
        ),
        (
            headers::DLT_ORIGINAL_TOPIC,
            "The topic the record came from.",
        ),
        (
            headers::DLT_ORIGINAL_PARTITION,
            "The partition it came from.",
        ),
        (headers::DLT_ORIGINAL_OFFSET, "Its offset there."),
        (
            headers::DLT_CONSUMER_GROUP,
            "The consumer group that gave up on it.",
        ),
        (
            headers::DLT_ORIGINAL_SIZE,
            "Size in bytes of the original value.",
        ),
        (
            headers::DLT_TRUNCATED,
            "`true` when the value was cut to fit the dead-letter topic.",
        ),
        (
            headers::DLT_PAYLOAD_SHA256,
            "SHA-256 (hex) of the original value, when truncated.",
        ),
    ];
    for (name, description) in dead_letter_headers {
        properties.insert(
            name.to_string(),
            json!({ "type": "string", "description": description }),
        );
    }
    json!({
        "name": DEAD_LETTER_MESSAGE,
        "title": "Dead letter",
        "summary": "A record a consumer group could never process (it does not decode, its event \
            type or schema version is unknown, it breaks its contract, or it failed transiently \
            for longer than `CONSUMER_RETRY_LIMIT_SECS`).",
        "description": "Key, value and headers are the original record's, byte for byte (the \
            value is cut when it does not fit); the `dlt_*` headers are added. A record replayed \
            from a dead-letter topic goes back to its original topic without the `dlt_*` headers \
            and with `dlt_replayed_from`, `dlt_replayed_at` and `dlt_replayed_by`.",
        "headers": {
            "type": "object",
            "required": [
                headers::DLT_ERROR, headers::DLT_ORIGINAL_TOPIC, headers::DLT_ORIGINAL_PARTITION,
                headers::DLT_ORIGINAL_OFFSET, headers::DLT_CONSUMER_GROUP,
                headers::DLT_ORIGINAL_SIZE,
            ],
            "properties": properties,
        },
        "payload": { "description": "The original record's value, which may not be JSON." },
        "bindings": { "kafka": {
            "key": { "type": "string", "description": "The original record's key." },
            "bindingVersion": KAFKA_BINDING_VERSION,
        }},
    })
}

/// The operations: each role, the dead letters of each receiving group, and the console's reads.
fn operations(channels: &Map<String, Value>) -> Map<String, Value> {
    let mut operations = Map::new();
    for role in &ROLES {
        let (service, topic) = (role.service, role.topic);
        let Some(group) = role.group else {
            let send = Operation::send(topic, role.summary);
            operations.insert(format!("{service}.sends.{topic}"), send.to_json(channels));
            continue;
        };
        let receive = Operation::receive(topic, group, role.summary);
        operations.insert(
            format!("{service}.receives.{topic}"),
            receive.to_json(channels),
        );
        let dead_letters = topics::dead_letter(topic);
        let summary = format!(
            "Group `{group}` sends the `{topic}` records it can never process here, and moves on."
        );
        let send = Operation::send(&dead_letters, &summary);
        operations.insert(
            format!("{group}.dead-letters.{topic}"),
            send.to_json(channels),
        );
    }
    let (console, group) = CONSOLE;
    for topic in channels.keys() {
        let summary = "The console shows the recent events (read-only, from the topic's tail).";
        let receive = Operation::receive(topic, group, summary);
        operations.insert(
            format!("{console}.receives.{topic}"),
            receive.to_json(channels),
        );
    }
    operations
}

/// One operation on a channel, with every message of the channel.
struct Operation<'a> {
    action: &'static str,
    channel: &'a str,
    group: Option<&'a str>,
    summary: &'a str,
}

impl<'a> Operation<'a> {
    fn send(channel: &'a str, summary: &'a str) -> Self {
        Self {
            action: "send",
            channel,
            group: None,
            summary,
        }
    }

    fn receive(channel: &'a str, group: &'a str, summary: &'a str) -> Self {
        Self {
            action: "receive",
            channel,
            group: Some(group),
            summary,
        }
    }

    /// The operation object; a receive names its consumer group in the Kafka binding.
    fn to_json(&self, channels: &Map<String, Value>) -> Value {
        let channel = self.channel;
        let messages: Vec<Value> = channels
            .get(channel)
            .and_then(|c| c["messages"].as_object())
            .map(|m| {
                m.keys()
                    .map(|name| json!({ "$ref": format!("#/channels/{channel}/messages/{name}") }))
                    .collect()
            })
            .unwrap_or_default();
        let mut operation = json!({
            "action": self.action,
            "channel": { "$ref": format!("#/channels/{channel}") },
            "summary": self.summary,
            "messages": messages,
        });
        if let Some(group) = self.group {
            operation["bindings"] = json!({ "kafka": {
                "groupId": { "type": "string", "const": group },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }});
        }
        operation
    }
}
