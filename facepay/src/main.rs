//! The `facepay` binary: parses the command line and runs it (see `facepay::cli`).

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    facepay_api::observe::init_logging()?;
    facepay::cli::run(facepay::cli::Cli::parse()).await
}
