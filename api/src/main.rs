//! The `facepay` binary: parses the command line and runs it (see `facepay_api::cli`).

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("FACEPAY_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    facepay_api::cli::run(facepay_api::cli::Cli::parse()).await
}
