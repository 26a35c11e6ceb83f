//! What each service used: CPU time per 1,000 transfers of the end-to-end phase (all its
//! processes together) and peak resident memory (`VmHWM`, its largest process).

use std::collections::BTreeMap;
use std::time::Duration;

use system_tests::{Stack, SERVICES};

/// CPU time used so far by every process of each service, summed per service.
pub fn cpu_by_service(stack: &Stack) -> BTreeMap<&'static str, Duration> {
    SERVICES
        .iter()
        .map(|name| {
            let cpu = stack.processes(name).filter_map(|p| p.cpu_time()).sum();
            (*name, cpu)
        })
        .collect()
}

/// One service's figures.
#[derive(Debug, Clone)]
pub struct Usage {
    /// The service.
    pub name: &'static str,
    /// How many processes it ran.
    pub processes: usize,
    /// CPU seconds per 1,000 transfers over the end-to-end phase.
    pub cpu_s_per_1k: f64,
    /// CPU seconds over the whole run.
    pub cpu_s_total: f64,
    /// The largest `VmHWM` of its processes, in MiB.
    pub peak_mib: Option<f64>,
}

impl Usage {
    /// Each service's figures now, with its CPU time `before` and `after` the end-to-end phase
    /// of `transfers` transfers.
    pub fn of_stack(
        stack: &Stack,
        before: &BTreeMap<&'static str, Duration>,
        after: &BTreeMap<&'static str, Duration>,
        transfers: usize,
    ) -> Vec<Self> {
        let now = cpu_by_service(stack);
        SERVICES
            .iter()
            .map(|name| {
                let phase = after
                    .get(name)
                    .copied()
                    .unwrap_or_default()
                    .saturating_sub(before.get(name).copied().unwrap_or_default());
                Self {
                    name,
                    processes: stack.processes(name).count(),
                    cpu_s_per_1k: phase.as_secs_f64() * 1000.0 / transfers.max(1) as f64,
                    cpu_s_total: now.get(name).copied().unwrap_or_default().as_secs_f64(),
                    peak_mib: stack
                        .processes(name)
                        .filter_map(|p| p.peak_memory_kib())
                        .max()
                        .map(|kib| kib as f64 / 1024.0),
                }
            })
            .collect()
    }

    /// For people: `transaction-service (1) peak memory (VmHWM) 31.7 MiB, CPU 12.4 s, ...`.
    pub fn human(&self) -> String {
        let memory = self
            .peak_mib
            .map_or("?".to_string(), |mib| format!("{mib:.1} MiB"));
        format!(
            "{:<21} ({} process{}) peak memory (VmHWM) {memory:>9}, CPU time {:>6.1} s, {:.2} s per 1,000 transfers end to end",
            self.name,
            self.processes,
            if self.processes == 1 { "" } else { "es" },
            self.cpu_s_total,
            self.cpu_s_per_1k
        )
    }

    /// For machines: `bench_service: name=.. processes=.. cpu_s_per_1k_transfers=.. ...`.
    pub fn line(&self) -> String {
        format!(
            "bench_service: name={} processes={} cpu_s_per_1k_transfers={:.3} cpu_s_total={:.1} vmhwm_mib={}",
            self.name,
            self.processes,
            self.cpu_s_per_1k,
            self.cpu_s_total,
            self.peak_mib.map_or("?".to_string(), |mib| format!("{mib:.1}"))
        )
    }
}
