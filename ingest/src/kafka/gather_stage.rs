//! The gather over Kafka (matcher scale-out): the shards' partials in, each capture's
//! decision and the lead shard's routed events out to the ledger-commands topic.

use rdkafka::message::Message;
use rdkafka::message::OwnedMessage;

use crate::wire::StageMessage;

use super::*;
use facepay_domain::limits::MATCH_BATCH_MAX;

/// The matcher's gather (the gallery split over shards): the match-partials topic in; each
/// capture decided from all its shards' partials ([`crate::gather::Gather`]); payments with
/// their identity and everything else the lead shard routed out to the ledger-commands
/// topic. Its partitions are owned through the database ([`OwnedPartitions`]), like the other
/// stages': a killed process's move to the survivors when its leases lapse. At-least-once
/// like the shards: the position kept for a partition never passes a partial it still holds,
/// its decisions are kept in the store before that (with a face store), and the ledger
/// recognises repeats.
pub async fn run_gather_stage(
    cfg: KafkaConfig,
    deps: std::sync::Arc<MatchDeps>,
    gather: std::sync::Arc<tokio::sync::Mutex<crate::gather::Gather>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let mut gather = gather.lock_owned().await;
    let (group, topic) = (cfg.gather_group(), cfg.topic(MATCH_PARTIALS));
    let consumer = cfg.logged_consumer(&group)?;
    let mut owned = OwnedPartitions::new(&cfg, &group, &topic, &deps.holder, Resume::Processed);
    let producer = cfg.producer()?;
    let commands = cfg.topic(LEDGER_COMMANDS);
    let (mut errors, mut guard) = (RecvErrors::default(), SkipGuard::default());
    loop {
        let deadline = gather.next_deadline().map(tokio::time::Instant::from_std);
        let first = tokio::select! {
            _ = shutdown.changed() => return owned.leave(deps.store.as_ref()).await,
            msg = consumer.recv() => Some(msg),
            _ = sleep_until(deadline) => None,
            _ = owned.tick_due() => None,
        };
        let moved = owned.maintain(&consumer, deps.store.as_ref()).await?;
        if moved.changed() {
            guard.assigned(owned.assigned_from().clone());
        }
        if let (true, Some(faces)) = (moved.grew, &deps.faces) {
            gather.restore_captures(faces.recent_captures(chrono::Utc::now()).await?);
        }
        // What came from a partition that went is its new holder's to gather (its records
        // still in flight here are filtered out of each batch below).
        if moved.shrank {
            gather.retain_partitions(owned.held());
        }
        let mut batch = Vec::new();
        if let Some(first) = received_under(first, moved) {
            let Some(first) = errors.check(first).await? else { continue };
            batch.push(first.detach());
            fill_batch(&consumer, &mut errors, &mut batch, cfg.batch_linger, MATCH_BATCH_MAX).await?;
        }
        // Records fetched before a partition moved away are its new holder's to gather.
        batch.retain(|m| owned.held().contains(&m.partition()));
        guard.check(&consumer, &topic, &mut batch);
        gather_batch(&deps, &producer, &commands, &mut gather, &batch, cfg.send_timeout).await?;
        guard.processed(&batch);
        let pinned = gather.pinned();
        batch.retain(|m| pinned.get(&m.partition()).is_none_or(|&p| m.offset() < p));
        owned.processed(&batch);
    }
}

/// Offers `batch` to the gather with what expired, sends every decision and routed event to
/// the ledger-commands topic, keeps the identified captures, then waits for the sends.
async fn gather_batch(
    deps: &MatchDeps,
    producer: &rdkafka::producer::FutureProducer,
    commands: &str,
    gather: &mut crate::gather::Gather,
    batch: &[OwnedMessage],
    send_timeout: std::time::Duration,
) -> Result<(), TransportError> {
    let now = std::time::Instant::now();
    let mut out: Vec<StageMessage> =
        batch.iter().flat_map(|m| gather.offer(gather_message(m), position(m), now)).collect();
    out.extend(gather.expire(now));
    let mut acks = Acks::with_capacity(out.len());
    for routed in &out {
        enqueue_command(producer, commands, routed, &mut acks)?;
    }
    let identified = gather.take_identified();
    if let (Some(faces), false) = (&deps.faces, identified.is_empty()) {
        faces.remember_captures(identified, chrono::Utc::now()).await?;
    }
    Ok(acknowledged(acks, send_timeout).await?)
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Where `m` sits, for the gather.
fn position(m: &OwnedMessage) -> crate::gather::Position {
    crate::gather::Position { partition: m.partition(), offset: m.offset() }
}

/// A match-partials message, decoded; bytes that are not one become a rejection the ledger
/// keeps (with the reason), so nothing on the topic is dropped unseen.
fn gather_message(m: &OwnedMessage) -> crate::gather::GatherMessage {
    serde_json::from_slice(m.payload().unwrap_or_default())
        .unwrap_or_else(|e| crate::gather::GatherMessage::Routed(Box::new(undecodable(m, "kafka-gather", &e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes on the match-partials topic that are not a gather message are not dropped: they
    /// go on to the ledger as a rejection with their reason, place and raw bytes.
    #[test]
    fn an_undecodable_gather_message_becomes_a_kept_rejection() {
        let bytes = b"{\"type\": \"partial\", \"payload\": 7}".to_vec();
        let m = OwnedMessage::new(
            Some(bytes.clone()),
            Some(b"DEV-1".to_vec()),
            "facepay.match-partials".into(),
            rdkafka::Timestamp::NotAvailable,
            3,
            41,
            None,
        );
        let crate::gather::GatherMessage::Routed(routed) = gather_message(&m) else { panic!("not a rejection") };
        let StageMessage::Rejected(r) = *routed else { panic!("not a rejection: {routed:?}") };
        let kept = r.into_rejection();
        assert_eq!(kept.key, crate::wire::source_key("facepay.match-partials", 3, 41));
        assert_eq!((kept.event.source.as_str(), kept.event.reason_code.as_str()), ("kafka-gather", "malformed"));
        assert_eq!(kept.event.raw, bytes);
    }
}
