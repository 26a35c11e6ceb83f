//! `up` in the foreground: the services' output prefixed with their names and copied to their
//! logs, until Ctrl-C or until one of them exits.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

use super::ready::{print_urls, wait_ready};
use super::services::{service_command, Service, SERVICES};
use super::state::Setup;
use super::stop::stop_pids;
use crate::logs::RotatingLog;
use crate::process;

/// Starts the services in the foreground and follows their output until Ctrl-C or until one
/// exits; then stops them.
pub(super) fn up_attached(bin_dir: &Path, setup: &Setup, logs: &Path, brokers: &str) -> Result<()> {
    let (tx, rx) = mpsc::channel::<Event>();
    {
        let tx = tx.clone();
        ctrlc::set_handler(move || {
            let _ = tx.send(Event::Signal);
        })
        .context("installing the Ctrl-C handler")?;
    }
    let mut children: Vec<(Service, Child)> = Vec::new();
    let mut outcome = spawn_attached(bin_dir, setup, logs, brokers, &mut children);
    if outcome.is_ok() {
        for (s, child) in children.iter_mut() {
            let pid = child.id();
            if let Err(e) = wait_ready(*s, || process::is_alive(pid)) {
                outcome = Err(e);
                break;
            }
        }
    }
    if outcome.is_ok() {
        println!("the stack is up:");
        print_urls();
        println!(
            "logs follow (also in {}); Ctrl-C stops everything",
            logs.display()
        );
        outcome = watch(&children, tx, &rx);
    }
    let pids: Vec<(String, u32)> = children
        .iter()
        .map(|(s, c)| (s.name.to_string(), c.id()))
        .collect();
    stop_pids(&pids);
    for (_, mut c) in children {
        let _ = c.wait();
    }
    outcome
}

/// Starts the services in their own process groups, their output prefixed with their names
/// (coloured on a terminal) and copied to their log files; stops at the first that fails to
/// start (those started are in `children`).
fn spawn_attached(
    bin_dir: &Path,
    setup: &Setup,
    logs: &Path,
    brokers: &str,
    children: &mut Vec<(Service, Child)>,
) -> Result<()> {
    let width = SERVICES.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let limits = setup.logs;
    let colour = std::io::stdout().is_terminal();
    for (i, s) in SERVICES.into_iter().enumerate() {
        let mut cmd = service_command(bin_dir, setup, brokers, s)?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        // Own process group: Ctrl-C reaches only us, and we stop the services in order.
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", s.name))?;
        let prefix = if colour {
            format!("\x1b[{}m{:<width$} |\x1b[0m ", 32 + i, s.name)
        } else {
            format!("{:<width$} | ", s.name)
        };
        let log = logs.join(format!("{}.log", s.name));
        let log = Arc::new(Mutex::new(RotatingLog::open(&log, limits)?));
        if let Some(out) = child.stdout.take() {
            spawn_prefixer(out, prefix.clone(), Arc::clone(&log));
        }
        if let Some(err) = child.stderr.take() {
            spawn_prefixer(err, prefix, log);
        }
        children.push((s, child));
    }
    Ok(())
}

/// Waits for Ctrl-C or for a service to exit on its own (which stops the rest: an error).
fn watch(
    children: &[(Service, Child)],
    tx: mpsc::Sender<Event>,
    rx: &mpsc::Receiver<Event>,
) -> Result<()> {
    let pids: Vec<(Service, u32)> = children.iter().map(|(s, c)| (*s, c.id())).collect();
    thread::spawn(move || loop {
        for (s, pid) in &pids {
            if !process::is_alive(*pid) {
                let _ = tx.send(Event::Exited(s.name));
                return;
            }
        }
        thread::sleep(Duration::from_millis(500));
    });
    match rx.recv() {
        Ok(Event::Exited(name)) => Err(anyhow::anyhow!("{name} exited; stopping the stack")),
        Ok(Event::Signal) | Err(_) => {
            println!("\nstopping the stack…");
            Ok(())
        }
    }
}

/// What ends an attached stack.
enum Event {
    Signal,
    Exited(&'static str),
}

/// Copies `from` line by line to stdout with `prefix`, and to the (rotating) log file.
fn spawn_prefixer(from: impl Read + Send + 'static, prefix: String, log: Arc<Mutex<RotatingLog>>) {
    thread::spawn(move || {
        let reader = BufReader::new(from);
        for line in reader.split(b'\n').map_while(|l| l.ok()) {
            let text = String::from_utf8_lossy(&line);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let _ = writeln!(out, "{prefix}{text}");
            if let Ok(mut log) = log.lock() {
                let _ = log.write_line(process::strip_ansi(&text).as_bytes());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use crate::process;

    #[test]
    fn ansi_sequences_are_stripped() {
        assert_eq!(
            process::strip_ansi("\x1b[2ma\x1b[0m b \x1b[32mINFO\x1b[0m"),
            "a b INFO"
        );
    }
}
