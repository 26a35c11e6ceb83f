//! The database of an IBM Cloud Databases for PostgreSQL instance bound to a Code Engine
//! application (`ibmcloud ce application bind --service-instance <db> --prefix DATABASE`).
//!
//! A binding turns every top-level field of the service credential into `<PREFIX>_<FIELD>`, a
//! nested object arriving as JSON text; so the prefix [`BINDING_PREFIX`] gives
//! [`BINDING_VARIABLE`] (`DATABASE_CONNECTION`), the credential's `connection` object:
//!
//! ```json
//! {"postgres": {"composed": ["postgres://ibm_cloud_u:pw@<id>.databases.appdomain.cloud:31234/ibmclouddb?sslmode=verify-full"],
//!               "authentication": {"username": "ibm_cloud_u", "password": "pw"},
//!               "certificate": {"certificate_base64": "LS0tLS1CRUdJTi..."}}}
//! ```
//!
//! [`BoundDatabase::from_credential`] takes the URL from `postgres.composed[0]` (a `$PASSWORD`
//! placeholder in it is filled from `postgres.authentication.password`) and the CA from
//! `postgres.certificate.certificate_base64`. The whole credential (`{"connection": {...}}`) is
//! accepted too. Every instance has one database, `ibmclouddb`, while each service needs its own
//! (they share table names): `DATABASE_NAME` names the database in the URL instead. Errors name
//! the field at fault, never a value of the credential.

use std::fmt;

use serde_json::Value;

use crate::store::db_tls::{CaError, DatabaseCa};

/// The environment-variable prefix `deploy.sh` binds the PostgreSQL instance with.
pub const BINDING_PREFIX: &str = "DATABASE";

/// The variable a binding with [`BINDING_PREFIX`] sets to the credential's `connection` object.
pub const BINDING_VARIABLE: &str = "DATABASE_CONNECTION";

/// The variable naming the database of the bound instance a service uses (`customer_service`,
/// ...), in place of the credential's own (`ibmclouddb`).
pub const NAME_VARIABLE: &str = "DATABASE_NAME";

/// Why a binding's credential gave no database. Never holds a value of the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// The text is not JSON (where it broke, not what it said).
    #[error("is not JSON (line {line}, column {column})")]
    NotJson {
        /// Line of the syntax error.
        line: usize,
        /// Column of the syntax error.
        column: usize,
    },
    /// A field the credential must have is missing or not of its type.
    #[error(
        "has no {0} (expected the `connection` object of a Databases for PostgreSQL credential)"
    )]
    Missing(&'static str),
    /// `postgres.composed[0]` is not a `postgres://` URL with a host.
    #[error("postgres.composed[0] is not a postgres:// URL with a host")]
    NotPostgresUrl,
    /// The URL holds the `$PASSWORD` placeholder and the credential no password to put there.
    #[error("postgres.composed[0] holds the placeholder $PASSWORD and there is no postgres.authentication.password")]
    NoPassword,
    /// The CA is not base64 of a PEM certificate.
    #[error("postgres.certificate.certificate_base64 {0}")]
    Ca(#[from] CaError),
    /// `DATABASE_NAME` is not a plain database name.
    #[error("DATABASE_NAME must be letters, digits and _ (a database of the bound instance)")]
    BadName,
}

/// The database a binding names: its URL (with the password: never log it, see
/// [`crate::store::db::redact_url`]) and the CA its server certificate chains to.
#[derive(Clone, PartialEq, Eq)]
pub struct BoundDatabase {
    /// `postgres://user:password@host:port/database?sslmode=verify-full`.
    pub url: String,
    /// The deployment's CA, when the credential carries one.
    pub ca: Option<DatabaseCa>,
}

impl fmt::Debug for BoundDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundDatabase")
            .field("url", &crate::store::db::redact_url(&self.url))
            .field("ca", &self.ca)
            .finish()
    }
}

