//! The ledger service: decides commands in batches and commits each batch atomically.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use facepay_domain::limits::{
    HOLD_EXPIRY_MS, LEDGER_CACHE_ENTITIES_MAX, LEDGER_CONFLICT_PAUSE_MS_MAX, LEDGER_CONFLICT_TRIES_MAX,
    REPLAY_PAGE_EVENTS_MAX,
};
use facepay_domain::time::shanghai_day;
use facepay_domain::{OrderStatus, Outcome, OutcomeBody, PayerId};
use uuid::Uuid;

use crate::command::{Command, CommandKind};
use crate::core::{apply, decide, keys_read, keys_written, payment_result, wallet_checked, Policy};
use crate::lifecycle::refusal_after;
use crate::model::{HoldKey, Keys, LedgerEvent, LedgerState};
use crate::store::{
    device_key, order_key, CommitBatch, ConsumerOffset, HistoryRow, InboundRecord, LedgerStore, NewEvent,
    OutboxMessage, OutboxPayload, RejectedEvent, Repeat, StoreError, StoredAnswer,
};

/// Runs the pure core over batches of commands against a store.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    policy: Policy,
    /// The entities recent batches read or wrote, as committed. Held (locked) from loading a
    /// batch's state to its commit, so batches handled concurrently (through clones of this
    /// ledger) cannot decide on the same stale state. Valid while this ledger is its store's
    /// only writer (the embedded profile has one ledger stage); each batch checks that the
    /// log has not grown behind its back (a reconciliation resolution, a CLI, another
    /// process) and forgets everything if it has.
    cache: Arc<tokio::sync::Mutex<Cache>>,
    /// False when other processes write the same store (the Kafka profile's scale-out):
    /// then every batch reads its entities from the store.
    cache_enabled: bool,
    /// Where a copy of every committed batch goes, when someone asked ([`Ledger::recording`]):
    /// `facepay-bench ledger` writes the very same batches again with no logic (its ceiling).
    recorder: Option<CommitRecorder>,
}

/// Batches a ledger committed, in order (see [`Ledger::recording`]).
pub type CommitRecorder = Arc<std::sync::Mutex<Vec<CommitBatch>>>;

/// A write-through copy of committed entities, so a batch reads from the store only what
/// no recent batch has read. Emptied when it outgrows [`LEDGER_CACHE_ENTITIES_MAX`].
#[derive(Default)]
struct Cache {
    state: LedgerState,
    /// Every key whose entity `state` holds, or knows to be absent.
    known: Keys,
    /// The log position (highest event sequence number) `state` reflects; `None`: unknown.
    position: Option<i64>,
}

impl Cache {
    /// The state of `keys`, loading from `store` those not known yet.
    async fn state_of(&mut self, keys: &Keys, store: &dyn LedgerStore) -> Result<LedgerState, StoreError> {
        let missing = keys.minus(&self.known);
        if !missing.is_empty() {
            let loaded = store.load(&missing).await?;
            self.state.overwrite(&loaded, &missing);
            self.known.extend(&missing);
        }
        Ok(self.state.extract(keys))
    }

    /// Takes in a committed batch's state for `keys`.
    fn committed(&mut self, state: &LedgerState, keys: &Keys) {
        if self.known.len() + keys.len() > LEDGER_CACHE_ENTITIES_MAX {
            *self = Cache::default();
        }
        self.state.overwrite(state, keys);
        self.known.extend(keys);
    }

    /// Drops `keys`: entities a batch changed without reading them (accounts it only posted
    /// to), whose value in the batch's state is a change, not a balance.
    fn forget(&mut self, keys: &Keys) {
        self.state.overwrite(&LedgerState::default(), keys);
        self.known.remove_all(keys);
    }
}

