//! Installs missing Debian packages (only those missing; `apt-get update` once, first).

use std::process::Command;

use anyhow::{bail, Result};

use crate::process;

/// The headless browser the console's browser test drives (Debian's Chromium and its WebDriver).
pub const BROWSER: [&str; 2] = ["chromium", "chromium-driver"];

/// Whether a Debian package is installed.
pub fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

/// Installs those of `packages` that are missing, plus Java and Maven when they are not on
/// `PATH` (the local Kafka broker needs them).
pub fn ensure_with_kafka(packages: &[&str]) -> Result<()> {
    let mut packages = packages.to_vec();
    if !process::on_path("java") {
        packages.push("openjdk-17-jre-headless");
    }
    if !process::on_path("mvn") {
        packages.push("maven");
    }
    ensure(&packages)
}

/// Installs those of `packages` that are missing. Without root it uses `sudo -n` when
/// available and otherwise fails with the command to run.
pub fn ensure(packages: &[&str]) -> Result<()> {
    if !process::on_path("dpkg-query") {
        eprintln!(
            "note: not a Debian system; make sure these are installed: {}",
            packages.join(" ")
        );
        return Ok(());
    }
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("installing Debian packages: {}", missing.join(" "));
    let sudo: &[&str] = if process::is_root() {
        &[]
    } else if process::on_path("sudo") {
        &["sudo", "-n"]
    } else {
        bail!(
            "missing Debian packages; run as root: apt-get update && apt-get install -y {}",
            missing.join(" ")
        );
    };
    let apt = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.to_vec();
        all.push("apt-get");
        all.extend_from_slice(args);
        let mut cmd = Command::new(all[0]);
        cmd.args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null());
        cmd
    };
    process::run_quiet(&mut apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(&missing);
    process::run_quiet(&mut install)?;
    Ok(())
}
