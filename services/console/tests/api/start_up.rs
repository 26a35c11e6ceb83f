//! The console binary refuses bad configuration at start-up with one line naming the variable
//! (and never echoes a key).

use std::process::Command;

fn run_with(env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_console"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let output = cmd.output().expect("the console binary runs");
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.success(), text)
}

#[test]
fn bad_settings_stop_the_console_naming_the_variable() {
    for (variable, value) in [
        ("CONSOLE_WINDOW", "0"),
        ("CUSTOMER_SERVICE_URL", "ftp://customers"),
        ("API_KEYS", "dash:admin:console-secret-1"),
        ("API_KEYS", "dash:console:read:console-secret-1"),
        ("API_KEYS", "console-secret-1-0123456789abcdef"),
        ("BIND_ADDRESS", "0.0.0.0"),
        ("PORT", "http"),
    ] {
        let (ok, output) = run_with(&[(variable, value)]);
        assert!(!ok, "{variable}={value} was accepted");
        assert!(output.contains(variable), "{variable}: {output}");
        assert!(!output.contains("console-secret-1"), "{output}");
    }
}

#[test]
fn without_keys_the_console_listens_beyond_loopback_only_when_told_anonymous_is_intended() {
    let (ok, output) = run_with(&[("BIND_ADDRESS", "0.0.0.0")]);
    assert!(!ok, "a keyless console on 0.0.0.0 was accepted");
    assert_eq!(output.trim().lines().count(), 1, "one line: {output}");
    for named in ["BIND_ADDRESS", "API_KEYS", "ALLOW_ANONYMOUS=true"] {
        assert!(output.contains(named), "{named}: {output}");
    }
}

#[test]
fn beyond_loopback_the_console_refuses_to_start_without_the_services_urls() {
    let (ok, output) = run_with(&[
        ("BIND_ADDRESS", "0.0.0.0"),
        ("ALLOW_ANONYMOUS", "true"),
        ("CUSTOMER_SERVICE_URL", "http://customer-service"),
        ("TRANSACTION_SERVICE_URL", "http://transaction-service"),
    ]);
    assert!(
        !ok,
        "a console on 0.0.0.0 without NOTIFICATION_SERVICE_URL was accepted"
    );
    assert_eq!(output.trim().lines().count(), 1, "one line: {output}");
    assert!(output.contains("NOTIFICATION_SERVICE_URL"), "{output}");
}
