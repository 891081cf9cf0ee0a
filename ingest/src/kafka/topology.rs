//! The topics facepay's stages meet on, their record headers, and their creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::*;

/// Topic suffixes; the configured prefix (default `facepay.`) goes in front.
pub const DEVICE_EVENTS: &str = "device-events";

pub const LEDGER_COMMANDS: &str = "ledger-commands";

pub const LEDGER_OUTCOMES: &str = "ledger-outcomes";

pub const DEAD_LETTER: &str = "dead-letter";

/// The matcher shards' partial answers and the lead shard's routed events, for the gather.
pub const MATCH_PARTIALS: &str = "match-partials";

/// The record header that carries the id of the HTTP request that brought a device event in,
/// from the device-events topic onto the ledger command (and into the decision's log line).
pub const REQUEST_ID_HEADER: &str = "facepay-request-id";

/// Creates facepay's topics if they are missing (production clusters often have topic
/// auto-creation off, and some brokers have none).
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cfg.client().create()?;
    let names: Vec<String> = [DEVICE_EVENTS, MATCH_PARTIALS, LEDGER_COMMANDS, LEDGER_OUTCOMES, DEAD_LETTER]
        .iter()
        .map(|s| cfg.topic(s))
        .collect();
    let topics: Vec<NewTopic> =
        names.iter().map(|n| NewTopic::new(n, cfg.partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| tracing::error!(%name, "topic"))
            }
        }
    }
    Ok(())
}
