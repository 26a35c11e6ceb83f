//! console: the read-only live console of the event pipeline.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    platform::definition::main::<console::ConsoleService>().await
}
