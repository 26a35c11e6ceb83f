//! `cargo xtask kafka start --brokers 3`: a KRaft cluster of combined broker + controller nodes
//! (a controller quorum of all of them) on local ports, with IBM Event Streams' topic settings
//! (replication 3, `min.insync.replicas` 2). Each node is a [`Kafka`] of its own
//! (`<root>/node-<id>/`: configuration, data, logs, pid); the jars, credentials, certificates and
//! `kafka.env` (which lists every node's address) are shared under `<root>`. The brokers' own
//! timeouts stay at Kafka's defaults.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::config::EnvContract;
use super::download::kafka_version;
use super::home::{Kafka, Member, Ports, Started};
use super::storage::new_cluster_id;
use crate::process::{self, FileLock};

/// The first node's ports when `EMS_KAFKA_PORT`, `EMS_KAFKA_SASL_PORT` and
/// `EMS_KAFKA_CONTROLLER_PORT` are unset: clear of the single broker (9092-9094) and of the
/// chaos broker (19092-19094).
pub const CLUSTER_BASE_PORTS: Ports = Ports {
    plaintext: 29092,
    sasl: 29093,
    controller: 29094,
};

/// Node `n` (from 0) listens on the first node's ports plus `n` times this.
pub const NODE_PORT_STRIDE: u16 = 10;

/// How long `stop` waits for the nodes' controlled shutdown before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A local KRaft cluster of [`Kafka`] nodes sharing one cluster id and one set of credentials.
pub struct Cluster {
    root: PathBuf,
    nodes: Vec<Kafka>,
}

impl Cluster {
    /// The three-node cluster under `<cache>/kafka-cluster`, node 1 on `EMS_KAFKA_PORT`,
    /// `EMS_KAFKA_SASL_PORT`, `EMS_KAFKA_CONTROLLER_PORT` (default [`CLUSTER_BASE_PORTS`]).
    pub fn from_env() -> Result<Self> {
        let base = Ports::from_env_or(CLUSTER_BASE_PORTS)?;
        Ok(Self::at(
            crate::paths::cache_root().join("kafka-cluster"),
            base,
            3,
        ))
    }

    /// `count` nodes under `root`, node `n` (from 0) on `base` plus `n` × [`NODE_PORT_STRIDE`],
    /// with node ids 1..=count.
    pub fn at(root: PathBuf, base: Ports, count: u16) -> Self {
        let ports: Vec<Ports> = (0..count).map(|n| node_ports(base, n)).collect();
        let voters: Vec<(u32, u16)> = ports
            .iter()
            .enumerate()
            .map(|(n, p)| (n as u32 + 1, p.controller))
            .collect();
        let nodes = ports
            .iter()
            .zip(&voters)
            .map(|(ports, (id, _))| {
                let member = Member {
                    id: *id,
                    voters: voters.clone(),
                };
                let home = root.join(format!("node-{id}"));
                Kafka::node(root.clone(), home, *ports, member)
            })
            .collect();
        Self { root, nodes }
    }

    /// The nodes, node id 1 first.
    pub fn nodes(&self) -> &[Kafka] {
        &self.nodes
    }

    /// Every node's PLAINTEXT address, comma-separated (the bootstrap list).
    pub fn brokers(&self) -> String {
        let all: Vec<String> = self.nodes.iter().map(|n| n.ports().brokers()).collect();
        all.join(",")
    }

