//! The `facepay-bench` command line: one subcommand per benchmark, each printing its report
//! as JSON (`--json`: on one line).

use clap::{Parser, Subcommand};
use facepay_sim::fleet::FleetOptions;
use serde::Serialize;

use crate::{api, device, ledger, matcher, pipeline, reconcile};

#[derive(Parser)]
#[command(name = "facepay-bench", version, about = "facepay's benchmarks; each prints JSON")]
pub struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// A 1 000 000-line bill imported and reconciled against its ledger: lines/s, peak memory.
    Reconcile(crate::reconcile::BenchArgs),
    /// Device events through Kafka to committed outcomes per second, and latency at half
    /// that load, next to the broker's own produce → consume throughput.
    Pipeline {
        #[arg(long)]
        json: bool,
        /// The PostgreSQL server (default: FACEPAY_TEST_DATABASE_URL, else the local one).
        #[arg(long)]
        postgres: Option<String>,
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        #[arg(long, default_value_t = 1_000)]
        payers: usize,
        #[arg(long, default_value_t = 10_000)]
        payments: usize,
        /// The latency phase's offered load, events/s (default: half the saturating rate).
        #[arg(long)]
        offered: Option<f64>,
    },
    /// Simulated HTTP devices paying at a fixed rate, each payment answered synchronously
    /// (`Prefer: wait=5`): payments/s, p50/p99 from each payment's scheduled start, timeouts.
    Device {
        #[arg(long)]
        json: bool,
        /// embedded (SQLite, in-process pipeline) or production (PostgreSQL and Kafka).
        #[arg(long, default_value = "embedded", value_parser = ["embedded", "production"])]
        profile: String,
        /// The PostgreSQL server for the production profile (default: FACEPAY_TEST_DATABASE_URL,
        /// else the local one); the broker is FACEPAY_KAFKA_BROKERS, else 127.0.0.1:9092.
        #[arg(long)]
        postgres: Option<String>,
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        #[arg(long, default_value_t = 200)]
        devices: usize,
        /// Payments per second offered, all devices together.
        #[arg(long, default_value_t = 1_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 2_000)]
        payers: usize,
        /// Where the simulated devices run: `process` (one of their own) or `in-process`
        /// (beside the service, in this process's runtime).
        #[arg(long, default_value = "process", value_parser = ["process", "in-process"])]
        load: String,
    },
    /// The devices of `device`, run in a process of their own: the plan on stdin, what they
    /// measured on stdout (started by `device`).
    #[command(hide = true)]
    DeviceLoad,
    /// The read API under load with authentication on, over PostgreSQL holding a million
    /// orders: order lookups and history pages per second, p50/p99, the history query's plan.
    Api {
        #[arg(long)]
        json: bool,
        /// The PostgreSQL server (default: FACEPAY_TEST_DATABASE_URL, else the local one).
        #[arg(long)]
        postgres: Option<String>,
        #[arg(long, default_value_t = 1_000_000)]
        orders: u64,
        #[arg(long, default_value_t = 100)]
        merchants: u64,
        /// Concurrent clients, each with a merchant key of its own.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Length of each phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Attempts of the one merchant-day whose console CSV export is downloaded once
        /// (0: skip that phase).
        #[arg(long, default_value_t = 1_000_000)]
        csv_rows: u64,
        /// Serve for an outside load generator (wrk: `scripts/bench-api-wrk.sh`) until ctrl-c,
        /// writing `DIR/clients.lua` and `DIR/base`, instead of running the phases in process.
        #[arg(long)]
        external: Option<std::path::PathBuf>,
    },
    /// Payments decided and durably committed per second, against the raw insert ceiling.
    Ledger {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The store to measure: sqlite (files in a temporary folder) or postgres.
        #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
        store: String,
        /// The PostgreSQL server for --store postgres (a role that may CREATE DATABASE; each
        /// phase gets a fresh database). Default: FACEPAY_TEST_DATABASE_URL, else
        /// postgres://postgres@127.0.0.1:5432/test.
        #[arg(long)]
        postgres: Option<String>,
        #[arg(long, default_value_t = 100_000)]
        payments: usize,
        #[arg(long, default_value_t = facepay_domain::limits::LEDGER_BATCH_MAX)]
        batch: usize,
        #[arg(long, default_value_t = 10_000)]
        payers: usize,
    },
    /// Face search over a synthetic gallery: batched and single-query exact search (f32 and
    /// f16), recall of f16 against f32, and the approximate indexes (binary codes, IVF)
    /// against exact search.
    Matcher(matcher::MatcherArgs),
}

