//! `facepay-bench pipeline`, phase 5: the ledger alone. The ledger commands the saturated
//! run's matcher wrote are read back and committed as the ledger stage commits them
//! ([`facepay_ingest::kafka::ledger_batch`]: the same decoding, rows, outbox and offsets), in
//! full batches, with no broker in between: the ceiling of the pipeline's own ledger on this
//! machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use facepay_ingest::kafka::{self, KafkaConfig, LEDGER_COMMANDS};
use facepay_ledger::{Ledger, LedgerStore, Policy};
use rdkafka::message::{Message, OwnedMessage};

/// Reads `run`'s ledger commands back and commits them alone into `store` (fresh, its fleet
/// registered): the seconds the commits took.
pub async fn commit_alone_s(store: Arc<dyn LedgerStore>, run: &KafkaConfig) -> anyhow::Result<f64> {
    let topic = run.topic(LEDGER_COMMANDS);
    let (cfg, topics) = (run.clone(), vec![topic.clone()]);
    let mut messages = tokio::task::spawn_blocking(move || kafka::read_partitions(&cfg, &topics, None)).await??;
    // As the stage meets them: the partitions side by side, each in its order.
    messages.sort_by_key(|m| (m.offset(), m.partition()));
    let ledger = Ledger::new(store, Policy::default()).uncached();
    let began = Instant::now();
    commit_all(run, &topic, &ledger, &messages).await?;
    Ok(began.elapsed().as_secs_f64())
}

/// Commits `messages` in batches of the stage's size, each moving the offsets it passes.
async fn commit_all(cfg: &KafkaConfig, topic: &str, ledger: &Ledger, messages: &[OwnedMessage]) -> anyhow::Result<()> {
    let mut done: HashMap<i32, i64> = HashMap::new();
    for batch in messages.chunks(cfg.batch_max) {
        let (commands, delivery) = kafka::ledger_batch(cfg, topic, batch, &done);
        ledger.handle_delivery(&commands, &delivery).await?;
        done.extend(delivery.offsets.iter().map(|o| (o.partition, o.next_offset)));
    }
    Ok(())
}
