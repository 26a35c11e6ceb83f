//! transaction-service: the ledger (accounts, transactions, journal) on port 3002.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::definition::main::<transaction_service::TransactionService>().await
}
