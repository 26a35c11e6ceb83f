//! [`Service`]: a service of deploy/services.txt, and [`wait_until`], how the smoke tests wait
//! for one.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// A service of deploy/services.txt.
#[derive(Clone)]
pub struct Service {
    /// Its name (`customer-service`, …, `console`).
    pub name: String,
    /// Its default port.
    pub port: u16,
}

impl Service {
    /// The tag the build gives its image (the one docker-compose.yml uses).
    pub fn image(&self) -> String {
        format!("event-microservices/{}:local", self.name)
    }
}

/// Polls `check` every 500 ms until it returns true or `timeout` passes.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
