//! Whether a service is ready (`GET /readyz`), waiting for it, and where the services answer.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::services::{Service, SERVICES};

/// How long a service may take to answer `/readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Prints each service's URL.
pub(super) fn print_urls() {
    for s in SERVICES {
        println!("  {:<22} {}", s.name, s.url());
    }
}

/// Whether `GET /readyz` on 127.0.0.1:`port` answers 200 with every check passing (`ready`, not
/// `degraded`: the consumers have joined and the broker answers).
pub fn ready(port: u16) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    agent
        .get(&format!("http://127.0.0.1:{port}/readyz"))
        .call()
        .map(|mut r| {
            r.status().as_u16() == 200
                && r.body_mut()
                    .read_to_string()
                    .is_ok_and(|body| body.contains(r#""status":"ready""#))
        })
        .unwrap_or(false)
}

/// Waits for a service's `/readyz` to answer 200 while `alive()`.
pub(super) fn wait_ready(s: Service, alive: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if ready(s.port()) {
            println!("{} is ready on {}", s.name, s.url());
            return Ok(());
        }
        if !alive() {
            bail!("{} exited before becoming ready", s.name);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer GET /readyz with 200 within {} s",
                s.name,
                READY_TIMEOUT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(300));
    }
}
