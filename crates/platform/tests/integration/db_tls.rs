//! TLS to PostgreSQL (issue 21) against a server with TLS on: `TEST_DATABASE_URL` with the CA
//! of `TEST_DATABASE_CA` (`cargo xtask test`'s cluster, whose certificate names 127.0.0.1 only).
//! `sslmode=verify-full` with the right CA (as a file or as base64) connects over TLS; a wrong CA
//! and a wrong host name are refused with one line naming the reason, without the password.
//! Without such a server each test returns early with a note.

use platform::db::{DatabaseCa, TlsRefusal};
use platform::testing::{tls_cluster, TlsCluster};
use platform::{Database, DbError};

/// A password put in the URLs of the refused connections: it must not show in their errors.
const PASSWORD: &str = "s3cret-pw-of-issue-21";

/// A CA that signed nothing the server presents.
const UNRELATED_CA: &str = include_str!("../fixtures/unrelated-ca.pem");

/// The cluster's URL with `host` (else its own), [`PASSWORD`] when `password`, and `query`.
fn url(cluster: &TlsCluster, host: Option<&str>, password: bool, query: &str) -> String {
    let mut options: sqlx::any::AnyConnectOptions = cluster.url.parse().unwrap();
    let url = &mut options.database_url;
    if let Some(host) = host {
        url.set_host(Some(host)).unwrap();
    }
    if password {
        url.set_password(Some(PASSWORD)).unwrap();
    }
    url.set_query((!query.is_empty()).then_some(query));
    url.to_string()
}

/// `sslmode=verify-full&sslrootcert=<ca>`.
fn verify_full(ca: &std::path::Path) -> String {
    format!("sslmode=verify-full&sslrootcert={}", ca.display())
}

/// Whether the pool's connection is encrypted, as the server sees it.
async fn encrypted(db: &Database) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// Connects to `url` trusting `ca`, which must be refused for a TLS reason: the error's one
/// line, checked to hold no password.
async fn refused(url: &str, ca: Option<&DatabaseCa>) -> (TlsRefusal, String) {
    let error = Database::connect_with_ca(url, ca)
        .await
        .expect_err("the connection must be refused");
    let line = error.to_string();
    println!("refused: {line}");
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(!line.contains(PASSWORD), "the password shows: {line}");
    assert!(!format!("{error:?}").contains(PASSWORD), "{error:?}");
    match error {
        DbError::Tls { reason, .. } => (reason, line),
        other => panic!("not a TLS refusal: {other}"),
    }
}

#[tokio::test]
async fn verify_full_with_the_right_ca_connects_over_tls() {
    let Some(cluster) = tls_cluster() else { return };
    let db = Database::connect(&url(&cluster, None, false, &verify_full(&cluster.ca)))
        .await
        .unwrap_or_else(|e| panic!("verify-full with the cluster's CA: {e}"));
    assert!(encrypted(&db).await, "pg_stat_ssl says plaintext");
    db.close().await;
}

#[tokio::test]
async fn require_encrypts() {
    let Some(cluster) = tls_cluster() else { return };
    let db = Database::connect(&url(&cluster, None, false, "sslmode=require"))
        .await
        .unwrap_or_else(|e| panic!("sslmode=require: {e}"));
    assert!(encrypted(&db).await, "pg_stat_ssl says plaintext");
    db.close().await;
}

#[tokio::test]
async fn the_ca_as_base64_verifies_fully_and_connects() {
    use base64::Engine;
    let Some(cluster) = tls_cluster() else { return };
    let pem = std::fs::read(&cluster.ca).unwrap();
    let ca = DatabaseCa::from_base64(&base64::engine::general_purpose::STANDARD.encode(pem))
        .expect("the cluster's CA");
    // No sslmode in the URL: a CA given means verify-full.
    let db = Database::connect_with_ca(&url(&cluster, None, false, ""), Some(&ca))
        .await
        .unwrap_or_else(|e| panic!("the CA as base64: {e}"));
    assert!(encrypted(&db).await, "pg_stat_ssl says plaintext");
    db.close().await;
    // verify-full (the default with a CA) checks the host name too.
    let (reason, _) = refused(&url(&cluster, Some("localhost"), true, ""), Some(&ca)).await;
    assert!(matches!(reason, TlsRefusal::HostName { .. }), "{reason}");
}

#[tokio::test]
async fn a_wrong_ca_is_refused_as_not_trusted() {
    let Some(cluster) = tls_cluster() else { return };
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/unrelated-ca.pem"
    );
    let as_file = url(&cluster, None, true, &verify_full(fixture.as_ref()));
    let (reason, line) = refused(&as_file, None).await;
    assert_eq!(reason, TlsRefusal::Untrusted);
    assert!(line.contains("certificate not trusted"), "{line}");
    let ca = DatabaseCa::from_pem(UNRELATED_CA).unwrap();
    let (reason, _) = refused(&url(&cluster, None, true, ""), Some(&ca)).await;
    assert_eq!(reason, TlsRefusal::Untrusted);
}

#[tokio::test]
async fn a_wrong_host_name_is_refused_as_a_mismatch() {
    let Some(cluster) = tls_cluster() else { return };
    // The right CA, but `localhost` is not a name of the certificate (127.0.0.1 only).
    let wrong_host = url(&cluster, Some("localhost"), true, &verify_full(&cluster.ca));
    let (reason, line) = refused(&wrong_host, None).await;
    assert_eq!(
        reason,
        TlsRefusal::HostName {
            host: "localhost".to_string()
        }
    );
    assert!(line.contains("host name mismatch"), "{line}");
    assert!(line.contains("postgres:***@localhost"), "{line}");
}