/// The PostgreSQL server of a benchmark: `--postgres`, else FACEPAY_TEST_DATABASE_URL, else
/// the local one.
fn postgres_or_default(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("FACEPAY_TEST_DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Prints `report` as JSON: on one line with `--json`, indented otherwise.
fn print_report(json: bool, report: &impl Serialize) -> anyhow::Result<()> {
    match json {
        true => println!("{}", serde_json::to_string(report)?),
        false => println!("{}", serde_json::to_string_pretty(report)?),
    }
    Ok(())
}

/// Runs the benchmark the command line names.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.bench {
        Bench::Reconcile(args) => print_report(args.json, &reconcile::bench(&args).await?),
        Bench::Pipeline { json, postgres, partitions, payers, payments, offered } => {
            let opts = pipeline::PipelineBenchOptions {
                brokers: brokers(),
                postgres: postgres_or_default(postgres),
                fleet: FleetOptions { payers, payments, ..FleetOptions::default() },
                pepper: facepay_sim::keys::random_pepper(),
                partitions,
                offered: offered.filter(|r| *r >= 1.0),
            };
            print_report(json, &pipeline::run(&opts).await?)
        }
        Bench::Device { json, profile, postgres, partitions, devices, rate, seconds, payers, load } => {
            let profile = match profile.as_str() {
                "production" => device::Profile::Production {
                    postgres: postgres_or_default(postgres),
                    brokers: brokers(),
                    partitions,
                },
                _ => device::Profile::Embedded,
            };
            let opts = device::DeviceBenchOptions {
                profile,
                load: match load.as_str() {
                    "in-process" => device::Load::InProcess,
                    _ => device::Load::Process,
                },
                devices: devices.max(1),
                rate: rate.max(1.0),
                seconds: seconds.max(1),
                payers: payers.max(1),
            };
            print_report(json, &device::run(&opts).await?)
        }
        Bench::DeviceLoad => device::load_from_stdin().await,
        Bench::Api { json, postgres, orders, merchants, connections, seconds, csv_rows, external } => {
            let opts = api::ApiBenchOptions {
                postgres: postgres_or_default(postgres),
                orders,
                merchants: merchants.max(1),
                connections: connections.max(1),
                seconds: seconds.max(1),
                csv_rows,
                external,
            };
            print_report(json, &api::run(&opts).await?)
        }
        Bench::Ledger { json, rounds, store, postgres, payments, batch, payers } => {
            let postgres = match (store.as_str(), postgres) {
                ("postgres", url) => Some(postgres_or_default(url)),
                (_, Some(_)) => anyhow::bail!("--postgres goes with --store postgres"),
                (_, None) => None,
            };
            let opts = ledger::BenchOptions { postgres, rounds, payments, batch: batch.max(1), payers: payers.max(1) };
            print_report(json, &ledger::ledger(&opts).await?)
        }
        Bench::Matcher(args) => {
            let json = args.json;
            print_report(json, &matcher::run(args).await?)
        }
    }
}

/// The broker: FACEPAY_KAFKA_BROKERS, else the local one.
fn brokers() -> String {
    std::env::var("FACEPAY_KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "127.0.0.1:9092".to_string())
}
