//! The live feed: every recorded or updated delivery is broadcast to the server-sent-event
//! streams, and new deliveries wake the sender.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, Notify};

use crate::domain::Delivery;

/// Updates kept for slow stream readers before they skip ahead.
const CAPACITY: usize = 1024;

/// Fan-out of delivery updates, and the sender's wake-up call.
#[derive(Debug, Clone)]
pub struct Hub {
    updates: broadcast::Sender<Delivery>,
    wake: Arc<Notify>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// A hub with no listeners.
    pub fn new() -> Self {
        Self {
            updates: broadcast::channel(CAPACITY).0,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Tells the streams about `delivery` (nobody listening is fine).
    pub fn publish(&self, delivery: Delivery) {
        let _ = self.updates.send(delivery);
    }

    /// Deliveries were recorded: tells the streams and wakes the sender.
    pub fn recorded(&self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        for delivery in deliveries {
            self.publish(delivery);
        }
        self.wake.notify_one();
    }

    /// A new listener of updates.
    pub fn subscribe(&self) -> broadcast::Receiver<Delivery> {
        self.updates.subscribe()
    }

    /// The updates from now on, of customer `only` (of everyone when `None`); a reader too slow
    /// to keep up skips what it missed.
    pub fn updates(&self, only: Option<String>) -> impl Stream<Item = Delivery> {
        futures::stream::unfold(self.subscribe(), |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(delivery) => return Some((delivery, receiver)),
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::debug!(skipped, "slow stream reader skipped updates");
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |delivery| {
            let wanted = match &only {
                Some(customer_id) => *customer_id == delivery.customer_id,
                None => true,
            };
            std::future::ready(wanted)
        })
    }

    /// Completes when deliveries were recorded since the last call.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}
