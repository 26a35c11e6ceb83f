//! transaction-service: the ledger (accounts, transactions, journal) on port 3002.

use std::process::ExitCode;

use platform::config::ProcessEnv;
use platform::Service;
use transaction_service::{build_with, LedgerSettings, DEFAULT_PORT, MIGRATIONS, NAME};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, whatever RUST_BACKTRACE says.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    // Read before connecting to anything: bad configuration fails at once, naming the variable.
    let settings = LedgerSettings::from_env(&ProcessEnv)?;
    let mut service = Service::start(NAME, DEFAULT_PORT, &MIGRATIONS).await?;
    let routes = build_with(&mut service, settings);
    service.serve(routes).await
}
