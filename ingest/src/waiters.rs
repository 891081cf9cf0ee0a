//! Requests waiting for their event's outcome: a device that sent `Prefer: wait=N` is
//! answered with the decision as soon as it is made, instead of polling for its order.
//!
//! One [`Waiters`] per process, bounded ([`DEVICE_WAITERS_MAX`]). A request registers before
//! its event enters the pipeline, so no decision can slip past it, and its [`Waiter`] removes
//! itself when dropped (answered, timed out, or the client gone). Outcomes are delivered
//! where this process learns them:
//! - the embedded pipeline passes every outcome past its waiters ([`crate::Pipeline`]);
//! - a Kafka ledger stage delivers what each of its commits answered;
//! - a process whose events another process decides hears of each commit from the database
//!   ([`follow_decided`], PostgreSQL `NOTIFY`; see `facepay_ledger::decided`) and reads the
//!   stored answers it waits for.
//!
//! A waiter hears only an outcome for its own sender: an event id that another device used
//! is not its answer. A replay refusal of a copy sent again is told apart
//! ([`is_replay_refusal`]): the waiting request then looks for the first copy's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use facepay_domain::limits::{DEVICE_WAITERS_MAX, STAGE_RESTART_BACKOFF_MAX_MS};
use facepay_domain::{DeviceRef, FieldErrorKind, Outcome, OutcomeBody};
use facepay_ledger::LedgerStore;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The waiting requests of one process.
#[derive(Debug)]
pub struct Waiters {
    inner: Mutex<Inner>,
    max: usize,
}

#[derive(Debug, Default)]
struct Inner {
    by_event: HashMap<Uuid, Vec<Slot>>,
    len: usize,
    next_id: u64,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    sender: Option<DeviceRef>,
    tx: oneshot::Sender<Outcome>,
}

impl Default for Waiters {
    fn default() -> Self {
        Self::new(DEVICE_WAITERS_MAX)
    }
}

