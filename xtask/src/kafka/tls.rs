//! A private CA and the broker's TLS certificate, generated once with `rcgen` (pure Rust).
//!
//! Files (under `<kafka home>/tls/`):
//! - `ca.pem`: the CA certificate clients trust (`KAFKA_CA_LOCATION`, `ssl.ca.location`);
//! - `ca-key.pem`: the CA's private key (0600), kept to re-issue the broker certificate;
//! - `broker-keystore.pem`: the broker's PKCS#8 private key, its certificate and the CA, the shape
//!   Kafka reads with `ssl.keystore.type=PEM`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::process::write_file;

/// Paths of the generated TLS material.
pub struct TlsFiles {
    /// CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// Broker keystore: PKCS#8 key + certificate chain (PEM).
    pub keystore: PathBuf,
}

/// Returns the TLS files under `dir`, generating them when any is missing.
pub fn ensure(dir: &Path) -> Result<TlsFiles> {
    let files = TlsFiles {
        ca_cert: dir.join("ca.pem"),
        keystore: dir.join("broker-keystore.pem"),
    };
    if files.ca_cert.is_file() && files.keystore.is_file() {
        return Ok(files);
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_pem, ca_key_pem, keystore_pem) = generate()?;
    write_file(&dir.join("ca-key.pem"), &ca_key_pem, 0o600)?;
    write_file(&files.keystore, &keystore_pem, 0o600)?;
    write_file(&files.ca_cert, &ca_pem, 0o644)?;
    println!(
        "generated a local CA and broker certificate: {}",
        files.ca_cert.display()
    );
    Ok(files)
}

/// Generates (CA cert PEM, CA key PEM, broker keystore PEM).
fn generate() -> Result<(String, String, String)> {
    let issued = issue(&["localhost", "127.0.0.1"])?;
    // The key is PKCS#8 ("BEGIN PRIVATE KEY"), which Kafka's PEM keystore expects.
    let keystore = format!("{}{}{}", issued.key, issued.cert, issued.ca_cert);
    Ok((issued.ca_cert, issued.ca_key, keystore))
}

/// A fresh local CA and one server certificate it signed, all PEM.
pub struct Issued {
    /// The CA certificate.
    pub ca_cert: String,
    /// The CA's private key.
    pub ca_key: String,
    /// The server certificate.
    pub cert: String,
    /// The server's private key (PKCS#8, `BEGIN PRIVATE KEY`).
    pub key: String,
}

/// Generates a local CA and a server certificate for `names` (host names or IP addresses),
/// valid from last year for ten years.
pub fn issue(names: &[&str]) -> Result<Issued> {
    let year = current_year();
    let not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    let not_after = rcgen::date_time_ymd(year + 10, 1, 1);

    let mut ca_params = CertificateParams::default();
    let mut ca_name = DistinguishedName::new();
    ca_name.push(DnType::CommonName, "event-microservices local CA");
    ca_name.push(
        DnType::OrganizationName,
        "event-microservices (development)",
    );
    ca_params.distinguished_name = ca_name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).context("signing the CA")?;

    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).context("server certificate names")?;
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        names.first().map_or("localhost", String::as_str),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate().context("generating the server key")?;
    let cert = params
        .signed_by(&key, &ca)
        .context("signing the server certificate")?;
    Ok(Issued {
        ca_cert: ca.pem(),
        ca_key: ca_key_pem,
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The current calendar year (UTC), close enough for certificate validity windows.
fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_pkcs8_keystore_with_a_chain() {
        let dir = tempfile::tempdir().unwrap();
        let files = ensure(dir.path()).unwrap();
        let ks = fs::read_to_string(&files.keystore).unwrap();
        assert!(ks.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(ks.matches("BEGIN CERTIFICATE").count(), 2);
        let ca = fs::read_to_string(&files.ca_cert).unwrap();
        assert!(ks.ends_with(&ca));
        // A second call keeps the files.
        ensure(dir.path()).unwrap();
        assert_eq!(fs::read_to_string(&files.keystore).unwrap(), ks);
    }
}
