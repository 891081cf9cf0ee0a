//! The `facepay` command line: its arguments, and one function per command over the library.

use clap::{Parser, Subcommand};
use facepay_domain::{DeviceId, DeviceRef, MerchantId, StoreId};
use facepay_ingest::kafka::KafkaConfig;
use facepay_ledger::Ledger;
use facepay_sim::fleet::{FleetOptions, FleetTime};
use facepay_sim::kafka::SimulateOptions;

use crate::app::{check_profile, open_store};
use crate::config::Config;
use crate::demo::{self, DemoOptions};
use crate::faces::{self, FacesWhat};
use crate::keys::{self, KeysWhat};
use crate::reconcile::{self, ReconcileArgs};
use crate::serve;

#[derive(Parser)]
#[command(name = "facepay", version, about = "Event-sourced ledger and reconciliation for face-payment fleets")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a fleet through the whole embedded pipeline and report.
    Demo {
        /// Print one JSON object instead of the readable report.
        #[arg(long)]
        json: bool,
        /// Keep the API up afterwards and print its URL.
        #[arg(long)]
        serve: bool,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Run the pipeline and the HTTP API over the configured store (PostgreSQL + Kafka when
    /// configured, embedded otherwise). Stops gracefully on SIGTERM or ctrl-c.
    Serve {
        /// With Kafka: the stages this process runs, comma-separated, of matcher, ledger,
        /// relay, api (default: all; or FACEPAY_STAGES).
        #[arg(long)]
        stages: Option<String>,
    },
    /// Import the channel's daily bill and reconcile its day against the ledger (issue 6).
    Reconcile(ReconcileArgs),
    /// Rebuild every projection from the event log and compare it with the live one.
    Replay {
        #[arg(long)]
        json: bool,
    },
    /// Walk the event log and check every stream's audit hash chain; report the first break.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Register a merchant, and optionally a device of one of its stores.
    Register {
        #[arg(long)]
        merchant: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, requires = "device")]
        store: Option<String>,
        #[arg(long, requires = "store")]
        device: Option<String>,
    },
    /// Publish the demo's device fleet to Kafka (registering it in the configured store
    /// first), for load and end-to-end runs against `facepay serve`.
    Simulate {
        /// Publish to the broker of FACEPAY_KAFKA_BROKERS (the only transport so far).
        #[arg(long, required = true)]
        kafka: bool,
        #[arg(long)]
        json: bool,
        /// Events per second to offer (default: as fast as the broker takes them).
        #[arg(long)]
        rate: Option<u64>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// API keys: create (the token is printed once), list, revoke.
    Keys {
        #[command(subcommand)]
        what: KeysWhat,
    },
    /// The gallery at rest: `verify-erasure PAYER` audits a deleted face.
    Faces {
        #[command(subcommand)]
        what: FacesWhat,
    },
}

/// The simulated fleet: the same seed gives the same events.
#[derive(clap::Args, Clone, Copy)]
struct FleetArgs {
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 5)]
    merchants: usize,
    #[arg(long, default_value_t = 20)]
    devices: usize,
    #[arg(long, default_value_t = 2_000)]
    payers: usize,
    #[arg(long, default_value_t = 20_000)]
    payments: usize,
}

impl FleetArgs {
    fn fleet(&self) -> FleetOptions {
        let FleetArgs { seed, merchants, devices, payers, payments } = *self;
        FleetOptions { seed, merchants, devices, payers, payments }
    }
}

/// Runs the command line; the process exit code follows the result.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match cli.command {
        Command::Demo { json, serve, fleet } => run_demo(json, serve, fleet, &config).await,
        Command::Serve { stages } => serve::run(stages.as_deref(), &config).await,
        Command::Reconcile(args) => reconcile::run_cli(args, &config).await,
        Command::Replay { json } => replay(json, &config).await,
        Command::Verify { json } => verify(json, &config).await,
        Command::Register { merchant, name, store, device } => register(merchant, name, store, device, &config).await,
        Command::Simulate { kafka: _, json, rate, fleet } => simulate(json, rate, fleet, &config).await,
        Command::Keys { what } => keys::run(what, &config).await,
        Command::Faces { what } => faces::run(what, &config).await,
    }
}

/// `facepay demo`: the report (or its JSON); fails when an invariant did not hold.
async fn run_demo(json: bool, keep_serving: bool, fleet: FleetArgs, config: &Config) -> anyhow::Result<()> {
    check_profile(config)?;
    let opts = DemoOptions {
        fleet: fleet.fleet(),
        data_dir: config.data_dir.clone(),
        progress: !json,
        pepper: config.key_pepper.clone(),
        reconcile: true,
    };
    let (summary, app) = demo::run(&opts).await?;
    match json {
        true => println!("{}", serde_json::to_string_pretty(&summary)?),
        false => print!("{}", summary.render()),
    }
    anyhow::ensure!(summary.invariants_hold(), "an invariant failed; see the report");
    match keep_serving {
        true => {
            let keys = demo::console_keys(&app).await?;
            serve::serve_app(app, config, &keys).await
        }
        false => Ok(()),
    }
}

async fn replay(json: bool, config: &Config) -> anyhow::Result<()> {
    let store = open_store(&config.database_url).await?.ledger;
    let report = Ledger::new(store, Default::default()).replay().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verdict = if report.matches { "match" } else { "DIFFER" };
        println!("{} events replayed; projections {verdict}", report.events);
        report.differences.iter().for_each(|d| println!("  {d}"));
    }
    anyhow::ensure!(report.matches, "the projections differ from the log");
    Ok(())
}

async fn verify(json: bool, config: &Config) -> anyhow::Result<()> {
    let store = open_store(&config.database_url).await?.ledger;
    let report = Ledger::new(store, Default::default()).verify().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        match &report.first_break {
            None => println!("{} events verified; audit chain intact", report.events),
            Some(b) => println!(
                "audit chain BROKEN at event seq {} ({}) of stream {}: {}",
                b.seq, b.event_id, b.stream, b.reason
            ),
        }
    }
    anyhow::ensure!(report.ok, "the audit chain is broken");
    Ok(())
}

async fn register(
    merchant: String,
    name: String,
    store: Option<String>,
    device: Option<String>,
    config: &Config,
) -> anyhow::Result<()> {
    let db = open_store(&config.database_url).await?.ledger;
    let merchant_id = MerchantId::parse(merchant)?;
    db.register_merchant(&merchant_id, if name.is_empty() { merchant_id.as_str() } else { &name }).await?;
    if let (Some(store), Some(device)) = (store, device) {
        let d = DeviceRef { merchant_id, store_id: StoreId::parse(store)?, device_id: DeviceId::parse(device)? };
        db.register_device(&d).await?;
    }
    Ok(())
}

/// `facepay simulate --kafka`: the fleet registered in the configured store, then published.
async fn simulate(json: bool, rate: Option<u64>, fleet: FleetArgs, config: &Config) -> anyhow::Result<()> {
    let Some(brokers) = &config.kafka_brokers else {
        anyhow::bail!("simulate --kafka publishes to FACEPAY_KAFKA_BROKERS; set it");
    };
    let cfg = KafkaConfig::from_env(brokers.as_str());
    let store = open_store(&config.database_url).await?.ledger;
    let opts = SimulateOptions {
        fleet: fleet.fleet(),
        pepper: config.key_pepper.clone(),
        rate_per_s: rate,
        time: FleetTime::Live,
    };
    let report = facepay_sim::kafka::publish(&opts, &cfg, store.as_ref()).await?;
    match json {
        true => println!("{}", serde_json::to_string(&report)?),
        false => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}
