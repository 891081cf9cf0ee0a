//! The reconciliation benchmark without the rest of the binary (a quicker release build):
//! `cargo run --release -p facepay-ledger --example bench_reconcile -- [LINES]`. The same code
//! as `facepay bench reconcile --json`, with the same allocator.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lines = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let report = facepay_ledger::reconcile::bench::run(dir.path(), lines).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