/// What a transport adds to a batch's transaction.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// The consumer offsets this batch advances to, stored with its writes.
    pub offsets: Vec<ConsumerOffset>,
    /// Where answers and dead letters go, through the transactional outbox; `None`: no
    /// outbox (the embedded profile hands outcomes over in process).
    pub outbox: Option<OutboxTopics>,
    /// Answers decided upstream (the matcher's), kept and published once each: a
    /// redelivered one is recognised by the event it answers.
    pub answers: Vec<Outcome>,
    /// Input the transport could not read as commands, kept once (by its key) with the same
    /// commit that moves the offsets past it.
    pub rejected: Vec<Rejection>,
}

/// The topics a transport's outbox publishes to.
#[derive(Debug, Clone)]
pub struct OutboxTopics {
    /// Answers to inbound events, one per event.
    pub outcomes: String,
    /// Rejected input with its reason.
    pub dead_letter: String,
}

/// A rejected input and the key it is kept once by: the event's place on the bus, so that a
/// redelivery of the same bytes is recognised even when they have no readable event id.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub key: Uuid,
    pub event: RejectedEvent,
    /// The authenticated device that sent it, answered on the outcomes topic
    /// ([`OutcomeBody::Rejected`]); none when its sender hears otherwise (an HTTP caller, in
    /// its response) or is not a device.
    pub answer_to: Option<facepay_domain::DeviceRef>,
}

impl Delivery {
    /// The outbox message for `o`, carrying `payload`: keyed by device, so one device's
    /// answers stay in order, or by the event it answers when no device sent it.
    fn answer_message(&self, o: &Outcome, payload: OutboxPayload) -> Option<OutboxMessage> {
        let topics = self.outbox.as_ref()?;
        let key = o.device.as_ref().map_or_else(|| o.in_reply_to.to_string(), |d| d.device_id.to_string());
        Some(OutboxMessage { topic: topics.outcomes.clone(), key, payload })
    }

    /// The outcome that tells the device which sent `r` that it was not taken, keyed as the
    /// device's other outcomes: in reply to its event id when one could be read, else to the
    /// rejection's key. Published once, with the rejection (kept once by its key).
    fn rejection_answer(&self, r: &Rejection) -> Option<OutboxMessage> {
        let e = &r.event;
        let answer = Outcome {
            in_reply_to: e.event_id.unwrap_or(r.key),
            decided_at: e.received_at,
            device: Some(r.answer_to.clone()?),
            body: OutcomeBody::Rejected {
                kind: e.kind.clone().unwrap_or_default(),
                code: e.reason_code.clone(),
                field: e.field.clone().unwrap_or_else(|| ".".into()),
                message: e.message.clone(),
            },
        };
        let payload = serde_json::to_vec(&answer).ok()?;
        self.answer_message(&answer, OutboxPayload::Bytes(payload))
    }

    /// The dead letter for `r`, keyed by its rejection key.
    fn dead_letter(&self, r: &Rejection) -> Option<OutboxMessage> {
        let topics = self.outbox.as_ref()?;
        let e = &r.event;
        let letter = serde_json::json!({
            "key": r.key, "source": e.source, "event_id": e.event_id, "type": e.kind,
            "reason_code": e.reason_code, "field": e.field, "message": e.message,
            "received_at": e.received_at, "raw": String::from_utf8_lossy(&e.raw),
            "raw_truncated": e.raw_truncated,
        });
        let payload = serde_json::to_vec(&letter).ok()?;
        Some(OutboxMessage {
            topic: topics.dead_letter.clone(),
            key: r.key.to_string(),
            payload: OutboxPayload::Bytes(payload),
        })
    }
}

/// What `replay` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    pub events: u64,
    /// Every projection rebuilt from the log equals the live one.
    pub matches: bool,
    /// The first differences found, if any (names of projections and keys, never values of
    /// biometric data: the ledger holds none).
    pub differences: Vec<String>,
}

impl Ledger {
    pub fn new(store: Arc<dyn LedgerStore>, policy: Policy) -> Self {
        Self { store, policy, cache: Arc::default(), cache_enabled: true, recorder: None }
    }

