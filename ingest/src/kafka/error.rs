//! What stops a Kafka stage's run: transient failures restart it after a pause.

use rdkafka::error::KafkaError;

use facepay_ledger::StoreError;

/// Failures that stop a Kafka stage run: a transient one restarts it after a pause (see
/// `facepay serve`), any other ends the process.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("store: {0}")]
    Store(#[from] facepay_ledger::StoreError),
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("face store: {0}")]
    Faces(String),
}

impl From<crate::faces::FaceStoreError> for TransportError {
    fn from(e: crate::faces::FaceStoreError) -> Self {
        match e {
            crate::faces::FaceStoreError::Store(s) => TransportError::Store(s),
            other => TransportError::Faces(other.to_string()),
        }
    }
}

impl TransportError {
    /// True for failures of a service that may come back (the database or the broker down,
    /// a connection lost): the stage is restarted after a pause. False for what a restart
    /// cannot fix (bad configuration, corrupt data, a failed migration).
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::Kafka(_) => true,
            TransportError::Store(
                StoreError::Database(_)
                | StoreError::Conflict(_)
                | StoreError::Fenced(_)
                | StoreError::Unavailable(_)
                | StoreError::WriteConflict(_),
            ) => true,
            TransportError::Store(StoreError::Corrupt(_) | StoreError::Migration(_)) => false,
            TransportError::Encoding(_) | TransportError::Config(_) | TransportError::Faces(_) => false,
        }
    }
}
