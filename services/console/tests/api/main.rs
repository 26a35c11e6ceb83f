//! The integration tests of the console, one binary. Being an integration test of the crate, it
//! also makes `cargo test` build the console binary the system tests run
//! (`tests/system/tests/system/console.rs`). No test here touches a database (the console has none).

mod start_up;
