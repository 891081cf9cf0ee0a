//! Where the broker is and how facepay uses it (`FACEPAY_KAFKA_*`), and the clients made
//! from it (consumers that log their assignments and report their lag, producers).

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use facepay_domain::limits::{
    KAFKA_FETCH_WAIT_MAX_MS, KAFKA_MESSAGE_TIMEOUT_MS, KAFKA_PARTITIONS_DEFAULT, KAFKA_PARTITIONS_MAX,
    KAFKA_PRODUCER_BATCH_MAX, KAFKA_SEND_TIMEOUT_MS, KAFKA_STATS_INTERVAL_MS, LEDGER_BATCH_LINGER_MS, LEDGER_BATCH_MAX,
    OUTBOX_LEASE_MARGIN_MS, OUTBOX_LEASE_MS, OUTBOX_SEND_TIMEOUT_MS,
};

/// Where the broker is and how facepay uses it. Every name is configuration, documented in
/// `docs/events.md` and the README.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `FACEPAY_KAFKA_BROKERS`: `host:port[,host:port…]`.
    pub brokers: String,
    /// `FACEPAY_KAFKA_TOPIC_PREFIX`, default `facepay.`; lets several deployments (or test
    /// runs) share one cluster.
    pub topic_prefix: String,
    /// `FACEPAY_KAFKA_MATCH_GROUP`, default `facepay-match`: the validate + match stage. With
    /// the gallery split over shards, shard `i` consumes in `<group>-shard-<i>` (every shard
    /// sees every event) and the gather in `<group>-gather`.
    pub match_group: String,
    /// `FACEPAY_KAFKA_LEDGER_GROUP`, default `facepay-ledger`: the ledger stage. Also the
    /// key of the offsets stored in the database.
    pub ledger_group: String,
    /// `FACEPAY_KAFKA_PARTITIONS`, default 8: partitions of topics facepay creates. The
    /// ceiling on how many processes a stage can spread over.
    pub partitions: i32,
    /// `FACEPAY_LEDGER_BATCH_MAX`: most commands per ledger transaction.
    pub batch_max: usize,
    /// How long the ledger waits for a batch to fill once it has one command.
    pub batch_linger: Duration,
    /// `FACEPAY_KAFKA_FETCH_WAIT_MS`, default [`KAFKA_FETCH_WAIT_MAX_MS`]: longest a
    /// consumer's fetch waits at the broker for data. On a broker that holds a fetch open
    /// until the wait ends, each topic an event crosses can cost up to this much; lower it
    /// for latency there, at the price of more fetch requests on the broker.
    pub fetch_wait: Duration,
    /// `FACEPAY_KAFKA_SEND_TIMEOUT_MS`: how long a produce may take, retries included.
    pub send_timeout: Duration,
    /// `FACEPAY_OUTBOX_LEASE_MS`: the outbox relay's lease; at least the relay's send timeout
    /// plus twice [`OUTBOX_LEASE_MARGIN_MS`] (checked by [`KafkaConfig::check`]).
    pub outbox_lease: Duration,
    /// `FACEPAY_OUTBOX_SEND_TIMEOUT_MS`: how long the relay's produce may take, retries included.
    pub outbox_send_timeout: Duration,
}

