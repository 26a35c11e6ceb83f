//! The broker faults of `cargo xtask chaos --brokers 3`, on a three-node KRaft cluster
//! (replication 3, `min.insync.replicas` 2) that nobody else uses: kill -9 of the leader of a
//! busy partition (started again 20 s later), SIGSTOP of a leader past its session timeouts
//! (then SIGCONT), a clean restart of one broker, and a rolling restart of all three. Each fault
//! is noted with the wall-clock time it began; [`judge`] measures from the outcomes' `ce_time`
//! (when each transaction was processed) how processing went on around it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use platform::kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::topics::Outcome;

/// A command to run (program and arguments).
pub type Command = Vec<String>;

/// How to reach the cluster's nodes.
#[derive(Debug, Clone, Default)]
pub struct BrokerControls {
    /// The nodes' pid files, node id order (node id 1 first).
    pub pid_files: Vec<PathBuf>,
    /// Starts every node that is down and waits until all answer.
    pub start: Command,
}

/// The broker faults, drawn in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerFault {
    /// kill -9 of the leader of partition 0 of `transaction.requested`, started again 20 s later.
    KillLeader,
    /// SIGSTOP of the leader of partition 1 of `transaction.requested` for [`HANG`], then SIGCONT.
    HangLeader,
    /// SIGTERM of one broker (controlled shutdown) and a start.
    Restart,
    /// Each broker in turn: SIGTERM, start, wait until it answers.
    RollingRestart,
}

/// The broker faults in the order a run injects them.
pub const FAULTS: [BrokerFault; 4] = [
    BrokerFault::KillLeader,
    BrokerFault::HangLeader,
    BrokerFault::Restart,
    BrokerFault::RollingRestart,
];

/// How long a hung broker stays stopped: past the brokers' session timeout (9 s), the
/// consumers' (10 s) and the producer's message timeout (10 s).
const HANG: Duration = Duration::from_secs(45);
/// How long a killed leader stays down.
const DOWN: Duration = Duration::from_secs(20);

/// A broker fault as injected: what, and when it began.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The fault.
    pub fault: BrokerFault,
    /// What was done, for people.
    pub what: String,
    /// When it began.
    pub at: SystemTime,
}

/// Injects `fault` on the cluster of `controls`; returns once it is over (every node up again).
pub async fn inject(
    fault: BrokerFault,
    kafka: &KafkaConfig,
    controls: &BrokerControls,
) -> Injected {
    let topic = kafka.topic_name(contracts::topics::TRANSACTION_REQUESTED);
    let at = SystemTime::now();
    let what = match fault {
        BrokerFault::KillLeader => {
            let node = leader(kafka, &topic, 0).await;
            signal(controls, node, libc::SIGKILL);
            tokio::time::sleep(DOWN).await;
            run(&controls.start).await;
            format!("kill -9 of broker {node} (leader of {topic}/0), started {DOWN:?} later")
        }
        BrokerFault::HangLeader => {
            let node = leader(kafka, &topic, 1).await;
            signal(controls, node, libc::SIGSTOP);
            tokio::time::sleep(HANG).await;
            signal(controls, node, libc::SIGCONT);
            format!("SIGSTOP of broker {node} (leader of {topic}/1) for {HANG:?}, then SIGCONT")
        }
        BrokerFault::Restart => {
            let node = leader(kafka, &topic, 2).await;
            stop(controls, node).await;
            run(&controls.start).await;
            format!("clean restart of broker {node} (leader of {topic}/2)")
        }
        BrokerFault::RollingRestart => {
            for node in 1..=controls.pid_files.len() as i32 {
                stop(controls, node).await;
                run(&controls.start).await;
            }
            "rolling restart of the three brokers".to_string()
        }
    };
    Injected { fault, what, at }
}

/// Brings every node back (SIGCONT, then start): after the run.
pub async fn revive(controls: &BrokerControls) {
    for node in 1..=controls.pid_files.len() as i32 {
        signal(controls, node, libc::SIGCONT);
    }
    run(&controls.start).await;
}

/// The node id of the leader of `topic`/`partition` (metadata from any live broker).
async fn leader(kafka: &KafkaConfig, topic: &str, partition: i32) -> i32 {
    let config = kafka.clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config
            .client_config("chaos-metadata")
            .create()
            .expect("metadata client");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .filter(|leader| *leader > 0)
            .unwrap_or(1)
    })
    .await
    .expect("metadata task")
}

