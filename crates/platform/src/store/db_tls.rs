//! TLS to PostgreSQL: the CA the server's certificate must chain to, and a clear reason when the
//! handshake is refused.
//!
//! sqlx (built with rustls) reads the usual URL parameters: `sslmode=require` encrypts without
//! checking the certificate; `sslmode=verify-full&sslrootcert=<CA file>` also checks that the
//! certificate chains to that CA (or to a public web CA: sqlx keeps the Mozilla roots) and names
//! the host of the URL. A managed service hands its CA out as base64 text (`certificate_base64`):
//! [`DatabaseCa::from_base64`] takes it from [`CA_VARIABLE`].

use std::io::Write;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::CertificateError;
use sqlx::any::AnyConnectOptions;
use tempfile::TempPath;

/// The variable holding the PostgreSQL server's CA certificate as base64 of its PEM text.
pub const CA_VARIABLE: &str = "DATABASE_CA_CERT_BASE64";

/// A CA certificate (PEM) the PostgreSQL server's certificate must chain to. Not secret, but
/// long: `Debug` shows its size only.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseCa {
    pem: Vec<u8>,
}

/// Why a CA certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    /// The text is not base64.
    #[error("not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The decoded bytes hold no PEM certificate.
    #[error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NotPem,
}

impl DatabaseCa {
    /// The CA from base64 of its PEM text (white space and line breaks are ignored), as a managed
    /// service's credentials carry it (`certificate_base64`).
    pub fn from_base64(text: &str) -> Result<Self, CaError> {
        let compact: String = text.split_whitespace().collect();
        let pem = base64::engine::general_purpose::STANDARD.decode(compact)?;
        Self::from_pem(pem)
    }

    /// The CA from PEM text holding one certificate or more.
    pub fn from_pem(pem: impl Into<Vec<u8>>) -> Result<Self, CaError> {
        let pem = pem.into();
        let mut certificates = CertificateDer::pem_slice_iter(&pem).peekable();
        if certificates.peek().is_none() || certificates.any(|c| c.is_err()) {
            return Err(CaError::NotPem);
        }
        Ok(Self { pem })
    }

    /// The PEM text.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

impl std::fmt::Debug for DatabaseCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseCa({} bytes of PEM)", self.pem.len())
    }
}

/// The PostgreSQL `url` trusting `ca` when given (see [`trust`]), and the CA's file.
pub(crate) fn with_ca(
    url: &str,
    ca: Option<&DatabaseCa>,
) -> Result<(String, Option<TempPath>), sqlx::Error> {
    let Some(ca) = ca else {
        return Ok((url.to_string(), None));
    };
    let mut options: AnyConnectOptions = url.parse()?;
    let path = trust(&mut options, ca)?;
    Ok((options.database_url.to_string(), Some(path)))
}

/// Points `options` (a PostgreSQL URL) at `ca`: the CA goes to a temporary file named by
/// `sslrootcert` (the `Any` driver takes its options from a URL only, so the PEM cannot be passed
/// in memory), and `sslmode=verify-full` is added when the URL names no `sslmode`. A
/// `sslrootcert` of the URL is overridden. The file lives as long as the returned path.
fn trust(options: &mut AnyConnectOptions, ca: &DatabaseCa) -> std::io::Result<TempPath> {
    let mut file = tempfile::Builder::new()
        .prefix("ems-db-ca-")
        .suffix(".pem")
        .tempfile()?;
    file.write_all(ca.pem())?;
    file.as_file().sync_all()?;
    let path = file.into_temp_path();
    let url = &mut options.database_url;
    let has_mode = url
        .query_pairs()
        .any(|(name, _)| name == "sslmode" || name == "ssl-mode");
    let mut query = url.query_pairs_mut();
    if !has_mode {
        query.append_pair("sslmode", "verify-full");
    }
    query.append_pair("sslrootcert", &path.to_string_lossy());
    drop(query);
    Ok(path)
}

/// Why PostgreSQL's TLS handshake was refused: one line, without the URL's password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsRefusal {
    /// The server's certificate does not chain to a trusted CA.
    #[error(
        "certificate not trusted: the server's certificate is not signed by the configured CA \
         (sslrootcert, {CA_VARIABLE})"
    )]
    Untrusted,
    /// The server's certificate does not name the host of the URL.
    #[error("host name mismatch: the server's certificate is not valid for `{host}`")]
    HostName {
        /// The host the client connected to.
        host: String,
    },
    /// The server's certificate has expired or is not valid yet.
    #[error("certificate expired or not yet valid")]
    Expired,
    /// The server offers no TLS, yet `sslmode` requires it.
    #[error("the server does not support TLS (sslmode requires it)")]
    Unsupported,
    /// Any other handshake failure.
    #[error("TLS handshake failed: {0}")]
    Other(String),
}