    /// The same ledger, keeping a copy of every batch it commits in `into`: for the
    /// benchmark's ceiling, which writes the same rows in the same batches with no logic.
    pub fn recording(mut self, into: CommitRecorder) -> Self {
        self.recorder = Some(into);
        self
    }

    /// The same ledger, reading every batch's entities from the store: for stores that other
    /// processes write too.
    pub fn uncached(mut self) -> Self {
        self.cache_enabled = false;
        self
    }

    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.store
    }

    /// Decides and commits `commands` in one database transaction and answers each, in order.
    pub async fn handle_batch(&self, commands: &[Command]) -> Result<Vec<Outcome>, StoreError> {
        self.handle_delivery(commands, &Delivery::default()).await
    }

    /// As [`Ledger::handle_batch`], with what a transport adds to the same transaction:
    /// its consumer offsets, and the outcomes through the outbox.
    /// If the store refuses the transaction (a constraint, a value it cannot hold: see
    /// [`StoreError::is_refusal`]), each command is retried alone, and one that is still
    /// refused is answered as refused and kept with the store's reason: a bad command cannot
    /// block its batch. Any other failure (the database down) is returned: nothing decided.
    pub async fn handle_delivery(&self, commands: &[Command], delivery: &Delivery) -> Result<Vec<Outcome>, StoreError> {
        match self.try_until_no_conflict(commands, delivery).await {
            Ok(outcomes) => Ok(outcomes),
            Err(err @ StoreError::Fenced(_)) => Err(err),
            // With offsets, the transport retries one by one: only it knows each command's
            // offset, which must advance with that command and no other.
            Err(err) if commands.len() > 1 && !delivery.offsets.is_empty() => Err(err),
            // The database itself failed (down, restarting, pool exhausted): nothing was
            // decided; the caller retries. Never a reason to refuse a command.
            Err(err) if !err.is_refusal() || commands.is_empty() => Err(err),
            Err(err) if commands.len() > 1 => {
                tracing::warn!(error = %err, size = commands.len(), "batch commit failed; retrying one by one");
                let mut outcomes = Vec::with_capacity(commands.len());
                for cmd in commands {
                    outcomes.extend(Box::pin(self.handle_delivery(std::slice::from_ref(cmd), delivery)).await?);
                }
                Ok(outcomes)
            }
            Err(err) => {
                // Refused by the store (a constraint, a value it cannot hold): answered and
                // kept as a rejection, once, so the partition moves on.
                let cmd = &commands[0];
                tracing::error!(error = %err, event_id = %cmd.event_id, "command refused by the store");
                let answer = outcome(cmd, refused(cmd.kind.name(), "STORE_REFUSED", &err.to_string()));
                let mut refusal = delivery.clone();
                refusal.answers.push(answer.clone());
                refusal.rejected.push(Rejection {
                    key: Uuid::new_v5(&cmd.event_id, b"store-refused"),
                    event: rejection(cmd, "STORE_REFUSED", &err.to_string()),
                    answer_to: None,
                });
                self.try_batch(&[], &refusal).await?;
                Ok(vec![answer])
            }
        }
    }

    /// [`Ledger::try_batch`], decided again from the store when another writer got there
    /// first ([`StoreError::is_write_conflict`], [`StoreError::is_once_violation`]): up to
    /// [`LEDGER_CONFLICT_TRIES_MAX`] tries, a short random pause between them so two writers
    /// do not collide again in step. Past the bound a write conflict is returned, still
    /// transient (the caller retries later; it never becomes a refusal); an at-most-once rule
    /// that fresh state still breaks is the store's refusal.
    async fn try_until_no_conflict(
        &self,
        commands: &[Command],
        delivery: &Delivery,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut tries = 1;
        loop {
            match self.try_batch(commands, delivery).await {
                Err(err)
                    if (err.is_write_conflict() || err.is_once_violation()) && tries < LEDGER_CONFLICT_TRIES_MAX =>
                {
                    tracing::debug!(error = %err, tries, "write conflict; deciding the batch again");
                    let pause_ms = (Uuid::new_v4().as_u128() % u128::from(LEDGER_CONFLICT_PAUSE_MS_MAX + 1)) as u64;
                    tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
                    tries += 1;
                }
                result => return result,
            }
        }
    }

    async fn try_batch(&self, commands: &[Command], delivery: &Delivery) -> Result<Vec<Outcome>, StoreError> {
        let mut cache = self.cache.lock().await;
        let position = async {
            match self.cache_enabled {
                true => self.store.log_position().await.map(Some),
                false => Ok(None),
            }
        };
        // Three independent reads, on three of the pool's connections at once.
        let answer_keys = keys_of(commands, delivery);
        let (position, mut answered, due) =
            tokio::try_join!(position, self.store.answered(&answer_keys), self.holds_due(commands))?;
        if position.is_some() && cache.position != position {
            // Someone else appended to the log since this cache was last right: forget it.
            *cache = Cache::default();
        }
        let mut keys = Keys::default();
        commands.iter().for_each(|c| keys_read(c, &mut keys));
        keys.holds.extend(due);
        let mut state = match self.cache_enabled {
            true => cache.state_of(&keys, self.store.as_ref()).await?,
            false => self.store.load(&keys).await?,
        };
        let orders_read: Vec<_> =
            keys.orders.iter().map(|k| (k.clone(), state.orders.get(k).map(|o| o.updated_at))).collect();
        let mut batch = CommitBatch::default();
        let mut outcomes = Vec::with_capacity(commands.len());
        for cmd in commands {
            // A repeat is answered again to its caller, but published only the first time.
            if let Some(stored) = answered.get(&cmd.event_id) {
                outcomes.push(outcome(cmd, redelivered(cmd, stored)?));
                continue;
            }
            let body = self.decide_one(&mut state, cmd, &mut batch);
            let answer = outcome(cmd, body);
            answered.insert(cmd.event_id, keep(&mut batch, delivery, &answer)?);
            outcomes.push(answer);
        }
        for answer in &delivery.answers {
            if let std::collections::hash_map::Entry::Vacant(slot) = answered.entry(answer.in_reply_to) {
                slot.insert(keep(&mut batch, delivery, answer)?);
            }
        }
        for r in &delivery.rejected {
            answered.entry(r.key).or_insert_with(|| keep_rejection(&mut batch, delivery, r));
        }
        batch.projections.state = state;
        // Guarded at commit: the orders this batch writes, as it read them (a read-only look,
        // a query's, overwrites nothing).
        let written = &batch.projections.keys.orders;
        batch.orders_read = orders_read.into_iter().filter(|(k, _)| written.contains(k)).collect();
        batch.offsets = delivery.offsets.clone();
        if let Err(err) = self.store.commit(&batch).await {
            // The commit's fate is unknown (it may have landed): trust the store alone.
            *cache = Cache::default();
            return Err(err);
        }
        if let Some(before) = position {
            let unread = batch.projections.keys.minus(&keys);
            keys.extend(&batch.projections.keys);
            cache.committed(&batch.projections.state, &keys);
            cache.forget(&unread);
            // Where the log stands if this batch's events were the only ones appended: anyone
            // else's (or a gap in the sequence) shows as a mismatch at the next batch.
            let ours = i64::try_from(batch.events.len()).unwrap_or(i64::MAX);
            cache.position = Some(before.saturating_add(ours));
        }
        if let Some(recorder) = &self.recorder {
            recorder.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(batch);
        }
        Ok(outcomes)
    }

    /// The open holds that a command of `commands` may find expired (created 30 days or
    /// more before the batch's latest event time) among the payers whose wallet they check.
    async fn holds_due(&self, commands: &[Command]) -> Result<Vec<HoldKey>, StoreError> {
        let (mut payers, mut latest) = (BTreeSet::new(), None);
        for (payer, at) in commands.iter().filter_map(|c| Some((wallet_checked(c)?, c.accepted_at))) {
            payers.insert(payer.clone());
            latest = latest.max(Some(at));
        }
        let Some(latest) = latest else { return Ok(Vec::new()) };
        let payers: Vec<PayerId> = payers.into_iter().collect();
        self.store.holds_due(&payers, latest - chrono::Duration::milliseconds(HOLD_EXPIRY_MS)).await
    }

    /// Decides one command into `batch`, applying its events to `state`.
    fn decide_one(&self, state: &mut LedgerState, cmd: &Command, batch: &mut CommitBatch) -> OutcomeBody {
        let events = match decide(state, cmd, &self.policy) {
            Ok(events) => events,
            Err(err) => {
                batch.rejected.push(rejection(cmd, err.code(), &err.to_string()));
                return refused(cmd.kind.name(), err.code(), &err.to_string());
            }
        };
        for (i, event) in events.iter().enumerate() {
            apply(state, event, cmd.accepted_at);
            keys_written(event, &mut batch.projections.keys);
            let new = NewEvent {
                event_id: Uuid::new_v5(&cmd.event_id, format!("event:{i}").as_bytes()),
                cause_event_id: cmd.event_id,
                occurred_at: cmd.accepted_at,
                event: event.clone(),
            };
            batch.history.extend(history_row(&new));
            batch.events.push(new);
        }
        if let Some(err) = refusal_after(cmd, &events) {
            batch.rejected.push(rejection(cmd, err.code(), &err.to_string()));
            return refused(cmd.kind.name(), err.code(), &err.to_string());
        }
        match &cmd.kind {
            CommandKind::Pay { .. } => OutcomeBody::PaymentResult(
                payment_result(state, cmd, &events).expect("a decided payment always has a result"),
            ),
            CommandKind::Query { .. } => OutcomeBody::QueryResult(payment_result(state, cmd, &events)),
            kind => OutcomeBody::Applied { kind: kind.name().to_string() },
        }
    }

    /// Rebuilds every projection from the event log and compares it with the live one.
    pub async fn replay(&self) -> Result<ReplayReport, StoreError> {
        let mut state = LedgerState::default();
        let mut history = Vec::new();
        let (mut after, mut events) = (0_i64, 0_u64);
        loop {
            let page = self.store.events_after(after, REPLAY_PAGE_EVENTS_MAX).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for stored in &page {
                apply(&mut state, &stored.new.event, stored.new.occurred_at);
                history.extend(history_row(&stored.new));
                events += 1;
            }
        }
        let live = self.store.load_all().await?;
        let mut live_history = self.store.history_all().await?;
        live_history.iter_mut().for_each(|h| h.id = 0);
        let differences = differences(&state, &live, &history, &live_history);
        Ok(ReplayReport { events, matches: differences.is_empty(), differences })
    }

    /// Walks the whole log and checks every stream's hash chain; reports the first break.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        let mut verifier = crate::audit::Verifier::default();
        let mut after = 0_i64;
        loop {
            let page = self.store.events_after(after, REPLAY_PAGE_EVENTS_MAX).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            verifier.feed(&page);
            if verifier.first_break.is_some() {
                break;
            }
        }
        Ok(VerifyReport {
            events: verifier.events,
            ok: verifier.first_break.is_none(),
            first_break: verifier.first_break,
        })
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Events checked (up to and including the first break).
    pub events: u64,
    /// Every stream's chain is intact.
    pub ok: bool,
    pub first_break: Option<crate::audit::ChainBreak>,
}