    /// Every node's SASL_SSL address, comma-separated.
    pub fn sasl_brokers(&self) -> String {
        let all: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.ports().sasl_brokers())
            .collect();
        all.join(",")
    }

    /// What `kafka.env` lists for this cluster.
    fn contract(&self) -> EnvContract {
        EnvContract {
            brokers: self.brokers(),
            sasl_brokers: self.sasl_brokers(),
            replication: self.nodes[0].member.replication().0,
        }
    }

    fn lock(&self) -> Result<FileLock> {
        FileLock::acquire(
            &self.root.join(".cluster.lock"),
            "waiting for another xtask to finish with the cluster…",
        )
    }

    /// The cluster id every node is formatted with (`<root>/config/cluster.id`, made once).
    fn cluster_id(&self) -> Result<String> {
        let path = self.root.join("config").join("cluster.id");
        if let Ok(id) = fs::read_to_string(&path) {
            if !id.trim().is_empty() {
                return Ok(id.trim().to_string());
            }
        }
        let id = new_cluster_id()?;
        fs::create_dir_all(self.root.join("config"))?;
        process::write_file(&path, &format!("{id}\n"), 0o644)?;
        Ok(id)
    }

    /// Starts every node that does not run (all at once: a node answers only once a majority
    /// of the quorum is up), waits until each answers, writes `kafka.env`. Idempotent: what
    /// brings a killed node back.
    pub fn start(&self) -> Result<Started> {
        fs::create_dir_all(&self.root)?;
        let _lock = self.lock()?;
        let begun = Instant::now();
        let cluster_id = self.cluster_id()?;
        let mut launched = Vec::new();
        let mut secrets = None;
        for node in &self.nodes {
            if let Some(pid) = node.running_pid() {
                launched.push((node, pid, false));
                continue;
            }
            let _ = fs::remove_file(node.pid_file());
            node.check_ports_free()?;
            secrets = Some(node.prepare(Some(&cluster_id))?);
            launched.push((node, node.launch()?, true));
        }
        for (node, pid, _) in &launched {
            node.await_ready(*pid)?;
        }
        let secrets = match secrets {
            Some(secrets) => secrets,
            None => match self.nodes[0].load_secrets() {
                Some(secrets) => secrets,
                None => bail!("the cluster runs, but its credentials are gone: stop and start it"),
            },
        };
        self.nodes[0].write_contract(&secrets, &self.contract())?;
        let started = launched.iter().filter(|(_, _, new)| *new).count();
        println!(
            "Kafka {} cluster of {} nodes is running ({started} started, ready in {:.1} s).",
            kafka_version().unwrap_or_else(|_| "?".into()),
            self.nodes.len(),
            begun.elapsed().as_secs_f64()
        );
        self.print_addresses(&launched.iter().map(|(_, p, _)| *p).collect::<Vec<_>>());
        Ok(Started {
            already_running: started == 0,
            env_file: self.nodes[0].env_file(),
        })
    }

    fn print_addresses(&self, pids: &[u32]) {
        for (node, pid) in self.nodes.iter().zip(pids) {
            println!(
                "  node {}  pid {pid}  PLAINTEXT {}  SASL_SSL {}  controller 127.0.0.1:{}",
                node.node_id(),
                node.ports().brokers(),
                node.ports().sasl_brokers(),
                node.ports().controller
            );
        }
        let (replicas, min_isr) = self.nodes[0].member.replication();
        println!("  topics       replication {replicas}, min.insync.replicas {min_isr}");
        println!("  credentials  {}", self.nodes[0].env_file().display());
    }

    /// Stops every node at once (SIGTERM, SIGKILL after a grace period): one at a time, the
    /// last would wait for a controller quorum that is gone.
    pub fn stop(&self) -> Result<()> {
        fs::create_dir_all(&self.root)?;
        let _lock = self.lock()?;
        let pids: Vec<(u32, u32)> = self
            .nodes
            .iter()
            .filter_map(|n| n.running_pid().map(|pid| (n.node_id(), pid)))
            .collect();
        if pids.is_empty() {
            println!("the Kafka cluster is not running.");
            return Ok(());
        }
        let begun = Instant::now();
        for (_, pid) in &pids {
            process::signal(*pid, libc::SIGCONT);
            process::signal(*pid, libc::SIGTERM);
        }
        std::thread::scope(|scope| {
            for (id, pid) in &pids {
                scope.spawn(move || {
                    if process::terminate(*pid, STOP_GRACE) {
                        println!("node {id} did not shut down in time and was killed.");
                    }
                });
            }
        });
        for node in &self.nodes {
            let _ = fs::remove_file(node.pid_file());
        }
        println!(
            "the Kafka cluster stopped ({:.1} s).",
            begun.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Prints which nodes run, and where.
    pub fn status(&self) -> Result<()> {
        for node in &self.nodes {
            match node.running_pid() {
                Some(pid) => println!(
                    "node {} is running (pid {pid}) on {}",
                    node.node_id(),
                    node.ports().brokers()
                ),
                None => println!("node {} is stopped", node.node_id()),
            }
        }
        println!("  bootstrap    {}", self.brokers());
        println!("  credentials  {}", self.nodes[0].env_file().display());
        Ok(())
    }
}

/// Node `n`'s (from 0) ports: `base` plus `n` × [`NODE_PORT_STRIDE`].
fn node_ports(base: Ports, n: u16) -> Ports {
    let step = n * NODE_PORT_STRIDE;
    Ports {
        plaintext: base.plaintext + step,
        sasl: base.sasl + step,
        controller: base.controller + step,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nodes_get_their_own_ports_ids_and_homes_and_share_the_rest() {
        let cluster = Cluster::at(PathBuf::from("/c"), CLUSTER_BASE_PORTS, 3);
        let nodes = cluster.nodes();
        assert_eq!(nodes.len(), 3);
        let ports: Vec<(u16, u16, u16)> = nodes
            .iter()
            .map(|n| (n.ports().plaintext, n.ports().sasl, n.ports().controller))
            .collect();
        assert_eq!(
            ports,
            [
                (29092, 29093, 29094),
                (29102, 29103, 29104),
                (29112, 29113, 29114)
            ]
        );
        for (n, node) in nodes.iter().enumerate() {
            assert_eq!(node.node_id(), n as u32 + 1);
            assert_eq!(node.member.voters, [(1, 29094), (2, 29104), (3, 29114)]);
            assert_eq!(node.member.replication(), (3, 2));
            assert_eq!(
                node.pid_file(),
                PathBuf::from(format!("/c/node-{}/kafka.pid", n + 1))
            );
            assert_eq!(node.env_file(), PathBuf::from("/c/kafka.env"));
            assert_eq!(node.lib(), PathBuf::from("/c/lib"));
        }
        assert_eq!(
            cluster.brokers(),
            "127.0.0.1:29092,127.0.0.1:29102,127.0.0.1:29112"
        );
        assert_eq!(
            cluster.sasl_brokers(),
            "127.0.0.1:29093,127.0.0.1:29103,127.0.0.1:29113"
        );
        assert_eq!(cluster.contract().replication, 3);
    }

    #[test]
    fn no_cluster_port_meets_the_single_or_the_chaos_broker() {
        let cluster = Cluster::at(PathBuf::from("/c"), CLUSTER_BASE_PORTS, 3);
        let taken = [9092, 9093, 9094, 19092, 19093, 19094];
        let mut seen = std::collections::BTreeSet::new();
        for node in cluster.nodes() {
            let p = node.ports();
            for port in [p.plaintext, p.sasl, p.controller] {
                assert!(!taken.contains(&port), "{port}");
                assert!(seen.insert(port), "{port} used twice");
            }
        }
    }

    #[test]
    fn a_single_broker_keeps_replication_one_and_its_own_home() {
        let single = Kafka::at(PathBuf::from("/k"), Ports::SINGLE);
        assert_eq!(single.member.replication(), (1, 1));
        assert!(!single.member.clustered());
        assert_eq!(single.env_file(), PathBuf::from("/k/kafka.env"));
        assert_eq!(single.pid_file(), PathBuf::from("/k/kafka.pid"));
    }
}