impl BoundDatabase {
    /// The database of a Databases for PostgreSQL credential's `connection` object (or of the
    /// whole credential), in `database` when given, else in the credential's own database.
    pub fn from_credential(json: &str, database: Option<&str>) -> Result<Self, BindingError> {
        let document: Value =
            serde_json::from_str(json).map_err(|error| BindingError::NotJson {
                line: error.line(),
                column: error.column(),
            })?;
        let connection = document.get("connection").unwrap_or(&document);
        let postgres = connection
            .get("postgres")
            .filter(|postgres| postgres.is_object())
            .ok_or(BindingError::Missing("postgres"))?;
        let composed = postgres
            .get("composed")
            .and_then(|composed| composed.get(0))
            .and_then(Value::as_str)
            .ok_or(BindingError::Missing("postgres.composed[0]"))?;
        let mut url = url::Url::parse(composed.trim()).map_err(|_| BindingError::NotPostgresUrl)?;
        if !matches!(url.scheme(), "postgres" | "postgresql") || url.host_str().is_none() {
            return Err(BindingError::NotPostgresUrl);
        }
        let placeholder = matches!(url.password(), Some("$PASSWORD" | "%24PASSWORD"));
        if placeholder {
            let password = postgres
                .pointer("/authentication/password")
                .and_then(Value::as_str)
                .filter(|password| !password.is_empty())
                .ok_or(BindingError::NoPassword)?;
            url.set_password(Some(password))
                .map_err(|()| BindingError::NotPostgresUrl)?;
        }
        if let Some(name) = database.map(str::trim).filter(|name| !name.is_empty()) {
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(BindingError::BadName);
            }
            url.set_path(&format!("/{name}"));
        }
        let ca = match postgres.pointer("/certificate/certificate_base64") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(DatabaseCa::from_base64(text)?),
            Some(_) => {
                return Err(BindingError::Missing(
                    "postgres.certificate.certificate_base64 as text",
                ))
            }
        };
        Ok(Self {
            url: url.to_string(),
            ca,
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    /// A CA as a credential carries it: base64 of a self-signed certificate's PEM text.
    fn ca_base64() -> String {
        base64::engine::general_purpose::STANDARD
            .encode(include_str!("../../tests/fixtures/unrelated-ca.pem"))
    }

    fn connection(composed: &str, password: Option<&str>, ca: &str) -> String {
        let authentication = match password {
            Some(password) => format!(
                r#", "authentication": {{"method": "direct", "username": "ibm_cloud_u", "password": "{password}"}}"#
            ),
            None => String::new(),
        };
        format!(
            r#"{{"cli": {{"bin": "psql"}}, "postgres": {{"composed": ["{composed}"], "database": "ibmclouddb",
                "hosts": [{{"hostname": "abc.databases.appdomain.cloud", "port": 31234}}], "path": "/ibmclouddb",
                "certificate": {{"name": "abc", "certificate_base64": "{ca}"}}{authentication}}}}}"#
        )
    }

    const COMPOSED: &str = "postgres://ibm_cloud_u:s3cr3t-PW@abc.databases.appdomain.cloud:31234/ibmclouddb?sslmode=verify-full";

    #[test]
    fn a_credential_gives_the_url_and_the_ca() {
        let ca = ca_base64();
        let bound = BoundDatabase::from_credential(&connection(COMPOSED, None, &ca), None).unwrap();
        assert_eq!(bound.url, COMPOSED);
        assert_eq!(bound.ca, Some(DatabaseCa::from_base64(&ca).unwrap()));
        let named = BoundDatabase::from_credential(
            &connection(COMPOSED, None, &ca),
            Some("customer_service"),
        )
        .unwrap();
        assert_eq!(
            named.url,
            "postgres://ibm_cloud_u:s3cr3t-PW@abc.databases.appdomain.cloud:31234/customer_service?sslmode=verify-full"
        );
        let whole = format!(
            r#"{{"connection": {}, "instance_administration_api": {{}}}}"#,
            connection(COMPOSED, None, &ca)
        );
        assert_eq!(
            BoundDatabase::from_credential(&whole, None).unwrap().url,
            COMPOSED
        );
        assert!(!format!("{bound:?}").contains("s3cr3t"), "{bound:?}");
    }

    #[test]
    fn the_password_placeholder_is_filled_from_the_credential() {
        let composed = "postgres://ibm_cloud_u:$PASSWORD@abc.databases.appdomain.cloud:31234/ibmclouddb?sslmode=verify-full";
        let json = connection(composed, Some("p@ss/w:rd"), &ca_base64());
        let bound = BoundDatabase::from_credential(&json, None).unwrap();
        assert_eq!(
            bound.url,
            "postgres://ibm_cloud_u:p%40ss%2Fw%3Ard@abc.databases.appdomain.cloud:31234/ibmclouddb?sslmode=verify-full"
        );
        let err = BoundDatabase::from_credential(&connection(composed, None, &ca_base64()), None)
            .unwrap_err();
        assert_eq!(err, BindingError::NoPassword);
    }

    #[test]
    fn malformed_credentials_name_the_field_and_never_the_password() {
        let ca = ca_base64();
        let cases = [
            // Cut off in the middle of the password.
            (
                r#"{"postgres": {"composed": ["postgres://u:s3cr3t-PW"#.to_string(),
                "is not JSON",
            ),
            (
                r#"{"postgres": {"composed": []}}"#.to_string(),
                "postgres.composed[0]",
            ),
            (r#"{"mysql": {}}"#.to_string(), "has no postgres"),
            (
                connection("mysql://u:s3cr3t-PW@abc:3306/db", None, &ca),
                "not a postgres:// URL",
            ),
            (
                connection(COMPOSED, None, "s3cr3t-PW not base64!"),
                "certificate_base64 not base64",
            ),
            (
                connection(
                    COMPOSED,
                    None,
                    &base64::engine::general_purpose::STANDARD.encode("s3cr3t-PW"),
                ),
                "holds no PEM certificate",
            ),
        ];
        for (json, expected) in cases {
            let err = BoundDatabase::from_credential(&json, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err} lacks {expected}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
        let err = BoundDatabase::from_credential(&connection(COMPOSED, None, &ca), Some("x; drop"))
            .unwrap_err();
        assert_eq!(err, BindingError::BadName);
    }
}