/// The TLS refusal behind `error`, if any, for a connection to `url`.
pub(crate) fn refusal(error: &sqlx::Error, url: &str) -> Option<TlsRefusal> {
    let tls = match error {
        sqlx::Error::Io(e) => e.get_ref()?.downcast_ref::<rustls::Error>()?,
        sqlx::Error::Tls(e) => match e.downcast_ref::<rustls::Error>() {
            Some(tls) => tls,
            None if e.to_string().contains("does not support TLS") => {
                return Some(TlsRefusal::Unsupported)
            }
            None => return Some(TlsRefusal::Other(e.to_string())),
        },
        _ => return None,
    };
    Some(match tls {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsRefusal::HostName { host: host(url) }
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsRefusal::Expired,
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                TlsRefusal::Untrusted
            }
            other => TlsRefusal::Other(format!("invalid server certificate: {other:?}")),
        },
        other => TlsRefusal::Other(other.to_string()),
    })
}

/// The host of `url` (empty when it has none).
fn host(url: &str) -> String {
    url.parse::<AnyConnectOptions>()
        .ok()
        .and_then(|options| options.database_url.host_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate (the tests' unrelated CA).
    const PEM: &str = include_str!("../../tests/fixtures/unrelated-ca.pem");

    #[test]
    fn the_ca_is_taken_as_base64_or_pem() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(PEM);
        let wrapped: String = encoded
            .as_bytes()
            .chunks(64)
            .map(|line| format!("{}\n", String::from_utf8_lossy(line)))
            .collect();
        let ca = DatabaseCa::from_base64(&wrapped).unwrap();
        assert_eq!(ca.pem(), PEM.as_bytes());
        assert_eq!(DatabaseCa::from_pem(PEM).unwrap(), ca);
        assert!(format!("{ca:?}").starts_with("DatabaseCa("));
        assert!(matches!(
            DatabaseCa::from_base64("not base64!"),
            Err(CaError::Base64(_))
        ));
        let not_pem = base64::engine::general_purpose::STANDARD.encode("hello");
        assert!(matches!(
            DatabaseCa::from_base64(&not_pem),
            Err(CaError::NotPem)
        ));
    }

    #[test]
    fn trusting_a_ca_names_its_file_and_verifies_fully() {
        let ca = DatabaseCa::from_pem(PEM).unwrap();
        let mut options: AnyConnectOptions = "postgres://u:pw@db:5432/x".parse().unwrap();
        let path = trust(&mut options, &ca).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), PEM.as_bytes());
        let pairs: Vec<(String, String)> =
            options.database_url.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("sslmode".into(), "verify-full".into()));
        assert_eq!(pairs[1].1, path.to_string_lossy());
        // An explicit sslmode stays.
        let mut options: AnyConnectOptions = "postgres://db/x?sslmode=require".parse().unwrap();
        let _path = trust(&mut options, &ca).unwrap();
        let query = options.database_url.query().unwrap_or_default().to_string();
        assert!(query.starts_with("sslmode=require&sslrootcert="), "{query}");
        let (url, file) = with_ca("postgres://db/x", None).unwrap();
        assert_eq!((url.as_str(), file.is_none()), ("postgres://db/x", true));
        let (url, file) = with_ca("postgres://u:pw@db/x", Some(&ca)).unwrap();
        assert!(url.starts_with("postgres://u:pw@db/x?sslmode=verify-full&sslrootcert="));
        assert!(file.is_some_and(|f| f.exists()));
        let kept = path.to_path_buf();
        drop(path);
        assert!(!kept.exists(), "the CA file goes with its handle");
    }

    #[test]
    fn handshake_errors_are_named() {
        const URL: &str = "postgres://u:pw@h:5432/x?sslmode=verify-full";
        let io = |e: rustls::Error| {
            sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        let bad = |c| io(rustls::Error::InvalidCertificate(c));
        assert_eq!(
            refusal(&bad(CertificateError::UnknownIssuer), URL),
            Some(TlsRefusal::Untrusted)
        );
        assert_eq!(
            refusal(&bad(CertificateError::NotValidForName), URL),
            Some(TlsRefusal::HostName { host: "h".into() })
        );
        assert_eq!(
            refusal(&bad(CertificateError::Expired), URL),
            Some(TlsRefusal::Expired)
        );
        let unsupported = sqlx::Error::Tls("server does not support TLS".into());
        assert_eq!(refusal(&unsupported, URL), Some(TlsRefusal::Unsupported));
        assert_eq!(refusal(&sqlx::Error::PoolTimedOut, URL), None);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(refusal(&sqlx::Error::Io(refused), URL), None);
    }
}
