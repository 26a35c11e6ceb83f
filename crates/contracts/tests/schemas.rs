//! The JSON Schemas under `schemas/` are generated from the Rust types; this test fails when they
//! drift. Regenerate with `UPDATE_SCHEMAS=1 cargo test -p contracts --test schemas`.

use std::path::PathBuf;

use contracts::{CustomerCreated, TransactionFailed, TransactionProcessed, TransactionRequested};
use schemars::schema_for;

fn check(name: &str, schema: schemars::schema::RootSchema) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(format!("{name}.schema.json"));
    let generated = serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n";
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_SCHEMAS=1", path.display()));
    assert_eq!(
        committed, generated,
        "{name} schema drifted; run with UPDATE_SCHEMAS=1"
    );
}

#[test]
fn committed_schemas_match_the_types() {
    check("Customer.created", schema_for!(CustomerCreated));
    check("transaction.requested", schema_for!(TransactionRequested));
    check("transaction.processed", schema_for!(TransactionProcessed));
    check("transaction.failed", schema_for!(TransactionFailed));
}
