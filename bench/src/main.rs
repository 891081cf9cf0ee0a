//! The `facepay-bench` binary: parses the command line and runs the benchmark it names (see
//! `facepay_bench::cli`).

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    facepay_api::observe::init_logging()?;
    facepay_bench::cli::run(facepay_bench::cli::Cli::parse()).await
}