fn differences(
    replayed: &LedgerState,
    live: &LedgerState,
    history: &[HistoryRow],
    live_history: &[HistoryRow],
) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |name: &str, equal: bool| {
        if !equal {
            out.push(format!("projection {name} differs from the log"));
        }
    };
    // A balance or a daily usage of zero and an absent row mean the same.
    let nonzero = |s: &LedgerState| s.balances_fen.iter().filter(|(_, v)| **v != 0).count();
    check(
        "balances",
        replayed.balances_fen.iter().all(|(a, v)| live.balance_fen(a) == *v) && nonzero(replayed) == nonzero(live),
    );
    check("payers", replayed.frozen == live.frozen);
    check("merchant_limits", replayed.limits_fen == live.limits_fen);
    check("orders", replayed.orders == live.orders);
    check("captures", replayed.captures == live.captures);
    check("members", replayed.members == live.members);
    check("daily_usage", replayed.daily == live.daily);
    check("merchant_fee_rates", replayed.fee_rates_ppm == live.fee_rates_ppm);
    check("refunds", replayed.refunds == live.refunds);
    check("holds", replayed.holds == live.holds);
    check("pay_score_authorisations", replayed.pay_score == live.pay_score);
    check("settlement", replayed.settlement == live.settlement);
    // Writers in several processes interleave their inserts, so the history's ids need
    // not follow the log's order: compare the rows, not their order.
    let sorted = |rows: &[HistoryRow]| {
        let mut rows = rows.to_vec();
        rows.sort_by_key(|r| r.event_id);
        rows
    };
    check("history", sorted(history) == sorted(live_history));
    out.extend(order_differences(replayed, live));
    out
}

