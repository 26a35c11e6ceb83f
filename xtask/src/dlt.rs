//! `cargo xtask dlt list|show|replay`: the dead letters of `<topic>.DLT`, one of them in full,
//! and replaying them to their original topic once their cause is fixed. The reading and the
//! replay itself are `platform::kafka::dead_letters` (what the integration test exercises).
//!
//! The broker: the services' variables (`KAFKA_BROKERS`, `EVENT_STREAMS_*`, `KAFKA_SECURITY_PROTOCOL`,
//! `KAFKA_TOPIC_PREFIX`, ...); without a broker list, the local broker of `cargo xtask kafka`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use platform::config::{Env, ProcessEnv};
use platform::kafka::dead_letters::{self, DeadLetterError, StoredDeadLetter};
use platform::kafka::{KafkaConfig, Producer};

use crate::kafka::Ports;

/// Longest error text `list` prints per dead letter (`show` prints all of it).
const LIST_ERROR_CHARS: usize = 200;

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every dead letter of the topic, or of one partition.
    All { partition: Option<i32> },
    /// These offsets of one partition.
    Offsets { partition: i32, offsets: Vec<i64> },
}

/// A `dlt` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `list [--topic <t>]`.
    List { topic: Option<String> },
    /// `show <topic>.DLT <partition> <offset>`.
    Show {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// `replay <topic>.DLT <partition> <offset>...`, `replay <topic>.DLT [<partition>] --all`.
    Replay { topic: String, selection: Selection },
}

/// The arguments of `cargo xtask dlt` (topics are given with or without `.DLT`).
#[derive(Debug, clap::Subcommand)]
pub enum Args {
    /// List the dead letters of each <topic>.DLT.
    ///
    /// Each with its position, time, key, event, error, where from and which consumer group
    /// gave up on it.
    List {
        /// Only this topic's dead letters.
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
    },
    /// Show one dead letter: its headers and payload (pretty JSON).
    Show {
        /// `<topic>.DLT`.
        #[arg(value_name = "TOPIC.DLT")]
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
    /// Publish dead letters again to their original topic, byte for byte.
    ///
    /// Not the dlt_* headers; dlt_replayed_from/_at/_by are added. Truncated ones are refused.
    /// `replay <topic>.DLT <partition> <offset>...` or `replay <topic>.DLT [<partition>] --all`.
    Replay {
        /// `<topic>.DLT`.
        #[arg(value_name = "TOPIC.DLT")]
        topic: String,
        /// The partition (with --all: only this partition).
        #[arg(required_unless_present = "all")]
        partition: Option<i32>,
        /// The offsets to replay (not with --all).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        offsets: Vec<i64>,
        /// Every dead letter of the topic (or of the partition).
        #[arg(long)]
        all: bool,
    },
}

impl Args {
    /// The command these arguments ask for, with the dead-letter topic's full name.
    pub fn into_command(self) -> Command {
        match self {
            Self::List { topic } => Command::List {
                topic: topic.as_deref().map(dead_letters::dead_letter_topic),
            },
            Self::Show {
                topic,
                partition,
                offset,
            } => Command::Show {
                topic: dead_letters::dead_letter_topic(&topic),
                partition,
                offset,
            },
            Self::Replay {
                topic,
                partition,
                offsets,
                all,
            } => Command::Replay {
                topic: dead_letters::dead_letter_topic(&topic),
                selection: match (all, partition) {
                    (true, partition) => Selection::All { partition },
                    // clap requires the partition and offsets without --all.
                    (false, partition) => Selection::Offsets {
                        partition: partition.unwrap_or_default(),
                        offsets,
                    },
                },
            },
        }
    }
}

/// Runs `command` against the broker.
pub fn run(command: Command) -> Result<()> {
    let config = kafka_config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        platform::kafka::check_connection(&config, Duration::from_secs(10))
            .await
            .with_context(|| format!("cannot reach Kafka at {}", config.brokers.join(",")))?;
        match command {
            Command::List { topic } => list(&config, topic).await,
            Command::Show {
                topic,
                partition,
                offset,
            } => {
                let letter = dead_letters::read_one(&config, &topic, partition, offset).await?;
                print!("{}", show(&letter));
                Ok(())
            }
            Command::Replay { topic, selection } => replay(&config, &topic, selection).await,
        }
    })
}

/// The services' Kafka variables; the local broker when no broker list is given.
pub(crate) fn kafka_config() -> Result<KafkaConfig> {
    struct WithLocalBroker(String);
    impl Env for WithLocalBroker {
        fn var(&self, key: &str) -> Option<String> {
            let local = key == "KAFKA_BROKERS"
                && ProcessEnv.var("EVENT_STREAMS_KAFKA_BROKERS_SASL").is_none();
            ProcessEnv
                .var(key)
                .or_else(|| local.then(|| self.0.clone()))
        }
    }
    KafkaConfig::from_env(&WithLocalBroker(Ports::from_env()?.brokers()))
        .context("Kafka configuration")
}

