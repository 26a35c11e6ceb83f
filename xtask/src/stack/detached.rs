//! `up --detach`: the services started in the background, their pids in `stack.state`, their
//! logs in rotated files; returns once all are ready.

use std::fs;
use std::path::Path;

use anyhow::Result;

use super::ready::{print_urls, wait_ready};
use super::services::{service_command, SERVICES};
use super::state::{state_file, Setup, State};
use super::stop::stop_pids;
use crate::process;

/// Starts the services in the background (pids in the state file, logs rotated) and waits
/// until each is ready; stops them all when one fails.
pub(super) fn up_detached(
    bin_dir: &Path,
    setup: &Setup,
    logs: &Path,
    brokers: &str,
    broker_started: bool,
) -> Result<State> {
    let state_file = state_file(&setup.data);
    let mut st = State {
        services: Vec::new(),
        broker_started,
    };
    for s in SERVICES {
        let log = logs.join(format!("{}.log", s.name));
        let mut cmd = service_command(bin_dir, setup, brokers, s)?;
        cmd.env("NO_COLOR", "1");
        let spawned = crate::logs::spawn_writer(&log, setup.logs)
            .and_then(|(out, err)| process::spawn_detached_to(&mut cmd, out, err));
        match spawned {
            Ok(pid) => st.services.push((s.name.to_string(), pid)),
            Err(e) => {
                stop_pids(&st.services);
                return Err(e);
            }
        }
        process::write_file(&state_file, &st.render(), 0o644)?;
    }
    for (s, (_, pid)) in SERVICES.iter().zip(&st.services) {
        if let Err(e) = wait_ready(*s, || process::is_alive(*pid)) {
            eprintln!(
                "--- last lines of {}:",
                logs.join(format!("{}.log", s.name)).display()
            );
            eprintln!(
                "{}",
                process::tail(&logs.join(format!("{}.log", s.name)), 30)
            );
            stop_pids(&st.services);
            let _ = fs::remove_file(&state_file);
            return Err(e);
        }
    }
    println!("the stack is up (detached); logs in {}", logs.display());
    print_urls();
    println!("stop it with: cargo xtask down");
    Ok(st)
}
