//! The `facepay` command line: a thin layer over the library.

use clap::{Parser, Subcommand};
use facepay_domain::{DeviceId, DeviceRef, MerchantId, StoreId};
use tokio::net::TcpListener;

use crate::app::{check_profile, open_store, serve, App, Config};
use crate::{bench, demo};

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
    Reconcile(crate::reconcile::ReconcileArgs),
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
    /// Benchmarks that print JSON.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
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
    fn options(&self, config: &Config, progress: bool) -> demo::DemoOptions {
        let FleetArgs { seed, merchants, devices, payers, payments } = *self;
        let (data_dir, pepper) = (config.data_dir.clone(), config.key_pepper.clone());
        demo::DemoOptions { seed, merchants, devices, payers, payments, data_dir, progress, pepper, reconcile: true }
    }
}

#[derive(Subcommand)]
enum KeysWhat {
    /// Create a key and print its token (shown this once; only its hash is kept).
    Create {
        /// merchant, finance, device or admin.
        #[arg(long)]
        role: String,
        /// Merchant and device keys: the merchant.
        #[arg(long)]
        merchant: Option<String>,
        /// A merchant key scoped to one store, or a device's store.
        #[arg(long)]
        store: Option<String>,
        /// Device keys: the registered device.
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        expires_days: Option<i64>,
    },
    /// List every key (ids, roles, scopes, expiry, revocation; never a secret).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { key_id: String },
}

#[derive(Subcommand)]
enum BenchWhat {
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
    },
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
    Matcher {
        #[arg(long)]
        json: bool,
        /// Enrolled identities (gallery rows, 512-d).
        #[arg(long, default_value_t = 100_000)]
        gallery: usize,
        #[arg(long, default_value_t = 1_000)]
        queries: usize,
        #[arg(long, default_value_t = 5)]
        k: usize,
        #[arg(long, default_value_t = 20_260_302)]
        seed: u64,
        /// Single queries timed one at a time (at most `queries`).
        #[arg(long, default_value_t = 1_000)]
        single: usize,
        /// Also build and measure an IVF index with this many lists (0: none).
        #[arg(long, default_value_t = 0)]
        ivf_lists: usize,
        /// Lists an IVF query probes; several values (comma-separated) are each measured.
        #[arg(long, value_delimiter = ',', default_value = "32")]
        nprobe: Vec<usize>,
        /// Lists each row is stored in.
        #[arg(long, default_value_t = 1)]
        spill: usize,
        /// Also build and measure the binary-code index with codes of this many bits (0: none).
        #[arg(long, default_value_t = 0)]
        codes_bits: usize,
        /// Candidates per query the code index reranks exactly.
        #[arg(long, default_value_t = 64)]
        rerank: usize,
        /// Write DIR/gallery.f32 and DIR/queries.f32 (raw little-endian f32) for faiss.
        #[arg(long)]
        export: Option<std::path::PathBuf>,
    },
}