/// The first few orders whose projection differs from the log, by key (merchant and order
/// number: no payer data), with the status, refunded amount and last change each side says.
fn order_differences(replayed: &LedgerState, live: &LedgerState) -> Vec<String> {
    let keys: BTreeSet<_> = replayed.orders.keys().chain(live.orders.keys()).collect();
    let say = |o: Option<&crate::model::Order>| o.map(|o| (o.status, o.refunded_fen, o.updated_at));
    keys.into_iter()
        .filter(|k| replayed.orders.get(*k) != live.orders.get(*k))
        .take(3)
        .map(|k| {
            let (log, now) = (say(replayed.orders.get(k)), say(live.orders.get(k)));
            format!("order {}/{}: the log says {log:?}, the projection {now:?}", k.0, k.1)
        })
        .collect()
}

/// The history row of a payment event.
pub fn history_row(e: &NewEvent) -> Option<HistoryRow> {
    let (attempt, status, reason, payer_id, member_quick_pay) = match &e.event {
        LedgerEvent::PaymentSucceeded { attempt, payer_id, member_quick_pay, .. } => {
            (attempt, OrderStatus::Paid, None, Some(payer_id.clone()), *member_quick_pay)
        }
        LedgerEvent::PaymentDeclined { attempt, payer_id, reason, .. } => {
            (attempt, OrderStatus::Declined, Some(reason.code().to_string()), payer_id.clone(), false)
        }
        LedgerEvent::PaymentConfirmed { attempt, payer_id, paid_at, .. } => {
            // The payment belongs to the moment the channel took the money.
            let row = history(e, attempt, OrderStatus::Paid, None, payer_id.clone(), false);
            return Some(HistoryRow { occurred_at: *paid_at, day: shanghai_day(*paid_at), ..row });
        }
        _ => return None,
    };
    Some(history(e, attempt, status, reason, payer_id, member_quick_pay))
}

