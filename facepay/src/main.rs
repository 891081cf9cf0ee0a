//! The `facepay` binary: parses the command line and runs it (see `facepay::cli`).

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An error is printed as its chain of causes, one line, and exits 1: never a backtrace
/// (whatever `RUST_BACKTRACE` says), which is for a panic, not for a bill or a flag refused.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    let ran = match facepay_api::observe::init_logging() {
        Ok(()) => facepay::cli::run(facepay::cli::Cli::parse()).await,
        Err(e) => Err(e),
    };
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
