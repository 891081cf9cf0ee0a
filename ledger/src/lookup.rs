//! Order lookups read together: the read path a device polls after a timeout.
//!
//! Each lookup is one indexed row, so a query's cost is almost all round trip and statement
//! overhead. An [`OrderLookup`] keeps at most [`ORDER_LOOKUP_QUERIES_MAX`] queries in flight;
//! lookups that arrive meanwhile wait in a bounded queue and the next free query reads all
//! of them (up to [`ORDER_LOOKUP_BATCH_MAX`]) at once. Nothing waits on a timer: a lone
//! lookup on an idle server goes out at once, and under load the batches grow by themselves.
//! Every answer is read from the store after the lookup was asked (no cache): a device never
//! sees an order older than its question.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use facepay_domain::limits::{ORDER_LOOKUP_BATCH_MAX, ORDER_LOOKUP_QUERIES_MAX, ORDER_LOOKUP_QUEUE_MAX};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::model::{Order, OrderKey};
use crate::store::{ProjectionReader, StoreError};

/// One caller's lookup and where its answer goes.
struct Asked {
    key: OrderKey,
    answer: oneshot::Sender<Result<Option<Order>, StoreError>>,
}

/// A handle to the batching reader; cheap to clone. The reader stops when every handle is gone.
#[derive(Clone)]
pub struct OrderLookup {
    queue: mpsc::Sender<Asked>,
    stats: Arc<Stats>,
}

/// How well lookups are batched: lookups answered and the queries that read them.
#[derive(Debug, Default)]
struct Stats {
    lookups: AtomicU64,
    queries: AtomicU64,
}

impl OrderLookup {
    /// Starts the reader on the current tokio runtime.
    pub fn spawn(store: Arc<dyn ProjectionReader>) -> Self {
        let (queue, asked) = mpsc::channel(ORDER_LOOKUP_QUEUE_MAX);
        let stats = Arc::new(Stats::default());
        tokio::spawn(read_batches(store, asked, stats.clone()));
        Self { queue, stats }
    }

    /// Lookups answered and queries sent so far (their ratio is the mean batch).
    pub fn stats(&self) -> (u64, u64) {
        (self.stats.lookups.load(Ordering::Relaxed), self.stats.queries.load(Ordering::Relaxed))
    }

    /// The order `key`, as the store holds it now.
    pub async fn order(&self, key: OrderKey) -> Result<Option<Order>, StoreError> {
        let (answer, answered) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the order reader has stopped".into());
        self.queue.send(Asked { key, answer }).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Takes whatever is queued whenever a query slot is free, and reads it in one query.
async fn read_batches(store: Arc<dyn ProjectionReader>, mut asked: mpsc::Receiver<Asked>, stats: Arc<Stats>) {
    let slots = Arc::new(Semaphore::new(ORDER_LOOKUP_QUERIES_MAX));
    loop {
        // The slot first: while every slot is busy, lookups pile up for the next batch.
        let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let mut batch = Vec::with_capacity(ORDER_LOOKUP_BATCH_MAX);
        if asked.recv_many(&mut batch, ORDER_LOOKUP_BATCH_MAX).await == 0 {
            return;
        }
        stats.queries.fetch_add(1, Ordering::Relaxed);
        stats.lookups.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let store = store.clone();
        tokio::spawn(async move {
            answer_batch(store.as_ref(), batch).await;
            drop(slot);
        });
    }
}

async fn answer_batch(store: &dyn ProjectionReader, batch: Vec<Asked>) {
    let keys: Vec<OrderKey> = batch.iter().map(|a| a.key.clone()).collect();
    match store.orders(&keys).await {
        Ok(found) => {
            for a in batch {
                // The caller may have given up (its request timed out): nothing to tell then.
                let _ = a.answer.send(Ok(found.get(&a.key).cloned()));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, lookups = batch.len(), "order lookup failed");
            let shared = err.to_string();
            for a in batch {
                let _ = a.answer.send(Err(StoreError::Unavailable(shared.clone())));
            }
        }
    }
}
