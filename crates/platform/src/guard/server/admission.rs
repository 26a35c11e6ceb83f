//! Who gets a connection. Each client address may hold at most so many connections (one client
//! cannot take every slot), and beyond the API's slots a few more are kept for the operational
//! routes ([`crate::foundation::ops`]), so that liveness and readiness probes are answered while the data
//! connections are exhausted and the platform does not restart a busy replica.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections kept beyond the API's slots for the operational routes only.
pub const PROBE_SLOTS: usize = 16;

/// Hands out connection slots (cheap to clone).
#[derive(Debug, Clone)]
pub(super) struct Admission {
    api: Arc<Semaphore>,
    probes: Arc<Semaphore>,
    per_client: usize,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A connection's slot, released when dropped.
#[derive(Debug)]
pub(super) struct Admitted {
    _slot: OwnedSemaphorePermit,
    _client: ClientShare,
    /// Served only the operational routes: it holds a probe slot.
    pub ops_only: bool,
}

/// Why a connection is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Its address already holds the most connections a client may.
    PerClient,
}

impl Admission {
    /// `api` slots for any route, [`PROBE_SLOTS`] more for the operational routes, at most
    /// `per_client` per client address.
    pub fn new(api: usize, per_client: usize) -> Self {
        Self {
            api: Arc::new(Semaphore::new(api)),
            probes: Arc::new(Semaphore::new(PROBE_SLOTS)),
            per_client,
            clients: Arc::default(),
        }
    }

    /// Completes once an API slot is free.
    pub async fn api_slot_free(&self) {
        if let Ok(slot) = Arc::clone(&self.api).acquire_owned().await {
            drop(slot);
        }
    }

    /// A slot for a connection from `client`: an API slot when one is free, else a probe slot;
    /// `None` when both are taken (the caller waits for [`Admission::api_slot_free`]).
    pub fn admit(&self, client: IpAddr) -> Result<Option<Admitted>, Refused> {
        let share = self.share(client)?;
        if let Ok(slot) = Arc::clone(&self.api).try_acquire_owned() {
            return Ok(Some(Admitted {
                _slot: slot,
                _client: share,
                ops_only: false,
            }));
        }
        Ok(Arc::clone(&self.probes)
            .try_acquire_owned()
            .ok()
            .map(|slot| Admitted {
                _slot: slot,
                _client: share,
                ops_only: true,
            }))
    }

    fn share(&self, client: IpAddr) -> Result<ClientShare, Refused> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let held = clients.entry(client).or_default();
        if *held >= self.per_client {
            return Err(Refused::PerClient);
        }
        *held += 1;
        Ok(ClientShare {
            clients: Arc::clone(&self.clients),
            client,
        })
    }
}

/// One connection counted against its client's cap; dropping it gives the share back.
#[derive(Debug)]
struct ClientShare {
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    client: IpAddr,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = clients.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn a_client_gets_at_most_its_share_and_probes_get_slots_beyond_the_api() {
        let admission = Admission::new(3, 2);
        let a1 = admission.admit(ip("10.0.0.1")).unwrap().unwrap();
        let _a2 = admission.admit(ip("10.0.0.1")).unwrap().unwrap();
        assert_eq!(
            admission.admit(ip("10.0.0.1")).unwrap_err(),
            Refused::PerClient
        );
        let b = admission.admit(ip("10.0.0.2")).unwrap().unwrap();
        assert!(!a1.ops_only && !b.ops_only);
        // The API's three slots are taken: the next connection gets a probe slot.
        let probe = admission.admit(ip("10.0.0.3")).unwrap().unwrap();
        assert!(probe.ops_only);
        // A closed connection gives back both its slot and its client's share.
        drop(a1);
        assert!(!admission.admit(ip("10.0.0.1")).unwrap().unwrap().ops_only);
    }

    #[test]
    fn with_every_slot_taken_there_is_none() {
        let admission = Admission::new(1, 100);
        let mut held = vec![admission.admit(ip("10.0.0.1")).unwrap().unwrap()];
        for _ in 0..PROBE_SLOTS {
            held.push(admission.admit(ip("10.0.0.1")).unwrap().unwrap());
        }
        assert!(admission.admit(ip("10.0.0.1")).unwrap().is_none());
    }
}