/// The pid of node `node` (1-based), if it runs.
fn pid(controls: &BrokerControls, node: i32) -> Option<i32> {
    let file = controls.pid_files.get(usize::try_from(node - 1).ok()?)?;
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn signal(controls: &BrokerControls, node: i32, signal: i32) {
    if let Some(pid) = pid(controls, node) {
        // SAFETY: kill(2) has no memory effects.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// SIGTERM (controlled shutdown) and waits until the node is gone (SIGKILL after 60 s).
async fn stop(controls: &BrokerControls, node: i32) {
    let Some(pid) = pid(controls, node) else {
        return;
    };
    signal(controls, node, libc::SIGTERM);
    let begun = Instant::now();
    while !exited(pid) {
        if begun.elapsed() > Duration::from_secs(60) {
            signal(controls, node, libc::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether process `pid` has ended: gone, or a zombie (state `Z`) whose parent has not reaped
/// it yet (`cargo xtask chaos` started the nodes and waits on the client, so a node that
/// stopped stays a zombie until the run ends).
fn exited(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // `pid (comm) state …`: the state follows the last `)`.
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    matches!(state, Some(Some('Z' | 'X')) | None)
}

/// Runs `command`; panics when it fails.
pub async fn run(command: &Command) {
    let Some((program, args)) = command.split_first() else {
        return;
    };
    let status = tokio::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

/// What processing did around one broker fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Around {
    /// Seconds from the fault until the first request sent after it was processed (the
    /// partitions the broker did not lead keep flowing).
    pub flow_s: f64,
    /// Seconds from the fault until every request sent in the [`WINDOW`] after it was processed
    /// (the moved partitions resumed).
    pub resume_s: f64,
}

/// The requests sent this long after a fault stand for every partition.
pub const WINDOW: Duration = Duration::from_secs(2);

/// Per fault: [`Around`]; `sent` is when each request was sent, `processed` when it was
/// processed (its first outcome's `ce_time`).
pub fn around(
    at: SystemTime,
    sent: &BTreeMap<String, SystemTime>,
    processed: &BTreeMap<String, SystemTime>,
) -> Option<Around> {
    let after = |t: &SystemTime| t.duration_since(at).ok();
    let window: Vec<f64> = sent
        .iter()
        .filter(|(_, t)| after(t).is_some_and(|d| d <= WINDOW))
        .map(|(id, _)| {
            processed
                .get(id)
                .and_then(after)
                .map_or(f64::INFINITY, |d| d.as_secs_f64())
        })
        .collect();
    if window.is_empty() {
        return None;
    }
    Some(Around {
        flow_s: window.iter().copied().fold(f64::INFINITY, f64::min),
        resume_s: window.iter().copied().fold(0.0, f64::max),
    })
}

/// One line per broker fault: what it was, and what processing did around it ([`around`]).
pub fn measured(
    injected: &[Injected],
    sent: &BTreeMap<String, SystemTime>,
    processed: &BTreeMap<String, SystemTime>,
) -> Vec<String> {
    injected
        .iter()
        .map(|fault| match around(fault.at, sent, processed) {
            Some(a) => format!(
                "broker fault: {}; others flowing after {:.1} s, moved partitions resumed \
                 after {:.1} s",
                fault.what, a.flow_s, a.resume_s
            ),
            None => format!("broker fault: {}; no request sent around it", fault.what),
        })
        .collect()
}

/// The longest time between two processed transactions while the load ran (`from`..`to`).
pub fn max_stall(
    processed: &BTreeMap<String, SystemTime>,
    from: SystemTime,
    to: SystemTime,
) -> f64 {
    let mut times: Vec<SystemTime> = processed
        .values()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    times.push(from);
    times.push(to);
    times.sort();
    times
        .windows(2)
        .filter_map(|w| w[1].duration_since(w[0]).ok())
        .map(|d| d.as_secs_f64())
        .fold(0.0, f64::max)
}

/// When each transaction was processed: its first outcome's `ce_time`.
pub fn processed_at(outcomes: &BTreeMap<String, Vec<Outcome>>) -> BTreeMap<String, SystemTime> {
    outcomes
        .iter()
        .filter_map(|(id, events)| Some((id.clone(), events.iter().filter_map(|e| e.time).min()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_node_not_yet_reaped_counts_as_exited() {
        let mut running = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let ended = std::process::Command::new("true").spawn().unwrap();
        let (running_pid, ended_pid) = (running.id() as i32, ended.id() as i32);
        // `true` ends at once and stays a zombie: this test is its parent and does not wait.
        let begun = Instant::now();
        while !exited(ended_pid) && begun.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            std::path::Path::new(&format!("/proc/{ended_pid}")).exists(),
            "a zombie"
        );
        assert!(exited(ended_pid), "a zombie has exited");
        assert!(!exited(running_pid), "a running process has not");
        running.kill().unwrap();
        running.wait().unwrap();
        assert!(exited(running_pid), "reaped: gone");
        drop(ended);
    }

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1_000.0 + secs)
    }

    fn map(entries: &[(&str, f64)]) -> BTreeMap<String, SystemTime> {
        entries
            .iter()
            .map(|(k, s)| (k.to_string(), at(*s)))
            .collect()
    }

    #[test]
    fn around_a_fault_the_first_and_the_last_request_of_the_window_are_measured() {
        let sent = map(&[("before", -1.0), ("a", 0.5), ("b", 1.0), ("late", 3.0)]);
        let processed = map(&[("before", 0.1), ("a", 0.9), ("b", 12.0), ("late", 3.2)]);
        let around = around(at(0.0), &sent, &processed).unwrap();
        assert!((around.flow_s - 0.9).abs() < 1e-6, "{around:?}");
        assert!((around.resume_s - 12.0).abs() < 1e-6, "{around:?}");
        let unprocessed = map(&[("a", 0.9)]);
        let around = super::around(at(0.0), &sent, &unprocessed).unwrap();
        assert!(around.resume_s.is_infinite());
    }

    #[test]
    fn the_longest_stall_counts_the_edges_of_the_load() {
        let processed = map(&[("a", 1.0), ("b", 2.0), ("c", 9.5), ("outside", 50.0)]);
        let stall = max_stall(&processed, at(0.0), at(10.0));
        assert!((stall - 7.5).abs() < 1e-6, "{stall}");
        assert!((max_stall(&BTreeMap::new(), at(0.0), at(4.0)) - 4.0).abs() < 1e-6);
    }
}
