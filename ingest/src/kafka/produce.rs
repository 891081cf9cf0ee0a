//! Producing: one message and its acknowledgement, or many in flight and then their
//! acknowledgements (one round trip per batch).

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::wire::StageMessage;

use super::*;
use facepay_domain::limits::KAFKA_SEND_TIMEOUT_MS;

/// Sends one message and waits for the broker's acknowledgement, at most
/// [`KAFKA_SEND_TIMEOUT_MS`].
pub async fn publish(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
    sent_within(
        producer,
        FutureRecord::to(topic).key(key).payload(payload),
        Duration::from_millis(KAFKA_SEND_TIMEOUT_MS),
    )
    .await
}

/// Sends `record` and waits for its acknowledgement, at most `within` (librdkafka's own
/// deadline is far longer: see `KAFKA_MESSAGE_TIMEOUT_MS`).
pub async fn sent_within(
    producer: &FutureProducer,
    record: FutureRecord<'_, str, [u8]>,
    within: Duration,
) -> Result<(), KafkaError> {
    match tokio::time::timeout(within, producer.send(record, within)).await {
        Ok(sent) => sent.map(|_| ()).map_err(|(e, _)| e),
        Err(_) => Err(timed_out()),
    }
}

fn timed_out() -> KafkaError {
    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::MessageTimedOut)
}

/// The key of a device-events record, the one rule every producer of device events keys by:
/// the device's id (one device's events stay in order, in one partition), else the merchant's
/// (merchant events), else the event's own id (platform events); empty for bytes naming none.
pub fn device_event_key(device_id: Option<&str>, merchant_id: Option<&str>, event_id: Option<&str>) -> String {
    device_id.or(merchant_id).or(event_id).unwrap_or_default().to_string()
}

/// [`device_event_key`] of an event's own bytes (garbage gets the empty key).
pub fn device_event_key_of(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Head {
        device_id: Option<String>,
        merchant_id: Option<String>,
        event_id: Option<String>,
    }
    let head: Option<Head> = serde_json::from_slice(bytes).ok();
    let field = |f: fn(&Head) -> &Option<String>| head.as_ref().and_then(|h| f(h).as_deref());
    device_event_key(field(|h| &h.device_id), field(|h| &h.merchant_id), field(|h| &h.event_id))
}

/// A device-events record's headers: its signature, the platform's stamp of when it accepted
/// it (facepay's own HTTP ingest), the HTTP request's id; each when there is one.
pub fn device_event_headers(
    signature: Option<&str>,
    accepted: Option<&str>,
    request_id: Option<&str>,
) -> rdkafka::message::OwnedHeaders {
    let pairs = [
        (facepay_domain::auth::SIGNATURE_HEADER, signature),
        (facepay_domain::auth::ACCEPTED_HEADER, accepted),
        (REQUEST_ID_HEADER, request_id),
    ];
    pairs.into_iter().fold(rdkafka::message::OwnedHeaders::new_with_capacity(3), |headers, (key, value)| match value {
        Some(value) => headers.insert(rdkafka::message::Header { key, value: Some(value) }),
        None => headers,
    })
}

/// Publishes one device event, keyed by [`device_event_key_of`], with its signature; waits
/// for the ack.
pub async fn publish_signed(
    producer: &FutureProducer,
    topic: &str,
    payload: &[u8],
    signature: Option<&str>,
) -> Result<(), KafkaError> {
    let key = device_event_key_of(payload);
    let record =
        FutureRecord::to(topic).key(key.as_str()).payload(payload).headers(device_event_headers(signature, None, None));
    sent_within(producer, record, Duration::from_millis(KAFKA_SEND_TIMEOUT_MS)).await
}

/// Acknowledgements of sends in flight.
pub type Acks = Vec<rdkafka::producer::DeliveryFuture>;

/// Enqueues one message without waiting; its acknowledgement goes to `acks`.
pub(super) fn enqueue(
    producer: &FutureProducer,
    record: FutureRecord<'_, str, [u8]>,
    acks: &mut Acks,
) -> Result<(), KafkaError> {
    acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
    Ok(())
}

/// Waits for every acknowledgement in `acks`, at most `within` in all; the first failure
/// fails them all. After a failure the caller drops its producer (its run ends).
pub async fn acknowledged(acks: Acks, within: Duration) -> Result<(), KafkaError> {
    acknowledged_by(acks, tokio::time::Instant::now() + within).await
}

/// A batch's acknowledgements, to be awaited later, due within a send timeout of its send.
pub type AcksDue = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), KafkaError>> + Send>>;

/// `acks` of messages sent just now, awaited later: [`acknowledged`] within `within` of now,
/// however late the caller awaits them (the matcher stage awaits a batch's once it has sent
/// the next).
pub fn acks_due(acks: Acks, within: Duration) -> AcksDue {
    Box::pin(acknowledged_by(acks, tokio::time::Instant::now() + within))
}

/// [`acknowledged`], by `deadline`.
async fn acknowledged_by(acks: Acks, deadline: tokio::time::Instant) -> Result<(), KafkaError> {
    let all = async {
        for ack in acks {
            match ack.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e),
                Err(_) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    };
    let done = tokio::time::timeout_at(deadline, all).await.unwrap_or_else(|_| Err(timed_out()));
    if done.is_err() {
        crate::metrics::METRICS.broker_error();
    }
    done
}

/// Enqueues `routed` on the ledger-commands topic `topic`, under its own key.
pub(super) fn enqueue_command(
    producer: &FutureProducer,
    topic: &str,
    routed: &StageMessage,
    acks: &mut Acks,
) -> Result<(), TransportError> {
    let (key, payload) = (routed.key(), serde_json::to_vec(routed)?);
    Ok(enqueue(producer, FutureRecord::to(topic).key(key.as_str()).payload(payload.as_slice()), acks)?)
}
