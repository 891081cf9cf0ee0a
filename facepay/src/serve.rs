//! `facepay serve` and `facepay demo --serve`: the API (and, with Kafka, this process's
//! stages) until a signal asks for a graceful stop.

use facepay_api::observe::spawn_metrics;
use facepay_api::server::{serve, shutdown_signal};
use facepay_ingest::kafka::KafkaConfig;
use facepay_ledger::Stores;
use tokio::net::TcpListener;

use crate::app::{open_store, App};
use crate::config::Config;
use crate::production::{self, Roles};

/// `facepay serve`: PostgreSQL and Kafka when configured, embedded otherwise.
pub async fn run(stages: Option<&str>, config: &Config) -> anyhow::Result<()> {
    let roles = production::roles_chosen(stages)?;
    crate::demo::served(&config.data_dir)?;
    let stores = open_store(&config.database_url).await?;
    match &config.kafka_brokers {
        Some(brokers) => serve_production(stores, brokers, roles, config).await,
        None if roles == Roles::ALL => {
            let pipeline = config.pipeline(&stores.ledger).await?;
            serve_app(App::start(stores, pipeline).await?, config, &[]).await
        }
        None => anyhow::bail!("--stages splits the stages over Kafka; set FACEPAY_KAFKA_BROKERS"),
    }
}

/// Serves the API over an embedded app (its outcomes logged) until a signal; prints the
/// API's and the console's addresses, and `sign_in` (role, token) for the console.
pub async fn serve_app(mut app: App, config: &Config, sign_in: &[(String, String)]) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_addr {
        spawn_metrics(addr).await?;
    }
    let listener = TcpListener::bind(config.http_addr).await?;
    let addr = listener.local_addr()?;
    println!("facepay API listening on http://{addr}");
    println!("console: http://{addr}/console");
    for (role, token) in sign_in {
        println!("console sign-in key ({role}): {token}");
    }
    let mut outcomes = std::mem::replace(&mut app.pipeline.outcomes, tokio::sync::mpsc::channel(1).1);
    tokio::spawn(async move {
        while let Some(o) = outcomes.recv().await {
            tracing::debug!(in_reply_to = %o.in_reply_to, "outcome");
        }
    });
    serve(listener, app.http_state()).await
}

async fn serve_production(stores: Stores, brokers: &str, roles: Roles, config: &Config) -> anyhow::Result<()> {
    let cfg = KafkaConfig::from_env(brokers);
    let pipeline = config.pipeline(&stores.ledger).await?;
    let mut prod = production::start_with(stores, cfg, roles, pipeline).await?;
    if let Some(addr) = config.metrics_addr {
        spawn_metrics(addr).await?;
    }
    tracing::info!(?roles, "stages started");
    let http = match roles.api {
        true => {
            let listener = TcpListener::bind(config.http_addr).await?;
            println!("facepay API listening on http://{} (Kafka at {brokers})", listener.local_addr()?);
            tokio::spawn(serve(listener, prod.http.clone()))
        }
        false => tokio::spawn(async {
            shutdown_signal().await;
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