async fn list(config: &KafkaConfig, topic: Option<String>) -> Result<()> {
    let topics = topic.map_or_else(dead_letters::dead_letter_topics, |t| vec![t]);
    for topic in topics {
        let letters = match dead_letters::read_all(config, &topic).await {
            Ok(letters) => letters,
            Err(DeadLetterError::NoSuchTopic(_)) => {
                println!("{topic}: no such topic");
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        println!("{topic}: {} dead letter(s)", letters.len());
        for letter in &letters {
            print!("{}", summary(letter));
        }
    }
    Ok(())
}

/// A dead letter in `list`: where, when, key, event, why and where from.
fn summary(letter: &StoredDeadLetter) -> String {
    let field = |name: &str| letter.header(name).unwrap_or_else(|| "-".to_string());
    let error: String = field("dlt_error").chars().take(LIST_ERROR_CHARS).collect();
    let mut text = format!(
        "  {}/{}  {}  key {}  event {} ({})\n    error: {}\n    from {}  group {}  {} bytes",
        letter.partition,
        letter.offset,
        time(letter),
        key(letter),
        field("ce_id"),
        field("ce_type"),
        error.replace('\n', " "),
        letter.original_position(),
        field("dlt_consumer_group"),
        field("dlt_original_size"),
    );
    if letter.is_truncated() {
        text.push_str("  TRUNCATED (cannot be replayed)");
    }
    text.push('\n');
    text
}

/// A dead letter in full: position, headers, payload (pretty JSON when it is JSON).
fn show(letter: &StoredDeadLetter) -> String {
    let mut text = format!(
        "{}\n  time: {}\n  key: {}\nheaders:\n",
        letter.position(),
        time(letter),
        key(letter)
    );
    for (name, value) in &letter.headers {
        text.push_str(&format!("  {name}: {}\n", printable(value)));
    }
    text.push_str(&format!("payload ({} bytes):\n", letter.payload.len()));
    let payload = match serde_json::from_slice::<serde_json::Value>(&letter.payload) {
        Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_default(),
        Err(_) => printable(&letter.payload),
    };
    text.push_str(&payload);
    text.push('\n');
    if letter.is_truncated() {
        text.push_str("(truncated: the payload above is only the start of the original)\n");
    }
    text
}

fn time(letter: &StoredDeadLetter) -> String {
    letter.time.map_or_else(
        || "-".to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

fn key(letter: &StoredDeadLetter) -> String {
    letter
        .key
        .as_deref()
        .map_or_else(|| "(none)".to_string(), printable)
}

/// `bytes` as text when UTF-8, else as hex.
fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.escape_debug().to_string(),
        Err(_) => format!(
            "0x{} (not UTF-8)",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

async fn replay(config: &KafkaConfig, topic: &str, selection: Selection) -> Result<()> {
    let letters = match selection {
        Selection::All { partition } => dead_letters::read_all(config, topic)
            .await?
            .into_iter()
            .filter(|l| partition.is_none() || partition == Some(l.partition))
            .collect(),
        Selection::Offsets { partition, offsets } => {
            // Every one is read before anything is published: a typo replays nothing.
            let mut letters = Vec::with_capacity(offsets.len());
            for offset in offsets {
                letters.push(dead_letters::read_one(config, topic, partition, offset).await?);
            }
            letters
        }
    };
    if letters.is_empty() {
        println!("{topic}: nothing to replay");
        return Ok(());
    }
    let producer = Producer::new(config, "xtask-dlt-replay")?;
    let by = operator();
    let mut refused = 0;
    let mut groups = std::collections::BTreeSet::new();
    for letter in &letters {
        match dead_letters::replay(&producer, letter, &by).await {
            Ok(done) => {
                println!(
                    "replayed {} -> {} partition {} offset {} (key {}, event {}) at {} by {}",
                    done.from,
                    done.topic,
                    done.delivered.partition,
                    done.delivered.offset,
                    key(letter),
                    letter.header("ce_id").unwrap_or_else(|| "-".to_string()),
                    done.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    done.by
                );
                groups.extend(letter.header("dlt_consumer_group"));
            }
            Err(error @ DeadLetterError::Truncated { .. }) => {
                eprintln!("refused: {error}");
                refused += 1;
            }
            Err(error) => return Err(error.into()),
        }
    }
    if !groups.is_empty() {
        let groups: Vec<String> = groups.into_iter().collect();
        println!(
            "note: dead-lettered by consumer group(s) {}; a replayed record is read by every \
             consumer group of {}, and the groups that already applied it skip it (their inbox \
             keeps each event effectively once)",
            groups.join(", "),
            letters[0].original_topic()
        );
    }
    if refused > 0 {
        bail!("{refused} dead letter(s) refused");
    }
    Ok(())
}

/// Who replays: `$USER` (else `$LOGNAME`, else the OS user), at the host's name when known.
fn operator() -> String {
    let user = ProcessEnv
        .var("USER")
        .or_else(|| ProcessEnv.var("LOGNAME"))
        .or_else(|| {
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .and_then(|out| String::from_utf8(out.stdout).ok())
                .map(|name| name.trim().to_string())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(host) if !host.trim().is_empty() => format!("{user}@{}", host.trim()),
        _ => user,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arguments after `dlt`, as `cargo xtask` parses them.
    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        #[derive(clap::Parser)]
        struct Dlt {
            #[command(subcommand)]
            args: Args,
        }
        let dlt = <Dlt as clap::Parser>::try_parse_from(
            std::iter::once("dlt").chain(args.iter().copied()),
        )?;
        Ok(dlt.args.into_command())
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse(&["list"]).unwrap(), Command::List { topic: None });
        assert_eq!(
            parse(&["list", "--topic", "transaction.requested"]).unwrap(),
            Command::List {
                topic: Some("transaction.requested.DLT".into())
            }
        );
        assert_eq!(
            parse(&["show", "Customer.created.DLT", "2", "40"]).unwrap(),
            Command::Show {
                topic: "Customer.created.DLT".into(),
                partition: 2,
                offset: 40
            }
        );
        assert_eq!(
            parse(&["replay", "Customer.created.DLT", "0", "3", "7"]).unwrap(),
            Command::Replay {
                topic: "Customer.created.DLT".into(),
                selection: Selection::Offsets {
                    partition: 0,
                    offsets: vec![3, 7]
                }
            }
        );
        assert_eq!(
            parse(&["replay", "Customer.created.DLT", "--all"]).unwrap(),
            Command::Replay {
                topic: "Customer.created.DLT".into(),
                selection: Selection::All { partition: None }
            }
        );
        assert_eq!(
            parse(&["replay", "Customer.created.DLT", "1", "--all"]).unwrap(),
            Command::Replay {
                topic: "Customer.created.DLT".into(),
                selection: Selection::All { partition: Some(1) }
            }
        );
        for bad in [
            &["replay", "Customer.created.DLT"][..],
            &["replay", "Customer.created.DLT", "0"],
            &["replay", "Customer.created.DLT", "0", "x"],
            &["show", "Customer.created.DLT", "0"],
            &["list", "--topic"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    fn letter(payload: &[u8], headers: &[(&str, &str)]) -> StoredDeadLetter {
        StoredDeadLetter {
            topic: "Customer.created.DLT".into(),
            partition: 0,
            offset: 3,
            time: chrono::DateTime::from_timestamp_millis(1_767_225_600_000),
            key: Some(b"c1".to_vec()),
            payload: payload.to_vec(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn show_prints_headers_and_pretty_json() {
        let text = show(&letter(
            br#"{"id":"c1","name":"Ann"}"#,
            &[("ce_id", "e1"), ("dlt_error", "boom")],
        ));
        assert!(text.starts_with("Customer.created.DLT/0/3\n"), "{text}");
        assert!(text.contains("  time: 2026-01-01T00:00:00.000Z"), "{text}");
        assert!(text.contains("  dlt_error: boom\n"), "{text}");
        assert!(
            text.contains("{\n  \"id\": \"c1\",\n  \"name\": \"Ann\"\n}"),
            "{text}"
        );
        let binary = show(&letter(&[0xff, 0x00], &[]));
        assert!(binary.contains("0xff00 (not UTF-8)"), "{binary}");
    }

    #[test]
    fn list_summarises_the_error_and_origin() {
        let text = summary(&letter(
            b"{}",
            &[
                ("ce_id", "e1"),
                ("dlt_error", &"x".repeat(500)),
                ("dlt_original_topic", "Customer.created"),
                ("dlt_original_partition", "1"),
                ("dlt_original_offset", "57"),
                ("dlt_consumer_group", "notifications"),
                ("dlt_truncated", "true"),
            ],
        ));
        assert!(
            text.contains("from Customer.created/1/57  group notifications"),
            "{text}"
        );
        assert!(text.contains("TRUNCATED"), "{text}");
        assert!(!text.contains(&"x".repeat(LIST_ERROR_CHARS + 1)), "{text}");
    }
}
