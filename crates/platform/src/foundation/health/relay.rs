//! What the outbox relay reports into [`Health`]: its lease, its backlog, its progress.

use std::time::{Duration, Instant};

use super::registry::{lock, Health};
use super::stall;
use super::state::{Phase, RelayState};

impl Health {
    /// Registers the outbox relay (waiting for the broker).
    pub fn register_relay(&self) {
        *lock(&self.inner.relay) = Some(RelayState::new(Phase::WaitingForBroker));
    }

    fn relay(&self, update: impl FnOnce(&mut RelayState)) {
        let mut relay = lock(&self.inner.relay);
        let state = relay.get_or_insert_with(|| RelayState::new(Phase::Running));
        update(state);
    }

    /// The relay runs (as holder or standby).
    pub fn relay_started(&self) {
        self.relay(|r| {
            r.phase = Phase::Running;
            r.progress_at = Instant::now();
        });
    }

    /// The relay took (`true`) or lost the outbox lease.
    pub fn relay_lease(&self, held: bool) {
        self.relay(|r| {
            r.holds_lease = held;
            r.progress_at = Instant::now();
        });
    }

    /// The relay counted `pending` unsent rows.
    pub fn relay_backlog(&self, pending: i64) {
        self.relay(|r| {
            r.pending = pending;
            if pending == 0 {
                r.progress_at = Instant::now();
            }
        });
    }

    /// The relay published rows.
    pub fn relay_published(&self) {
        self.relay(|r| r.progress_at = Instant::now());
    }

    /// How long the lease holder has had rows waiting (`in_flight`: deliveries it awaits, or
    /// an unsent backlog) without publishing any; reported as `event_stall_seconds{stage="relay"}`.
    pub fn relay_stall(&self, in_flight: bool) -> Duration {
        let stalled = lock(&self.inner.relay)
            .as_ref()
            .map_or(Duration::ZERO, |r| {
                let waiting = in_flight || r.pending > 0;
                if r.phase == Phase::Running && r.holds_lease && waiting {
                    r.progress_at.elapsed()
                } else {
                    Duration::ZERO
                }
            });
        stall::report("relay", stalled);
        stalled
    }

    /// The relay has stopped.
    pub fn relay_stopped(&self) {
        self.relay(|r| r.phase = Phase::Stopped);
    }
}
