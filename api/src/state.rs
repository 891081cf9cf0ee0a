//! What every handler shares ([`AppState`]): the store, the registry, where accepted events
//! go ([`Ingress`]: the embedded pipeline or the device-events topic), authentication, the
//! device verifier, order lookups and the platform's clock.

use std::sync::Arc;
use std::time::Duration;

use facepay_domain::limits::INGEST_ENQUEUE_TIMEOUT_MS;
use facepay_domain::time::SharedClock;
use facepay_ingest::authenticity::DeviceVerifier;
use facepay_ingest::kafka::{device_event_headers, device_event_key};
use facepay_ingest::{Inbound, SharedRegistry};
use facepay_ledger::reconcile::store::ReconStore;
use facepay_ledger::LedgerStore;
use tokio::sync::mpsc;

use crate::auth::Auth;
use crate::error::ApiError;

/// What every handler shares, behind one `Arc`: axum clones the state for each request,
/// and cloning (then dropping) each field's handle was 4 % of the API's CPU under load.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The authentication of every request ([`crate::auth::Authorized`], the throttle).
impl axum::extract::FromRef<AppState> for Arc<Auth> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// The handlers' shared parts.
pub struct Shared {
    pub store: Arc<dyn LedgerStore>,
    /// Reconciliation over the same database.
    pub recon: Arc<dyn ReconStore>,
    pub registry: SharedRegistry,
    /// Where `POST /v1/events` puts what it accepts.
    pub input: Ingress,
    /// API keys, principals, rate limits, cursors.
    pub auth: Arc<Auth>,
    /// Device signatures (the same checks the validate stage runs).
    pub verifier: Arc<DeviceVerifier>,
    /// Order lookups, read together: the route devices poll after a timeout.
    pub orders: facepay_ledger::lookup::OrderLookup,
    /// The platform's clock: an event's accept time.
    pub clock: SharedClock,
    /// Requests waiting for their event's outcome (`Prefer: wait`), this process's.
    pub waiters: Arc<facepay_ingest::waiters::Waiters>,
    /// The console's signed-in browsers, this process's.
    pub console: Arc<crate::console::session::Sessions>,
}

/// Where the HTTP ingest path puts an accepted event.
#[derive(Clone)]
pub enum Ingress {
    /// The embedded pipeline's input channel.
    Pipeline(mpsc::Sender<Inbound>),
    /// The device-events topic (production): an event is accepted (202) only once the broker
    /// has acknowledged it, so a 202 is never lost; a broker that does not answer within
    /// `timeout` gets the device a 503 to retry.
    Kafka { producer: rdkafka::producer::FutureProducer, topic: String, timeout: Duration },
}

impl Ingress {
    /// Puts an event in: the parsed envelope in-process; over Kafka the very bytes it came as,
    /// with their signature, so the matcher checks them again, and the platform's stamp of
    /// when it accepted them (`stamp`), so the matcher judges them on that time.
    pub(crate) async fn accept(
        &self,
        envelope: facepay_domain::Envelope,
        body: &[u8],
        signature: &str,
        stamp: &str,
    ) -> Result<(), ApiError> {
        match self {
            Ingress::Pipeline(input) => {
                let timeout = Duration::from_millis(INGEST_ENQUEUE_TIMEOUT_MS);
                let request_id = crate::error::REQUEST_ID.try_with(Clone::clone).ok();
                let inbound = Inbound::Checked { envelope, request_id };
                input.send_timeout(inbound, timeout).await.map_err(|_| ApiError::Overloaded)
            }
            Ingress::Kafka { producer, topic, timeout } => {
                let (device, merchant) = (envelope.origin.device(), envelope.origin.merchant_id());
                let event_id = envelope.event_id.to_string();
                let key = device_event_key(
                    device.map(|d| d.device_id.as_str()),
                    merchant.map(|m| m.as_str()),
                    Some(event_id.as_str()),
                );
                let request_id = crate::error::REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
                let headers = device_event_headers(Some(signature), Some(stamp), Some(request_id.as_str()));
                let record =
                    rdkafka::producer::FutureRecord::to(topic).key(key.as_str()).payload(body).headers(headers);
                facepay_ingest::kafka::sent_within(producer, record, *timeout).await.map_err(|e| {
                    tracing::warn!(error = %e, "the broker did not take an event; the device is told to retry");
                    ApiError::Overloaded
                })
            }
        }
    }
}
