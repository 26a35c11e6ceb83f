//! What building an image takes, shared by the image builds and the compose smoke test: the base
//! images ([`Bases`]), the build secret of the host's trust store, and `docker build` with its log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::engine;
use crate::process;

/// The local Debian base, made with debootstrap when `debian:bookworm-slim` cannot be pulled.
pub const LOCAL_DEBIAN: &str = "ems-local/debian:bookworm-slim";
/// The host's trust store, given to the steps that download crates as the build secret `ca`
/// (outbound HTTPS may pass a TLS-inspecting proxy); never part of an image.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The base images a build uses.
pub struct Bases {
    /// RUST_IMAGE.
    pub rust: String,
    /// RUNTIME_IMAGE.
    pub runtime: String,
    /// True when they are the locally made ones.
    pub local: bool,
}

/// `--secret id=ca,src=<the host's trust store>` when there is one.
pub fn ca_secret() -> Vec<String> {
    if Path::new(CA_BUNDLE).is_file() {
        vec!["--secret".into(), format!("id=ca,src={CA_BUNDLE}")]
    } else {
        Vec::new()
    }
}

/// Runs a `docker build` with its progress in `<images dir>/build-<name>.log`; on failure the
/// error carries the end of that log.
pub fn docker_build(mut cmd: Command, name: &str) -> Result<()> {
    fs::create_dir_all(engine::dir())?;
    let log: PathBuf = engine::dir().join(format!("build-{name}.log"));
    let out = fs::File::create(&log)?;
    cmd.arg("--progress=plain")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let status = cmd.status().context("starting docker build")?;
    if !status.success() {
        bail!(
            "docker build of {name} failed; the end of {}:\n{}",
            log.display(),
            process::tail(&log, 40)
        );
    }
    Ok(())
}
