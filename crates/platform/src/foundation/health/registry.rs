//! The shared registry ([`Health`]): whether the broker has come, and the state each consumer
//! and the relay reported, judged by [`Health::checks`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::check::{Check, DEFAULT_STALL};
use super::state::{ConsumerState, RelayState};

/// The shared registry the parts of one service report into (cheap to clone).
#[derive(Debug, Clone)]
pub struct Health {
    pub(super) inner: Arc<Inner>,
}

/// What the parts reported.
#[derive(Debug)]
pub(super) struct Inner {
    stall_after: Duration,
    /// Whether the broker has come (topics created), and the waiters for it.
    broker: watch::Sender<BrokerState>,
    pub(super) consumers: Mutex<BTreeMap<String, ConsumerState>>,
    pub(super) relay: Mutex<Option<RelayState>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BrokerState {
    /// Not reached yet; the last attempt's error.
    Waiting(String),
    Up,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(DEFAULT_STALL)
    }
}

/// The guarded value, also after a panic in another holder.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Health {
    /// A registry in which work may wait without progress for at most `stall_after`.
    pub fn new(stall_after: Duration) -> Self {
        let (broker, _) =
            watch::channel(BrokerState::Waiting("first attempt under way".to_string()));
        Self {
            inner: Arc::new(Inner {
                stall_after,
                broker,
                consumers: Mutex::default(),
                relay: Mutex::default(),
            }),
        }
    }

    /// The broker could not be reached (yet): `error` says why.
    pub fn broker_waiting(&self, error: &str) {
        self.inner
            .broker
            .send_replace(BrokerState::Waiting(error.to_string()));
    }

    /// The broker has come and the topics exist: consumers and the relay may start.
    pub fn broker_up(&self) {
        self.inner.broker.send_replace(BrokerState::Up);
    }

    /// Whether the broker has come.
    pub fn is_broker_up(&self) -> bool {
        *self.inner.broker.borrow() == BrokerState::Up
    }

    /// Completes once the broker has come.
    pub async fn broker_ready(&self) {
        let mut up = self.inner.broker.subscribe();
        // The sender lives as long as `self`: this cannot fail while we wait.
        let _ = up.wait_for(|state| *state == BrokerState::Up).await;
    }

    /// The broker's state as a check: `None` once it has come (then it is checked directly).
    pub fn broker_check(&self) -> Option<Check> {
        match &*self.inner.broker.borrow() {
            BrokerState::Up => None,
            BrokerState::Waiting(error) => Some(Check::failed(format!(
                "waiting for the broker (topics not created yet): {error}"
            ))),
        }
    }

    /// The checks of the consumers (`consumer:<group>`) and the relay (`relay`), as of now.
    pub fn checks(&self) -> Vec<(String, Check)> {
        let stall = self.inner.stall_after;
        let mut checks: Vec<(String, Check)> = lock(&self.inner.consumers)
            .iter()
            .map(|(group, state)| (format!("consumer:{group}"), state.check(stall)))
            .collect();
        if let Some(relay) = &*lock(&self.inner.relay) {
            checks.push(("relay".to_string(), relay.check(stall)));
        }
        checks
    }
}