impl KafkaConfig {
    /// The configuration for `brokers`, other fields at their defaults.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: "facepay.".into(),
            match_group: "facepay-match".into(),
            ledger_group: "facepay-ledger".into(),
            partitions: KAFKA_PARTITIONS_DEFAULT,
            batch_max: LEDGER_BATCH_MAX,
            batch_linger: Duration::from_millis(LEDGER_BATCH_LINGER_MS),
            fetch_wait: Duration::from_millis(KAFKA_FETCH_WAIT_MAX_MS),
            send_timeout: Duration::from_millis(KAFKA_SEND_TIMEOUT_MS),
            outbox_lease: Duration::from_millis(OUTBOX_LEASE_MS),
            outbox_send_timeout: Duration::from_millis(OUTBOX_SEND_TIMEOUT_MS),
        }
    }

    /// Refuses settings that break the relay's guarantee: a lease that could lapse while a
    /// send its holder started is still in flight (the holder renews when less than a send and
    /// a margin are left; a second margin keeps renewals from running back to back).
    pub fn check(&self) -> Result<(), String> {
        if !(1..=KAFKA_PARTITIONS_MAX).contains(&self.partitions) {
            return Err(format!("FACEPAY_KAFKA_PARTITIONS ({}) must be 1 to {KAFKA_PARTITIONS_MAX}", self.partitions));
        }
        let margin = Duration::from_millis(OUTBOX_LEASE_MARGIN_MS);
        let needed = self.outbox_send_timeout + 2 * margin;
        if self.outbox_lease < needed {
            return Err(format!(
                "FACEPAY_OUTBOX_LEASE_MS ({} ms) must be at least FACEPAY_OUTBOX_SEND_TIMEOUT_MS plus twice {} ms ({} ms)",
                self.outbox_lease.as_millis(),
                OUTBOX_LEASE_MARGIN_MS,
                needed.as_millis()
            ));
        }
        Ok(())
    }

    /// How much of its lease the relay must have left to start a send.
    pub fn outbox_lease_needed(&self) -> Duration {
        self.outbox_send_timeout + Duration::from_millis(OUTBOX_LEASE_MARGIN_MS)
    }

    /// Reads the documented environment variables over the defaults.
    pub fn from_env(brokers: impl Into<String>) -> Self {
        let mut c = Self::new(brokers);
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("FACEPAY_KAFKA_TOPIC_PREFIX") {
            c.topic_prefix = v;
        }
        if let Some(v) = var("FACEPAY_KAFKA_MATCH_GROUP") {
            c.match_group = v;
        }
        if let Some(v) = var("FACEPAY_KAFKA_LEDGER_GROUP") {
            c.ledger_group = v;
        }
        if let Some(v) = var("FACEPAY_KAFKA_PARTITIONS").and_then(|v| v.parse().ok()) {
            c.partitions = v;
        }
        if let Some(v) = var("FACEPAY_LEDGER_BATCH_MAX").and_then(|v| v.parse().ok()) {
            c.batch_max = v;
        }
        if let Some(v) = var("FACEPAY_KAFKA_FETCH_WAIT_MS").and_then(|v| v.parse().ok()) {
            c.fetch_wait = Duration::from_millis(v);
        }
        if let Some(v) = var("FACEPAY_KAFKA_SEND_TIMEOUT_MS").and_then(|v| v.parse().ok()) {
            c.send_timeout = Duration::from_millis(v);
        }
        if let Some(v) = var("FACEPAY_OUTBOX_LEASE_MS").and_then(|v| v.parse().ok()) {
            c.outbox_lease = Duration::from_millis(v);
        }
        if let Some(v) = var("FACEPAY_OUTBOX_SEND_TIMEOUT_MS").and_then(|v| v.parse().ok()) {
            c.outbox_send_timeout = Duration::from_millis(v);
        }
        c
    }

    /// The consumer group of the matcher stage serving `shard`.
    pub fn match_group_of(&self, shard: crate::faces::Shard) -> String {
        match shard.count > 1 {
            true => format!("{}-shard-{}", self.match_group, shard.index),
            false => self.match_group.clone(),
        }
    }

    /// The consumer group of the matcher's gather.
    pub fn gather_group(&self) -> String {
        format!("{}-gather", self.match_group)
    }

    /// The full name of topic `suffix`.
    pub fn topic(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.topic_prefix)
    }

    pub(super) fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("socket.timeout.ms", "10000");
        c
    }

    /// The settings of a consumer in `group` that commits nothing by itself.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.client();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("fetch.wait.max.ms", self.fetch_wait.as_millis().to_string());
        c
    }

    /// A consumer in `group` that commits nothing by itself.
    pub fn consumer(&self, group: &str) -> Result<StreamConsumer, KafkaError> {
        self.consumer_config(group).create()
    }

    /// A consumer like [`KafkaConfig::consumer`] that logs every partition assignment (at
    /// info: operators see where each partition went after a rebalance), reports its lag per
    /// partition and counts the errors of its brokers (see [`crate::metrics`]).
    pub fn logged_consumer(&self, group: &str) -> Result<StreamConsumer<LogAssignments>, KafkaError> {
        let mut c = self.consumer_config(group);
        c.set("statistics.interval.ms", KAFKA_STATS_INTERVAL_MS.to_string());
        c.create_with_context(LogAssignments)
    }

    /// An idempotent producer: the broker drops the duplicates its own retries would make,
    /// so a message is written at most once per send. Its callers time their sends out
    /// themselves ([`KAFKA_MESSAGE_TIMEOUT_MS`] says why) and drop it when one does. Its record
    /// batches hold at most [`KAFKA_PRODUCER_BATCH_MAX`] records.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.client()
            .set("message.timeout.ms", KAFKA_MESSAGE_TIMEOUT_MS.to_string())
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("batch.num.messages", KAFKA_PRODUCER_BATCH_MAX.to_string())
            .create()
    }
}

/// Logs each partition assignment a consumer receives; turns its statistics into the ingest
/// lag per partition and its errors into the broker-error count.
pub struct LogAssignments;

impl rdkafka::ClientContext for LogAssignments {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            // librdkafka lists partition -1 (internal) and reports -1 where it knows no lag.
            // The lag is from the offset of the last record handed to the stage (stored): the
            // stages own their partitions through the database and commit nothing to the
            // broker, so its committed-offset lag is unknown.
            let lags = t.partitions.iter().filter(|(p, s)| **p >= 0 && s.consumer_lag_stored >= 0);
            crate::metrics::METRICS.ingest_lag(topic, lags.map(|(p, s)| (*p, s.consumer_lag_stored)).collect());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::metrics::METRICS.broker_error();
        tracing::warn!(%error, reason, "broker error");
    }
}

impl rdkafka::consumer::ConsumerContext for LogAssignments {
    fn post_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?partitions, "assigned partitions");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every consumer takes its fetch wait from the configuration (`FACEPAY_KAFKA_FETCH_WAIT_MS`),
    /// not librdkafka's 500 ms default.
    #[test]
    fn consumers_wait_for_a_fetch_as_configured() {
        let mut cfg = KafkaConfig::new("127.0.0.1:9092");
        let wait = |cfg: &KafkaConfig| cfg.consumer_config("g").get("fetch.wait.max.ms").map(str::to_string);
        assert_eq!(wait(&cfg), Some(KAFKA_FETCH_WAIT_MAX_MS.to_string()));
        cfg.fetch_wait = Duration::from_millis(3);
        assert_eq!(wait(&cfg), Some("3".to_string()));
    }
}