impl Waiters {
    /// At most `max` waiting at once (at most [`DEVICE_WAITERS_MAX`]).
    pub fn new(max: usize) -> Self {
        Self { inner: Mutex::default(), max: max.min(DEVICE_WAITERS_MAX) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the outcome of `event_id` sent by `sender` (none: the platform or a
    /// merchant); `None` when [`Waiters::new`]'s bound is reached.
    pub fn register(self: &Arc<Self>, event_id: Uuid, sender: Option<DeviceRef>) -> Option<Waiter> {
        let mut inner = self.lock();
        if inner.len >= self.max {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.by_event.entry(event_id).or_default().push(Slot { id, sender, tx });
        inner.len += 1;
        Some(Waiter { waiters: self.clone(), event_id, id, rx })
    }

    /// How many requests wait now.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Those of `event_ids` that a request waits for.
    pub fn waited_for(&self, event_ids: &[Uuid]) -> Vec<Uuid> {
        let inner = self.lock();
        event_ids.iter().filter(|id| inner.by_event.contains_key(id)).copied().collect()
    }

    /// Hands `outcome` to the requests waiting for it from its sender.
    pub fn deliver(&self, outcome: &Outcome) {
        let mut inner = self.lock();
        let Some(slots) = inner.by_event.get_mut(&outcome.in_reply_to) else { return };
        let (mine, others): (Vec<Slot>, Vec<Slot>) =
            std::mem::take(slots).into_iter().partition(|s| s.sender == outcome.device);
        *slots = others;
        if slots.is_empty() {
            inner.by_event.remove(&outcome.in_reply_to);
        }
        inner.len -= mine.len();
        for slot in mine {
            let _ = slot.tx.send(outcome.clone());
        }
    }

    fn forget(&self, event_id: Uuid, id: u64) {
        let mut inner = self.lock();
        let Some(slots) = inner.by_event.get_mut(&event_id) else { return };
        let before = slots.len();
        slots.retain(|s| s.id != id);
        let removed = before - slots.len();
        if slots.is_empty() {
            inner.by_event.remove(&event_id);
        }
        inner.len -= removed;
    }
}

/// Whether `outcome` refuses a copy of an event as a replay: for a request that sent its
/// event id again, not the answer (the first copy's decision is).
pub fn is_replay_refusal(outcome: &Outcome) -> bool {
    matches!(&outcome.body, OutcomeBody::Rejected { code, .. } if code == FieldErrorKind::Replayed.as_str())
}

/// One waiting request; dropping it stops the wait.
#[derive(Debug)]
pub struct Waiter {
    waiters: Arc<Waiters>,
    event_id: Uuid,
    id: u64,
    rx: oneshot::Receiver<Outcome>,
}

impl Waiter {
    /// The outcome, if it is decided within `limit`.
    pub async fn outcome(mut self, limit: Duration) -> Option<Outcome> {
        tokio::time::timeout(limit, &mut self.rx).await.ok()?.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Answered: the slot is gone already, and this finds nothing.
        self.waiters.forget(self.event_id, self.id);
    }
}

/// Delivers to `waiters` what other processes' commits answered, as the database tells of
/// each commit (PostgreSQL `NOTIFY`): for the events a request here waits for, their stored
/// answers. Runs until `stop`; without a listener (SQLite) it only waits for `stop`. A lost
/// connection is listened on again after a pause; what was decided meanwhile is not heard
/// (those requests are answered 202 at their deadline and query their orders).
pub async fn follow_decided(
    store: Arc<dyn LedgerStore>,
    waiters: std::sync::Weak<Waiters>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let pause = Duration::from_millis(STAGE_RESTART_BACKOFF_MAX_MS);
    let mut listener = match store.decided_listener().await {
        Ok(Some(listener)) => listener,
        Ok(None) => return stop.await,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for decisions; waiting devices will be answered 202");
            return stop.await;
        }
    };
    loop {
        let ids = tokio::select! {
            _ = &mut stop => return,
            ids = listener.recv() => ids,
        };
        let Some(waiters) = waiters.upgrade() else { return };
        let result = match ids {
            Ok(ids) => deliver_stored(store.as_ref(), &waiters, &ids).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "listening for decisions failed; listening again");
            tokio::time::sleep(pause).await;
        }
    }
}

/// The stored answers of those of `ids` a request waits for, delivered.
async fn deliver_stored(
    store: &dyn LedgerStore,
    waiters: &Waiters,
    ids: &[Uuid],
) -> Result<(), facepay_ledger::StoreError> {
    let wanted = waiters.waited_for(ids);
    if wanted.is_empty() {
        return Ok(());
    }
    for (id, answer) in store.answered(&wanted).await? {
        waiters.deliver(&answer.outcome(id)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use facepay_domain::{DeviceId, MerchantId, StoreId};

    fn device(id: &str) -> DeviceRef {
        DeviceRef {
            merchant_id: MerchantId::parse("1900000101").unwrap(),
            store_id: StoreId::parse("S01").unwrap(),
            device_id: DeviceId::parse(id).unwrap(),
        }
    }

    fn applied(event_id: Uuid, device: Option<DeviceRef>) -> Outcome {
        Outcome {
            in_reply_to: event_id,
            decided_at: chrono::Utc::now(),
            device,
            body: OutcomeBody::Applied { kind: "face_captured".into() },
        }
    }

    #[tokio::test]
    async fn given_a_waiting_request_when_its_outcome_is_delivered_then_it_hears_it_and_its_slot_is_freed() {
        let waiters = Arc::new(Waiters::new(4));
        let id = Uuid::new_v4();
        let waiter = waiters.register(id, Some(device("DEV-1"))).unwrap();
        assert_eq!(waiters.waited_for(&[id, Uuid::new_v4()]), vec![id]);
        waiters.deliver(&applied(id, Some(device("DEV-1"))));
        assert!(waiters.is_empty());
        assert_eq!(waiter.outcome(Duration::from_secs(1)).await.unwrap().in_reply_to, id);
    }

    #[tokio::test]
    async fn an_outcome_for_another_device_under_the_same_event_id_is_not_the_answer() {
        let waiters = Arc::new(Waiters::new(4));
        let id = Uuid::new_v4();
        let waiter = waiters.register(id, Some(device("DEV-1"))).unwrap();
        waiters.deliver(&applied(id, Some(device("DEV-2"))));
        waiters.deliver(&applied(id, None));
        assert_eq!(waiters.len(), 1);
        assert!(waiter.outcome(Duration::from_millis(20)).await.is_none());
        assert!(waiters.is_empty(), "a timed-out waiter frees its slot");
    }

    #[test]
    fn a_replay_refusal_is_told_apart_from_an_answer() {
        let id = Uuid::new_v4();
        let replay = OutcomeBody::Rejected {
            kind: "payment_requested".into(),
            code: FieldErrorKind::Replayed.as_str().into(),
            field: "event_id".into(),
            message: "seen".into(),
        };
        assert!(is_replay_refusal(&Outcome { body: replay, ..applied(id, None) }));
        assert!(!is_replay_refusal(&applied(id, None)));
    }

    #[test]
    fn past_the_bound_no_one_else_waits_and_a_dropped_waiter_makes_room() {
        let waiters = Arc::new(Waiters::new(2));
        let a = waiters.register(Uuid::new_v4(), None).unwrap();
        let _b = waiters.register(Uuid::new_v4(), None).unwrap();
        assert!(waiters.register(Uuid::new_v4(), None).is_none());
        drop(a);
        assert!(waiters.register(Uuid::new_v4(), None).is_some());
    }
}
