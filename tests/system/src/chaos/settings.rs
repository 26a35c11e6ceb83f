//! What a chaos run is given ([`ChaosSettings`], [`Controls`]) and what it reports
//! ([`ChaosReport`]).

use std::time::Duration;

use crate::chaos_brokers::BrokerControls;

/// A command to run for a fault (program and arguments).
pub type Command = Vec<String>;

/// How to reach what the services depend on, for the faults outside them.
#[derive(Debug, Clone, Default)]
pub struct Controls {
    /// Stops the broker (it must be one nobody else uses).
    pub broker_stop: Option<Command>,
    /// Starts it again.
    pub broker_start: Option<Command>,
    /// Restarts PostgreSQL (a cluster nobody else uses).
    pub postgres_restart: Option<Command>,
    /// The PostgreSQL server (a superuser's URL) whose fresh databases the services use; none:
    /// `TEST_DATABASE_URL`'s. The one `postgres_restart` restarts, when that is not the test
    /// cluster.
    pub database_server: Option<String>,
    /// Each fault these controls allow (broker, database) is injected at least once: one the
    /// schedule did not draw comes after the fault window (the suite's short run).
    pub each_fault: bool,
    /// A three-node cluster's nodes: every other fault is a broker fault
    /// ([`chaos_brokers::FAULTS`](crate::chaos_brokers::FAULTS) in turn).
    pub brokers: Option<BrokerControls>,
}

/// What the run is.
#[derive(Debug, Clone)]
pub struct ChaosSettings {
    /// Seed of the fault schedule and the load.
    pub seed: u64,
    /// How long faults are injected.
    pub duration: Duration,
    /// Broker and database faults.
    pub controls: Controls,
}

/// The judgement of a run.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// Faults injected.
    pub faults: usize,
    /// Transaction requests sent.
    pub requests: usize,
    /// Requests some replica accepted.
    pub accepted: usize,
    /// Accepted requests with an outcome.
    pub outcomes: usize,
    /// Accepted requests without an outcome.
    pub lost: usize,
    /// Requests with more than one distinct outcome id.
    pub duplicated_outcomes: usize,
    /// The sum of all balances equals processed deposits minus withdrawals.
    pub money_conserved: bool,
    /// Alerts e-mailed more than once (by Message-ID).
    pub alerts_duplicated: usize,
    /// Extra copies of outcome records sharing a `ce_id` (allowed).
    pub duplicate_publishes: usize,
    /// Longest time from the end of a fault until a request sent then had its outcome.
    pub max_recovery_s: f64,
    /// Broker faults injected (of `faults`).
    pub broker_faults: usize,
    /// The longest time without a processed transaction while the load ran.
    pub max_stall_s: f64,
    /// What each fault was, with its recovery time.
    pub log: Vec<String>,
}

impl ChaosReport {
    /// `chaos: seed=S faults=F requests=N accepted=A outcomes=A lost=0 ...`
    pub fn line(&self) -> String {
        format!(
            "chaos: seed={} faults={} requests={} accepted={} outcomes={} lost={} \
             duplicated_outcomes={} money_conserved={} alerts_duplicated={} \
             duplicate_publishes={} max_recovery_s={:.1} broker_faults={} max_stall_s={:.1}",
            self.seed,
            self.faults,
            self.requests,
            self.accepted,
            self.outcomes,
            self.lost,
            self.duplicated_outcomes,
            if self.money_conserved { "yes" } else { "no" },
            self.alerts_duplicated,
            self.duplicate_publishes,
            self.max_recovery_s,
            self.broker_faults,
            self.max_stall_s
        )
    }

    /// True when every invariant holds.
    pub fn holds(&self) -> bool {
        self.lost == 0
            && self.duplicated_outcomes == 0
            && self.money_conserved
            && self.alerts_duplicated == 0
    }
}
