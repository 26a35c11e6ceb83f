//! console: the read-only live console of the event pipeline.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::definition::exit_code(console::main().await)
}
