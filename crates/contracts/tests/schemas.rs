//! The JSON Schemas under `schemas/` and the AsyncAPI document `schemas/asyncapi.json` are
//! generated from the Rust types; these tests fail when they drift. Regenerate with
//! `UPDATE_SCHEMAS=1 cargo test -p contracts --test schemas`.

use std::path::PathBuf;

use contracts::{CustomerCreated, TransactionFailed, TransactionProcessed, TransactionRequested};
use schemars::schema_for;
use serde::Serialize;

/// Compares `schemas/<file>` with `generated` (pretty JSON); writes it first with `UPDATE_SCHEMAS`.
fn check(file: &str, generated: &impl Serialize) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file);
    let generated = serde_json::to_string_pretty(generated).expect("serializes") + "\n";
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_SCHEMAS=1", path.display()));
    assert_eq!(
        committed, generated,
        "{file} drifted; regenerate with `UPDATE_SCHEMAS=1 cargo test -p contracts --test schemas`"
    );
}

#[test]
fn committed_schemas_match_the_types() {
    check(
        "Customer.created.schema.json",
        &schema_for!(CustomerCreated),
    );
    check(
        "transaction.requested.schema.json",
        &schema_for!(TransactionRequested),
    );
    check(
        "transaction.processed.schema.json",
        &schema_for!(TransactionProcessed),
    );
    check(
        "transaction.failed.schema.json",
        &schema_for!(TransactionFailed),
    );
}

#[test]
fn committed_asyncapi_document_matches_the_contracts() {
    check("asyncapi.json", &contracts::asyncapi::document());
}
