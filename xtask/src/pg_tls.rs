//! TLS for the private PostgreSQL cluster, as the broker has it: a local CA and a server
//! certificate generated once with `rcgen` (see [`crate::kafka::issue_certificate`]), and
//! `ems-tls.conf` turning `ssl = on`, included from `postgresql.conf` on every start (so a cluster
//! created before has TLS on from its next start). A server with `ssl = on` still accepts
//! plaintext connections.
//!
//! Files (under `<cluster folder>/tls/`):
//! - `ca.pem`: the CA certificate the tests trust (`TEST_DATABASE_CA`);
//! - `ca-key.pem`: the CA's private key (0600);
//! - `server.pem`, `server-key.pem` (0600, owned by the server's OS user): the server's
//!   certificate, for `127.0.0.1` only, so that `localhost` is a wrong host name to the tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::process::{self, write_file};

/// The name the server's certificate holds.
const SERVER_NAME: &str = "127.0.0.1";

/// The cluster's settings file for TLS, in its data directory.
const CONF: &str = "ems-tls.conf";

/// Paths of the cluster's TLS material.
pub struct TlsFiles {
    /// CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files under `dir`.
    pub fn under(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        }
    }
}

/// Turns TLS on for the cluster in `data`: generates the files under `dir` when any is missing
/// (the server's key owned by `owner`, the OS user the server runs as, when given), writes
/// `ems-tls.conf` and includes it from `postgresql.conf` (once).
pub fn enable(data: &Path, dir: &Path, owner: Option<&str>) -> Result<TlsFiles> {
    let files = TlsFiles::under(dir);
    if !(files.ca_cert.is_file() && files.cert.is_file() && files.key.is_file()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let issued = crate::kafka::issue_certificate(&[SERVER_NAME])?;
        write_file(&dir.join("ca-key.pem"), &issued.ca_key, 0o600)?;
        write_file(&files.key, &issued.key, 0o600)?;
        write_file(&files.cert, &issued.cert, 0o644)?;
        write_file(&files.ca_cert, &issued.ca_cert, 0o644)?;
        if let Some(user) = owner {
            let mut chown = Command::new("chown");
            chown
                .arg(format!("{user}:"))
                .arg(&files.key)
                .arg(&files.cert);
            process::run_quiet(&mut chown)?;
        }
        println!(
            "generated a local CA and PostgreSQL server certificate: {}",
            files.ca_cert.display()
        );
    }
    fs::write(data.join(CONF), conf(&files)).context("writing ems-tls.conf")?;
    let main_conf = data.join("postgresql.conf");
    let text = fs::read_to_string(&main_conf)
        .with_context(|| format!("reading {}", main_conf.display()))?;
    let include = format!("include_if_exists '{CONF}'");
    if !text.lines().any(|l| l.trim() == include) {
        fs::write(&main_conf, format!("{text}\n{include}\n"))
            .with_context(|| format!("writing {}", main_conf.display()))?;
    }
    Ok(files)
}

/// The settings turning TLS on with `files`.
fn conf(files: &TlsFiles) -> String {
    let quoted = |path: &Path| path.display().to_string().replace('\'', "''");
    format!(
        "# Written by `cargo xtask` (xtask/src/pg_tls.rs) at every start.\n\
         ssl = on\n\
         ssl_cert_file = '{}'\n\
         ssl_key_file = '{}'\n",
        quoted(&files.cert),
        quoted(&files.key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_turned_on_once_with_a_certificate_for_127_0_0_1() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("postgresql.conf"), "port = 1\n").unwrap();
        let tls = dir.path().join("tls");
        let files = enable(&data, &tls, None).unwrap();
        let conf = fs::read_to_string(data.join(CONF)).unwrap();
        assert!(conf.contains("\nssl = on\n"), "{conf}");
        let cert = files.cert.display();
        assert!(
            conf.contains(&format!("ssl_cert_file = '{cert}'")),
            "{conf}"
        );
        let key = files.key.display();
        assert!(conf.contains(&format!("ssl_key_file = '{key}'")), "{conf}");
        let key_text = fs::read_to_string(&files.key).unwrap();
        assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----"));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let ca = fs::read_to_string(&files.ca_cert).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        // A second start keeps the certificate and includes the settings once.
        enable(&data, &tls, None).unwrap();
        assert_eq!(fs::read_to_string(&files.ca_cert).unwrap(), ca);
        let main = fs::read_to_string(data.join("postgresql.conf")).unwrap();
        assert_eq!(main.matches("include_if_exists 'ems-tls.conf'").count(), 1);
        assert!(main.starts_with("port = 1\n"));
    }
}