/// Runs the command line; the process exit code follows the result.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match cli.command {
        Command::Demo { json, serve: keep, fleet } => {
            check_profile(&config)?;
            let opts = fleet.options(&config, !json);
            let (summary, app) = demo::run(&opts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary.render());
            }
            if !summary.invariants_hold() {
                anyhow::bail!("an invariant failed; see the report");
            }
            if keep {
                serve_app(app, &config).await?;
            }
            Ok(())
        }
        Command::Serve { stages } => {
            let roles = crate::production::roles_chosen(stages.as_deref())?;
            let store = open_store(&config.database_url).await?;
            match &config.kafka_brokers {
                Some(brokers) => serve_production(store, brokers, roles, &config).await,
                None if roles == crate::production::Roles::ALL => {
                    let pipeline = config.pipeline(&store)?;
                    serve_app(App::start(store, pipeline).await?, &config).await
                }
                None => anyhow::bail!("--stages splits the stages over Kafka; set FACEPAY_KAFKA_BROKERS"),
            }
        }
        Command::Reconcile(args) => crate::reconcile::run_cli(args, &config).await,
        Command::Bench { what: BenchWhat::Reconcile(args) } => {
            let report = crate::reconcile::bench(&args).await?;
            match args.json {
                true => println!("{}", serde_json::to_string(&report)?),
                false => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(())
        }
        Command::Replay { json } => {
            let store = open_store(&config.database_url).await?;
            let report = facepay_ledger::Ledger::new(store, Default::default()).replay().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} events replayed; projections {}",
                    report.events,
                    if report.matches { "match" } else { "DIFFER" }
                );
                report.differences.iter().for_each(|d| println!("  {d}"));
            }
            anyhow::ensure!(report.matches, "the projections differ from the log");
            Ok(())
        }
        Command::Verify { json } => {
            let store = open_store(&config.database_url).await?;
            let report = facepay_ledger::Ledger::new(store, Default::default()).verify().await?;
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
        Command::Register { merchant, name, store, device } => {
            let db = open_store(&config.database_url).await?;
            let merchant_id = MerchantId::parse(merchant)?;
            db.register_merchant(&merchant_id, if name.is_empty() { merchant_id.as_str() } else { &name }).await?;
            if let (Some(store), Some(device)) = (store, device) {
                let d =
                    DeviceRef { merchant_id, store_id: StoreId::parse(store)?, device_id: DeviceId::parse(device)? };
                db.register_device(&d).await?;
            }
            Ok(())
        }
        Command::Simulate { kafka: _, json, rate, fleet } => {
            let Some(brokers) = &config.kafka_brokers else {
                anyhow::bail!("simulate --kafka publishes to FACEPAY_KAFKA_BROKERS; set it");
            };
            let cfg = facepay_ingest::kafka::KafkaConfig::from_env(brokers.as_str());
            let store = open_store(&config.database_url).await?;
            let fleet = fleet.options(&config, false);
            let opts = crate::simulate::SimulateOptions { fleet, rate_per_s: rate, time: crate::demo::FleetTime::Live };
            let report = crate::simulate::kafka(&opts, &cfg, store.as_ref()).await?;
            match json {
                true => println!("{}", serde_json::to_string(&report)?),
                false => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(())
        }
        Command::Keys { what } => keys(what, &config).await,
        Command::Bench { what: BenchWhat::Pipeline { json, postgres, partitions, payers, payments } } => {
            let postgres = postgres
                .or_else(|| std::env::var("FACEPAY_TEST_DATABASE_URL").ok())
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_string());
            let brokers = config.kafka_brokers.clone().unwrap_or_else(|| "127.0.0.1:9092".to_string());
            let fleet = demo::DemoOptions { payers, payments, progress: false, ..Default::default() };
            let opts = crate::bench_pipeline::PipelineBenchOptions { brokers, postgres, fleet, partitions };
            let report = crate::bench_pipeline::run(&opts).await?;
            match json {
                true => println!("{}", serde_json::to_string(&report)?),
                false => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(())
        }
        Command::Bench {
            what: BenchWhat::Api { json, postgres, orders, merchants, connections, seconds, external },
        } => {
            let postgres = postgres
                .or_else(|| std::env::var("FACEPAY_TEST_DATABASE_URL").ok())
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_string());
            let opts = crate::bench_api::ApiBenchOptions {
                postgres,
                orders,
                merchants: merchants.max(1),
                connections: connections.max(1),
                seconds: seconds.max(1),
                external,
            };
            let report = crate::bench_api::run(&opts).await?;
            match json {
                true => println!("{}", serde_json::to_string(&report)?),
                false => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(())
        }
        Command::Bench { what: BenchWhat::Ledger { json, rounds, store, postgres, payments, batch, payers } } => {
            let postgres = match (store.as_str(), postgres) {
                ("postgres", url) => Some(
                    url.or_else(|| std::env::var("FACEPAY_TEST_DATABASE_URL").ok())
                        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_string()),
                ),
                (_, Some(_)) => anyhow::bail!("--postgres goes with --store postgres"),
                (_, None) => None,
            };
            let opts = bench::BenchOptions { postgres, rounds, payments, batch: batch.max(1), payers: payers.max(1) };
            let report = bench::ledger(&opts).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Matcher {
                    json,
                    gallery,
                    queries,
                    k,
                    seed,
                    single,
                    ivf_lists,
                    nprobe,
                    spill,
                    codes_bits,
                    rerank,
                    export,
                },
        } => {
            let codes = (codes_bits > 0).then_some(facepay_matcher::codes::CodeOptions {
                bits: codes_bits,
                rerank: rerank.max(1),
                ..Default::default()
            });
            let ivf = (ivf_lists > 0).then_some(facepay_matcher::ivf::IvfOptions {
                nlist: ivf_lists,
                spill: spill.max(1),
                ..Default::default()
            });
            let opts = facepay_matcher::bench::BenchOptions {
                gallery: gallery.max(1),
                queries: queries.max(1),
                k: k.max(1),
                seed,
                single,
                ivf,
                nprobe: nprobe.into_iter().map(|n| n.max(1)).collect(),
                codes,
                export,
            };
            bench_matcher(opts, json).await
        }
    }
}