fn history(
    e: &NewEvent,
    attempt: &crate::model::Attempt,
    status: OrderStatus,
    reason: Option<String>,
    payer_id: Option<facepay_domain::PayerId>,
    member_quick_pay: bool,
) -> HistoryRow {
    HistoryRow {
        id: 0,
        event_id: e.event_id,
        merchant_id: attempt.merchant_id.clone(),
        out_trade_no: attempt.out_trade_no.clone(),
        amount_fen: attempt.amount.fen(),
        status,
        reason,
        payer_id,
        member_quick_pay,
        store_id: attempt.store_id.to_string(),
        device_id: attempt.device_id.to_string(),
        occurred_at: e.occurred_at,
        day: shanghai_day(e.occurred_at),
    }
}

fn outcome(cmd: &Command, body: OutcomeBody) -> Outcome {
    Outcome { in_reply_to: cmd.event_id, decided_at: Utc::now(), device: cmd.device.clone(), body }
}

fn refused(kind: &str, code: &str, message: &str) -> OutcomeBody {
    OutcomeBody::Refused { kind: kind.to_string(), code: code.to_string(), message: message.to_string() }
}

/// The stored answer to an event seen before, marked as a repeat; refused to a sender other
/// than the one it answered (an event id is the sender's to choose, not a way to read another
/// device's outcome).
fn redelivered(cmd: &Command, stored: &StoredAnswer) -> Result<OutcomeBody, StoreError> {
    if !stored.answered(cmd.device.as_ref()) {
        let message = "this event id answered another sender's event; send a new one";
        return Ok(refused(cmd.kind.name(), "EVENT_ID_IN_USE", message));
    }
    let mut body: OutcomeBody =
        serde_json::from_str(&stored.outcome_json).map_err(|e| StoreError::Corrupt(format!("stored outcome: {e}")))?;
    if let OutcomeBody::PaymentResult(r) = &mut body {
        r.replayed = true;
    }
    Ok(body)
}

