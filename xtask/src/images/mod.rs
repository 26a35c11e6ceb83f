//! `cargo xtask images [--smoke] [--compose-smoke]`: builds the images of the three services and
//! the console from deploy/docker/Dockerfile.<service> and prints each one's size and build time.
//!
//! It works on a machine with no engine and no registry: it installs and starts one
//! ([`engine`]), and when the official base images cannot be pulled it makes local ones (Debian
//! bookworm from debootstrap, a Rust builder on it with Debian's toolchain) and passes them as the
//! Dockerfile's RUST_IMAGE / RUNTIME_IMAGE build arguments, whose defaults stay the official tags.
//! `--smoke` runs the containers ([`smoke`]); `--compose-smoke` the compose file ([`compose`]).

mod build;
mod compose;
mod engine;
mod service;
mod smoke;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{apt, paths, process};
use build::{ca_secret, docker_build, Bases, LOCAL_DEBIAN};
use engine::{docker, docker_ok, docker_out};
pub use service::Service;

/// The local Rust builder (deploy/docker/local/rust.Dockerfile on [`LOCAL_DEBIAN`]).
const LOCAL_RUST: &str = "ems-local/rust:bookworm";
/// The most a runtime image may weigh (bytes, as `docker images` counts: 1 MB = 10^6).
const MAX_IMAGE_BYTES: u64 = 100_000_000;

/// What to run after the build (the options of `cargo xtask images`).
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Run the containers against the local broker and PostgreSQL (health, non-root, seed
    /// flow, SIGTERM, volume kept).
    #[arg(long)]
    pub smoke: bool,
    /// Bring docker-compose.yml up with local stand-ins for the images it pulls and run the
    /// seed flow.
    #[arg(long)]
    pub compose_smoke: bool,
}

/// Runs `cargo xtask images`.
pub fn run(options: &Options) -> Result<()> {
    let started = Instant::now();
    engine::ensure()?;
    let services = services()?;
    let bases = bases()?;
    let mut built = Vec::new();
    for service in &services {
        built.push(build(service, &bases)?);
    }
    let mut too_big = Vec::new();
    for (service, secs, bytes) in &built {
        println!(
            "image {:<46} {:>6.1} MB   built in {secs:.0} s",
            service.image(),
            *bytes as f64 / 1e6
        );
        if *bytes > MAX_IMAGE_BYTES {
            too_big.push(service.image());
        }
    }
    println!(
        "images: {} built in {:.0} s (bases: {})",
        built.len(),
        started.elapsed().as_secs_f64(),
        if bases.local {
            "made locally"
        } else {
            "official"
        }
    );
    if !too_big.is_empty() {
        bail!("over the 100 MB target: {}", too_big.join(", "));
    }
    if options.smoke {
        smoke::run(&services)?;
    }
    if options.compose_smoke {
        compose::run(&bases)?;
    }
    Ok(())
}

/// The services of deploy/services.txt.
pub fn services() -> Result<Vec<Service>> {
    let path = paths::repo_root().join("deploy/services.txt");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_services(&text)
}

fn parse_services(text: &str) -> Result<Vec<Service>> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(name), Some(port)) = (words.next(), words.next()) else {
            bail!("deploy/services.txt: bad line {line:?}");
        };
        let port = port
            .parse()
            .with_context(|| format!("deploy/services.txt: bad port in {line:?}"))?;
        out.push(Service {
            name: name.to_string(),
            port,
        });
    }
    Ok(out)
}

/// The official bases when they are present or can be pulled, else the local ones (made when
/// missing). `EMS_IMAGES_BASE=local` skips the pull.
fn bases() -> Result<Bases> {
    let dockerfile = fs::read_to_string(paths::repo_root().join("deploy/docker/Dockerfile"))?;
    let rust = arg_default(&dockerfile, "RUST_IMAGE").context("no ARG RUST_IMAGE=…")?;
    let runtime = arg_default(&dockerfile, "RUNTIME_IMAGE").context("no ARG RUNTIME_IMAGE=…")?;
    let local_only = std::env::var("EMS_IMAGES_BASE").is_ok_and(|v| v == "local");
    if !local_only
        && [&rust, &runtime]
            .iter()
            .all(|image| present_or_pulled(image))
    {
        return Ok(Bases {
            rust,
            runtime,
            local: false,
        });
    }
    println!(
        "{rust} / {runtime} cannot be pulled: using local bases {LOCAL_RUST} / {LOCAL_DEBIAN}"
    );
    if !docker_ok(&["image", "inspect", LOCAL_DEBIAN]) {
        debootstrap_image()?;
    }
    let started = Instant::now();
    let local = paths::repo_root().join("deploy/docker/local");
    let mut cmd = docker();
    cmd.args(["build", "--build-arg"])
        .arg(format!("BASE_IMAGE={LOCAL_DEBIAN}"))
        .args(["-t", LOCAL_RUST, "-f"])
        .arg(local.join("rust.Dockerfile"))
        .arg(&local);
    docker_build(cmd, "rust-builder")?;
    println!(
        "base {LOCAL_RUST}: ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Bases {
        rust: LOCAL_RUST.to_string(),
        runtime: LOCAL_DEBIAN.to_string(),
        local: true,
    })
}

/// The default of `ARG <name>=<default>` in a Dockerfile.
fn arg_default(dockerfile: &str, name: &str) -> Option<String> {
    dockerfile.lines().find_map(|l| {
        l.trim()
            .strip_prefix("ARG ")?
            .trim()
            .strip_prefix(name)?
            .strip_prefix('=')
            .map(|v| v.trim().to_string())
    })
}

