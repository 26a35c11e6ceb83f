//! Where things live: the repository, and the warm cache outside it.

use std::env;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::process;

/// The workspace root (the parent of the xtask crate).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The cache root: `$EMS_CACHE_DIR`, else `$HOME/.cache/event-microservices`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = env::var_os("EMS_CACHE_DIR").filter(|v| !v.is_empty()) {
        return absolute(PathBuf::from(dir));
    }
    let home = env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("event-microservices")
}

/// The local broker's home: `<cache root>/kafka`.
pub fn kafka_home() -> PathBuf {
    cache_root().join("kafka")
}

/// Makes a relative path absolute against the current directory.
pub fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}

/// `cargo` (the one running xtask: `$CARGO`) in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo_root());
    cmd
}

/// `cargo metadata --no-deps` of the workspace, parsed.
pub fn cargo_metadata() -> Result<serde_json::Value> {
    let out = process::run_quiet(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))
        .context("cargo metadata")?;
    let json = out.lines().find(|l| l.starts_with('{')).unwrap_or_default();
    serde_json::from_str(json).context("reading cargo metadata")
}
