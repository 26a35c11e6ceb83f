//! A Docker engine to build and run with: Debian's `docker.io` when none is installed, `dockerd`
//! started in the background when none answers (no systemd needed), and the Compose v2 and buildx
//! CLI plugins from Debian trixie when the CLI lacks them (bookworm only has Compose v1).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{apt, paths, process};

/// Where `cargo xtask images` keeps its files (dockerd's log, the trixie package lists, the
/// debootstrap tree while it is imported).
pub fn dir() -> PathBuf {
    paths::cache_root().join("images")
}

/// A `docker` command.
pub fn docker() -> Command {
    Command::new("docker")
}

/// Runs `docker <args>` and returns its trimmed stdout (fails with its output when it fails).
pub fn docker_out(args: &[&str]) -> Result<String> {
    Ok(process::run_quiet(docker().args(args))?.trim().to_string())
}

/// Whether `docker <args>` succeeds (output discarded).
pub fn docker_ok(args: &[&str]) -> bool {
    docker()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether an engine answers the CLI.
fn answers() -> bool {
    docker_ok(&["version", "--format", "{{.Server.Version}}"])
}

/// Makes sure an engine answers and the CLI has buildx and compose.
pub fn ensure() -> Result<()> {
    if !answers() {
        if !process::on_path("docker") || !process::on_path("dockerd") {
            apt::ensure(&["docker.io"])?;
        }
        start_dockerd()?;
    }
    ensure_plugins()
}

/// Starts `dockerd` detached and waits for it to answer. It is left running: the images and the
/// build cache live in it, and the next run reuses them (stop it with `kill <pid>`).
fn start_dockerd() -> Result<()> {
    if !process::is_root() {
        bail!("no Docker engine answers, and starting dockerd needs root (run `sudo dockerd &`)");
    }
    let dir = dir();
    fs::create_dir_all(&dir)?;
    let log = dir.join("dockerd.log");
    let pid = process::spawn_detached(&mut Command::new("dockerd"), &log)?;
    fs::write(dir.join("dockerd.pid"), format!("{pid}\n"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers() {
        if !process::is_alive(pid) || Instant::now() >= deadline {
            bail!(
                "dockerd did not come up; the end of {}:\n{}",
                log.display(),
                process::tail(&log, 20)
            );
        }
        thread::sleep(Duration::from_millis(300));
    }
    println!(
        "no Docker engine answered: started dockerd (pid {pid}, log {}); it keeps running for \
         the next runs (stop it with `kill {pid}`)",
        log.display()
    );
    Ok(())
}

/// Installs the buildx and compose plugins from Debian trixie when `docker buildx` / `docker
/// compose` do not answer.
fn ensure_plugins() -> Result<()> {
    let missing: Vec<&str> = [("buildx", "docker-buildx"), ("compose", "docker-compose")]
        .into_iter()
        .filter(|(plugin, _)| !docker_ok(&[plugin, "version"]))
        .map(|(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !process::is_root() {
        bail!(
            "the Docker CLI lacks {}: install them (Debian trixie's packages work on bookworm)",
            missing.join(" and ")
        );
    }
    println!(
        "installing {} from Debian trixie (bookworm has Compose v1 only)",
        missing.join(" ")
    );
    let debs = download_from_trixie(&missing)?;
    let mut dpkg = Command::new("dpkg");
    dpkg.arg("-i").args(&debs);
    process::run_quiet(&mut dpkg)?;
    Ok(())
}

/// Downloads `packages` from trixie with a private apt configuration (the system's sources stay
/// as they are) and returns the .deb files.
fn download_from_trixie(packages: &[&str]) -> Result<Vec<PathBuf>> {
    let dir = dir().join("trixie-apt");
    fs::create_dir_all(dir.join("lists/partial"))?;
    fs::create_dir_all(dir.join("cache/archives/partial"))?;
    let sources = dir.join("sources.list");
    fs::write(
        &sources,
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} trixie main\n",
            debian_mirror()
        ),
    )?;
    let options = [
        format!("Dir::Etc::SourceList={}", sources.display()),
        "Dir::Etc::SourceParts=/dev/null".to_string(),
        format!("Dir::State::Lists={}", dir.join("lists").display()),
        format!("Dir::Cache={}", dir.join("cache").display()),
        "APT::Sandbox::User=root".to_string(),
    ];
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        for o in &options {
            cmd.args(["-o", o]);
        }
        cmd.args(args).current_dir(&dir);
        cmd
    };
    process::run_quiet(&mut apt(&["update", "-qq"]))?;
    let mut download = apt(&["download", "-qq"]);
    download.args(packages);
    process::run_quiet(&mut download)?;
    let mut debs = Vec::new();
    for package in packages {
        let prefix = format!("{package}_");
        let found = fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_deb_of(p, &prefix))
            .max()
            .with_context(|| format!("apt-get download left no {package} .deb"))?;
        debs.push(found);
    }
    Ok(debs)
}

fn is_deb_of(path: &Path, prefix: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
}

/// The Debian mirror of the system's apt sources (the archive, not the security one), else
/// deb.debian.org.
pub fn debian_mirror() -> String {
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        texts.extend(files.iter().filter_map(|f| fs::read_to_string(f).ok()));
    }
    texts
        .iter()
        .find_map(|t| mirror_in(t))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

/// The first Debian archive URL (`…/debian`) of a sources.list or deb822 .sources text.
fn mirror_in(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .map(|w| w.trim_end_matches('/'))
        .find(|w| (w.starts_with("http://") || w.starts_with("https://")) && w.ends_with("/debian"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_comes_from_either_sources_format() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/2025\n\
                      URIs: http://mirror.example/debian/\nSuites: bookworm\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://mirror.example/debian")
        );
        let list = "deb http://deb.debian.org/debian-security bookworm-security main\n\
                    deb [arch=amd64] https://m.example/debian bookworm main\n";
        assert_eq!(mirror_in(list).as_deref(), Some("https://m.example/debian"));
        assert_eq!(
            mirror_in("deb https://nodesource.example/node_20.x nodistro main"),
            None
        );
    }
}