fn present_or_pulled(image: &str) -> bool {
    docker_ok(&["image", "inspect", image]) || docker_ok(&["pull", "-q", image])
}

/// Debian bookworm (minbase) from debootstrap, trimmed like the official slim image (no docs,
/// man pages, locales or apt lists; dpkg keeps them out later too), imported as [`LOCAL_DEBIAN`].
fn debootstrap_image() -> Result<()> {
    apt::ensure(&["debootstrap"])?;
    let started = Instant::now();
    let root = engine::dir().join("rootfs");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::create_dir_all(engine::dir())?;
    let mirror = engine::debian_mirror();
    println!("making {LOCAL_DEBIAN} with debootstrap from {mirror}…");
    let log = engine::dir().join("debootstrap.log");
    let mut cmd = Command::new("debootstrap");
    cmd.args(["--variant=minbase", "bookworm"])
        .arg(&root)
        .arg(&mirror)
        .stdout(fs::File::create(&log)?)
        .stderr(fs::File::create(&log)?.try_clone()?);
    if !cmd.status()?.success() {
        bail!(
            "debootstrap failed; the end of {}:\n{}",
            log.display(),
            process::tail(&log, 20)
        );
    }
    slim(&root, &mirror)?;
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()?;
    let tar_out = tar.stdout.take().context("tar's stdout")?;
    let import = docker()
        .args(["import", "-c", "CMD [\"bash\"]", "-", LOCAL_DEBIAN])
        .stdin(tar_out)
        .stdout(Stdio::null())
        .status()?;
    if !tar.wait()?.success() || !import.success() {
        bail!("importing {} as {LOCAL_DEBIAN} failed", root.display());
    }
    fs::remove_dir_all(&root)?;
    println!(
        "base {LOCAL_DEBIAN}: made in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the official slim image leaves out, and the suites it reads (the Rust builder needs
/// bookworm-security's rustc-web).
fn slim(root: &Path, mirror: &str) -> Result<()> {
    for dir in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "usr/share/info",
        "var/lib/apt/lists",
        "var/cache/apt",
    ] {
        let dir = root.join(dir);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
    }
    fs::create_dir_all(root.join("var/lib/apt/lists/partial"))?;
    fs::create_dir_all(root.join("var/cache/apt/archives/partial"))?;
    fs::write(
        root.join("etc/dpkg/dpkg.cfg.d/docker"),
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n\
         path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n\
         path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n",
    )?;
    fs::write(
        root.join("etc/apt/apt.conf.d/docker-clean"),
        "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true\"; };\n\
         Dir::Cache::pkgcache \"\";\nDir::Cache::srcpkgcache \"\";\n",
    )?;
    let security = mirror
        .strip_suffix("/debian")
        .map(|m| format!("{m}/debian-security"))
        .unwrap_or_else(|| "http://deb.debian.org/debian-security".into());
    fs::write(
        root.join("etc/apt/sources.list"),
        format!(
            "deb {mirror} bookworm main\ndeb {mirror} bookworm-updates main\n\
             deb {security} bookworm-security main\n"
        ),
    )?;
    Ok(())
}

/// Builds one service's image; returns it with the seconds it took and its size in bytes.
fn build(service: &Service, bases: &Bases) -> Result<(Service, f64, u64)> {
    let started = Instant::now();
    let root = paths::repo_root();
    let mut cmd = docker();
    cmd.arg("build")
        .args(build_args(bases))
        .arg("-f")
        .arg(root.join(format!("deploy/docker/Dockerfile.{}", service.name)))
        .args(["-t", &service.image()])
        .arg(&root);
    docker_build(cmd, &service.name)?;
    let secs = started.elapsed().as_secs_f64();
    let size = docker_out(&["image", "inspect", "-f", "{{.Size}}", &service.image()])?;
    let bytes = size
        .parse()
        .with_context(|| format!("image size {size:?}"))?;
    Ok((service.clone(), secs, bytes))
}

/// `--build-arg RUST_IMAGE=… --build-arg RUNTIME_IMAGE=…` and the CA secret.
fn build_args(bases: &Bases) -> Vec<String> {
    let mut args = vec![
        "--build-arg".into(),
        format!("RUST_IMAGE={}", bases.rust),
        "--build-arg".into(),
        format!("RUNTIME_IMAGE={}", bases.runtime),
    ];
    args.extend(ca_secret());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dockerfile_defaults_are_read() {
        let text = "# c\nARG RUST_IMAGE=rust:1.95-slim-bookworm\nARG RUNTIME_IMAGE=debian:bookworm-slim\nARG SERVICE\n";
        assert_eq!(
            arg_default(text, "RUST_IMAGE").as_deref(),
            Some("rust:1.95-slim-bookworm")
        );
        assert_eq!(
            arg_default(text, "RUNTIME_IMAGE").as_deref(),
            Some("debian:bookworm-slim")
        );
        assert_eq!(arg_default(text, "SERVICE"), None);
    }

    #[test]
    fn services_come_from_the_table() {
        let s = parse_services("# x\ncustomer-service 3001 postgres\n\nconsole 3004 -\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].name.as_str(), s[1].port), ("console", 3004));
        assert_eq!(s[0].image(), "event-microservices/customer-service:local");
        assert!(parse_services("broken").is_err());
    }
}