/// `facepay keys …` over the configured store and pepper, audited as `cli`.
async fn keys(what: KeysWhat, config: &Config) -> anyhow::Result<()> {
    let store = open_store(&config.database_url).await?;
    let auth = crate::auth::Auth::new(store.clone(), config.key_pepper.clone());
    let actor = crate::auth::Actor::cli();
    match what {
        KeysWhat::Create { role, merchant, store: store_id, device, label, expires_days } => {
            let spec = crate::auth::NewKey {
                role: facepay_domain::auth::Role::parse(&role)?,
                merchant_id: merchant.map(MerchantId::parse).transpose()?,
                store_id: store_id.map(StoreId::parse).transpose()?,
                device_id: device.map(DeviceId::parse).transpose()?,
                label,
                expires_in_days: expires_days,
            };
            let (key, token) = auth.create_key(spec, &actor).await?;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "key": key, "token": token }))?);
            eprintln!("the token is shown once: keep it now");
        }
        KeysWhat::List { json } => {
            let keys = store.key_list().await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&keys)?),
                false => keys.iter().for_each(|k| {
                    let scope = [
                        k.merchant_id.as_ref().map(|m| m.to_string()),
                        k.store_id.as_ref().map(|s| s.to_string()),
                        k.device_id.as_ref().map(|d| d.to_string()),
                    ];
                    let scope: Vec<String> = scope.into_iter().flatten().collect();
                    let state = if k.revoked_at.is_some() { "revoked" } else { "live" };
                    println!(
                        "{} {:8} {:24} expires {} {state} {}",
                        k.key_id,
                        k.role,
                        scope.join("/"),
                        k.expires_at,
                        k.label
                    );
                }),
            }
        }
        KeysWhat::Revoke { key_id } => {
            let key_id = facepay_domain::auth::KeyId::parse(key_id)?;
            anyhow::ensure!(auth.revoke(&key_id, &actor).await?, "no live key {key_id}");
            println!("revoked {key_id}");
        }
    }
    Ok(())
}

/// Runs `facepay bench matcher` on a blocking thread (it is all CPU).
async fn bench_matcher(opts: facepay_matcher::bench::BenchOptions, json: bool) -> anyhow::Result<()> {
    let report = tokio::task::spawn_blocking(move || bench::matcher(&opts)).await??;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn serve_app(mut app: App, config: &Config) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_addr {
        crate::observe::spawn_metrics(addr).await?;
    }
    let listener = TcpListener::bind(config.http_addr).await?;
    println!("facepay API listening on http://{}", listener.local_addr()?);
    let mut outcomes = std::mem::replace(&mut app.pipeline.outcomes, tokio::sync::mpsc::channel(1).1);
    tokio::spawn(async move {
        while let Some(o) = outcomes.recv().await {
            tracing::debug!(in_reply_to = %o.in_reply_to, "outcome");
        }
    });
    serve(listener, app.http_state()).await
}

async fn serve_production(
    store: std::sync::Arc<dyn facepay_ledger::LedgerStore>,
    brokers: &str,
    roles: crate::production::Roles,
    config: &Config,
) -> anyhow::Result<()> {
    let cfg = facepay_ingest::kafka::KafkaConfig::from_env(brokers);
    let pipeline = config.pipeline(&store)?;
    let mut prod = crate::production::start_with(store, cfg, roles, pipeline).await?;
    if let Some(addr) = config.metrics_addr {
        crate::observe::spawn_metrics(addr).await?;
    }
    tracing::info!(?roles, "stages started");
    let http = match roles.api {
        true => {
            let listener = TcpListener::bind(config.http_addr).await?;
            println!("facepay API listening on http://{} (Kafka at {brokers})", listener.local_addr()?);
            tokio::spawn(serve(listener, prod.http.clone()))
        }
        false => tokio::spawn(async {
            crate::app::shutdown_signal().await;
            Ok(())
        }),
    };
    // A signal ends the HTTP task; then every stage finishes the batch in flight and stops.
    tokio::select! {
        result = http => result??,
        Some(result) = prod.tasks.join_next() => result??,
    }
    let _ = prod.shutdown.send(true);
    while let Some(result) = prod.tasks.join_next().await {
        result??;
    }
    Ok(())
}