fn rejection(cmd: &Command, code: &str, message: &str) -> RejectedEvent {
    RejectedEvent {
        received_at: Utc::now(),
        source: "ledger".to_string(),
        event_id: Some(cmd.event_id),
        kind: Some(cmd.kind.name().to_string()),
        reason_code: code.to_string(),
        field: None,
        message: message.to_string(),
        raw: format!("{:?}", cmd.kind).into_bytes(),
        raw_truncated: false,
    }
}

/// Every key a delivery is kept once by: its commands' and answers' event ids, its
/// rejections' keys.
fn keys_of(commands: &[Command], delivery: &Delivery) -> Vec<Uuid> {
    let commands = commands.iter().map(|c| c.event_id);
    let answers = delivery.answers.iter().map(|a| a.in_reply_to);
    commands.chain(answers).chain(delivery.rejected.iter().map(|r| r.key)).collect()
}

/// Records `answer` as the answer to its event and leaves it in the outbox (as a reference to
/// the stored answer, which is what is published); what is stored.
fn keep(batch: &mut CommitBatch, delivery: &Delivery, answer: &Outcome) -> Result<StoredAnswer, StoreError> {
    let stored = StoredAnswer {
        outcome_json: serde_json::to_string(&answer.body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        device: answer.device.as_ref().map(device_key),
        processed_at: Utc::now(),
    };
    let kind = answer.body.kind().to_string();
    let retry_of = match &answer.body {
        OutcomeBody::PaymentResult(r) if r.replayed => Some(order_key(&r.merchant_id, &r.out_trade_no)),
        _ => None,
    };
    batch.inbound.push(InboundRecord { event_id: answer.in_reply_to, kind, answer: stored.clone(), retry_of });
    batch.outbox.extend(delivery.answer_message(answer, OutboxPayload::Answer(answer.in_reply_to)));
    Ok(stored)
}

/// Whether `r` refused a copy of an event id already received (a device's retry, or a copy).
pub fn is_replay(r: &RejectedEvent) -> bool {
    r.reason_code == facepay_domain::FieldErrorKind::Replayed.as_str()
}

/// Keeps rejection `r` (the rejected-events table, and the dead-letter topic through the
/// outbox), marked by its key as seen.
fn keep_rejection(batch: &mut CommitBatch, delivery: &Delivery, r: &Rejection) -> StoredAnswer {
    let stored = StoredAnswer {
        outcome_json: serde_json::json!({ "rejected": r.event.reason_code }).to_string(),
        device: r.answer_to.as_ref().map(device_key),
        processed_at: Utc::now(),
    };
    let kind = "rejected".to_string();
    batch.inbound.push(InboundRecord { event_id: r.key, kind, answer: stored.clone(), retry_of: None });
    if let (Some(event_id), Some(device), true) = (r.event.event_id, &stored.device, is_replay(&r.event)) {
        batch.repeats.push(Repeat { event_id, device: device.clone(), at: stored.processed_at });
    }
    batch.rejected.push(r.event.clone());
    batch.outbox.extend(delivery.dead_letter(r));
    batch.outbox.extend(delivery.rejection_answer(r));
    stored
}
