//! `cargo xtask up --detach`, `demo` and `down` end to end, as a newcomer runs them: the stack
//! on its embedded defaults (SQLite files, the file mailbox) on ports and a data folder of the
//! test's own (`EMS_STACK_PORT`, `EMS_DATA_DIR`), the suite's broker, and the binaries the suite
//! built (`EMS_BIN_DIR`), so nothing here collides with a stack a developer runs.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder of the service binaries: `EMS_BIN_DIR`, else the profile folder this test was
/// built into (`target/debug`).
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EMS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("profile folder").to_path_buf()
}

/// A first port with the three after it free too.
fn four_free_ports() -> u16 {
    loop {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = first.local_addr().expect("address").port();
        if base > u16::MAX - 4 {
            continue;
        }
        let rest: Vec<_> = (1..4)
            .map(|n| TcpListener::bind(("127.0.0.1", base + n)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            return base;
        }
    }
}

/// Runs `cargo xtask <args>` (the built binary) with the test's stack settings.
fn xtask(args: &[&str], data: &Path, base: u16) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("EMS_DATA_DIR", data)
        .env("EMS_STACK_PORT", base.to_string())
        .env("EMS_BIN_DIR", bin_dir())
        .env("NO_COLOR", "1")
        .env_remove("API_KEYS")
        .env_remove("MAIL_DIR")
        .env_remove("SMTP_URL")
        .output()
        .expect("run xtask");
    println!(
        "--- xtask {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The pids `up --detach` left in `stack.state`.
fn pids(data: &Path) -> Vec<i32> {
    let state = std::fs::read_to_string(data.join("stack.state")).expect("stack.state");
    state
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter_map(|(_, pid)| pid.trim().parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (state Z) has exited.
    !stat.is_empty() && stat.split(") ").nth(1).is_some_and(|s| !s.starts_with('Z'))
}

#[test]
fn up_detached_then_the_demo_then_down_leaves_nothing_running() {
    let data = tempfile::tempdir().expect("data folder");
    let base = four_free_ports();

    let up = xtask(&["up", "--detach"], data.path(), base);
    assert!(up.status.success(), "up --detach failed");
    let up_text = String::from_utf8_lossy(&up.stdout);
    for (n, name) in [
        "customer-service",
        "transaction-service",
        "notification-service",
        "console",
    ]
    .iter()
    .enumerate()
    {
        let url = format!("{name} is ready on http://127.0.0.1:{}", base + n as u16);
        assert!(up_text.contains(&url), "no `{url}` in:\n{up_text}");
    }
    let services = pids(data.path());
    assert_eq!(services.len(), 4, "four services in stack.state");

    let demo = xtask(&["demo"], data.path(), base);
    let demo_text = String::from_utf8_lossy(&demo.stdout);
    let down = xtask(&["down"], data.path(), base);
    assert!(demo.status.success(), "the demo failed:\n{demo_text}");
    assert!(
        demo_text.contains("opened both accounts"),
        "accounts:\n{demo_text}"
    );
    assert!(
        demo_text.contains(": processed, balances"),
        "a processed transfer:\n{demo_text}"
    );
    assert!(
        demo_text.contains(": failed: insufficient"),
        "the overdraft fails:\n{demo_text}"
    );
    assert!(
        demo_text.contains("transaction.processed"),
        "the timeline read back from Kafka:\n{demo_text}"
    );
    let mail = std::fs::read_dir(data.path().join("mail"))
        .map(Iterator::count)
        .unwrap_or(0);
    assert!(
        mail >= 2,
        "welcome e-mails in the stack's mail folder: {mail}"
    );

    assert!(down.status.success(), "down failed");
    assert!(
        String::from_utf8_lossy(&down.stdout).contains("the stack is down"),
        "down says so"
    );
    for pid in services {
        assert!(!alive(pid), "service {pid} still running after down");
    }
    assert!(
        !data.path().join("stack.state").exists(),
        "stack.state removed"
    );
    for port in base..base + 4 {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} free again"
        );
    }
}
