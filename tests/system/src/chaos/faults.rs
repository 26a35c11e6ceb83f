//! The faults of a chaos run: the schedule drawn from the seed, each fault injected and the
//! recovery after it measured, and every replica and broker brought back at the end.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::chaos_brokers::{self, Injected};
use crate::{Lcg, OutcomeClock, Stack};

use super::load::{send, Targets, ACCOUNTS, DRAIN, REPLICAS};
use super::settings::{ChaosReport, ChaosSettings, Command, Controls};

/// Longer than the consumers' session timeout (10 s): the group rebalances around the paused one.
const PAUSE: Duration = Duration::from_secs(12);

/// The faults a schedule draws from.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(&'static str, usize),
    Pause(&'static str, usize),
    Restart(&'static str, usize),
    Broker,
    Postgres,
}

/// The faults: one drawn from the schedule every 3 to 7 s for `settings.duration` (on a
/// cluster, every other one is the next broker fault), each followed by a probe request whose
/// time to its outcome is the recovery time. Returns the broker faults of a cluster.
pub(super) async fn inject_faults(
    stack: &mut Stack,
    settings: &ChaosSettings,
    targets: &Targets,
    accounts: &[String],
    report: &mut ChaosReport,
) -> Vec<Injected> {
    let mut injected = Vec::new();
    let mut clock = OutcomeClock::start(&stack.kafka);
    let mut schedule = Lcg::new(settings.seed);
    let started = Instant::now();
    let mut probe = 0usize;
    let mut owed = owed_faults(&settings.controls);
    loop {
        let in_window = started.elapsed() < settings.duration;
        if in_window {
            tokio::time::sleep(Duration::from_secs(3 + schedule.below(5))).await;
        }
        let what = match &settings.controls.brokers {
            Some(brokers) if in_window && report.faults % 2 == 1 => {
                let fault = chaos_brokers::FAULTS[report.broker_faults % 4];
                let done = chaos_brokers::inject(fault, &stack.kafka, brokers).await;
                report.broker_faults += 1;
                injected.push(done.clone());
                done.what
            }
            _ => {
                let fault = if in_window {
                    draw(&mut schedule, &settings.controls)
                } else if let Some(fault) = owed.pop() {
                    fault
                } else {
                    break;
                };
                owed.retain(|o| std::mem::discriminant(o) != std::mem::discriminant(&fault));
                report.broker_faults += usize::from(matches!(fault, Fault::Broker));
                inject(stack, fault, &settings.controls).await
            }
        };
        report.faults += 1;
        // Recovery: a request sent now, until its outcome is read.
        probe += 1;
        let id = format!("probe-{probe}");
        let body = json!({"transactionId": id, "from": accounts[probe % ACCOUNTS],
                          "to": accounts[(probe + 1) % ACCOUNTS], "amount": "0.01"});
        let recovering = Instant::now();
        let recovery = if send(
            &targets.client,
            &targets.transactions,
            "/transactions",
            &body,
            &targets.ledger,
        )
        .await
        {
            let seen = clock.wait_for(std::slice::from_ref(&id), DRAIN).await;
            seen.get(&id)
                .map(|arrival| arrival.at.duration_since(recovering).as_secs_f64())
        } else {
            None
        };
        let recovery = recovery.unwrap_or(f64::INFINITY);
        report.max_recovery_s = report.max_recovery_s.max(recovery);
        let line = format!(
            "fault {}: {what}; recovered in {recovery:.1} s",
            report.faults
        );
        println!("{line}");
        report.log.push(line);
    }
    injected
}

/// The faults a run owes when `controls.each_fault` says each allowed one must come.
fn owed_faults(controls: &Controls) -> Vec<Fault> {
    let mut owed = Vec::new();
    if controls.each_fault {
        if controls.broker_stop.is_some() && controls.broker_start.is_some() {
            owed.push(Fault::Broker);
        }
        if controls.postgres_restart.is_some() {
            owed.push(Fault::Postgres);
        }
    }
    owed
}

/// Brings the brokers of a cluster back, resumes every paused replica and starts every stopped
/// one.
pub(super) async fn revive_all(stack: &mut Stack, controls: &Controls) {
    if let Some(brokers) = &controls.brokers {
        chaos_brokers::revive(brokers).await;
    }
    for (name, count) in REPLICAS {
        for n in 0..count {
            let replica = stack.replica(name, n);
            replica.pause(false);
            replica.start().await;
        }
    }
}

/// The next fault of the schedule (one the controls allow).
fn draw(random: &mut Lcg, controls: &Controls) -> Fault {
    loop {
        let (name, count) = REPLICAS[random.below(REPLICAS.len() as u64) as usize];
        let replica = random.below(count as u64) as usize;
        match random.below(5) {
            0 => return Fault::Kill(name, replica),
            1 => return Fault::Pause(name, replica),
            2 => return Fault::Restart(name, replica),
            3 if controls.broker_stop.is_some() && controls.broker_start.is_some() => {
                return Fault::Broker
            }
            4 if controls.postgres_restart.is_some() => return Fault::Postgres,
            _ => continue,
        }
    }
}

/// Injects `fault` and says what it was.
async fn inject(stack: &mut Stack, fault: Fault, controls: &Controls) -> String {
    match fault {
        Fault::Kill(name, n) => {
            stack.replica(name, n).kill().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            stack.replica(name, n).start().await;
            format!("kill -9 {name}#{n}, started again 2 s later")
        }
        Fault::Pause(name, n) => {
            stack.replica(name, n).pause(true);
            tokio::time::sleep(PAUSE).await;
            stack.replica(name, n).pause(false);
            format!("SIGSTOP {name}#{n} for {} s, then SIGCONT", PAUSE.as_secs())
        }
        Fault::Restart(name, n) => {
            stack.replica(name, n).terminate().await;
            stack.replica(name, n).start().await;
            format!("clean restart of {name}#{n}")
        }
        Fault::Broker => {
            run_control(controls.broker_stop.as_ref()).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            run_control(controls.broker_start.as_ref()).await;
            "broker stopped for 5 s and started".to_string()
        }
        Fault::Postgres => {
            run_control(controls.postgres_restart.as_ref()).await;
            "PostgreSQL restarted".to_string()
        }
    }
}

/// Runs a control command, when there is one.
async fn run_control(command: Option<&Command>) {
    if let Some(command) = command {
        chaos_brokers::run(command).await;
    }
}
