//! The store seam: what the ledger needs from a database, served by SQLite (embedded) and,
//! in the production profile, PostgreSQL.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use facepay_domain::{DeviceRef, MerchantId, OrderStatus, OutTradeNo, PayerId};
use serde::Serialize;
use uuid::Uuid;

use crate::model::{HoldKey, Keys, LedgerEvent, LedgerState, Order};

pub use crate::store_error::StoreError;

/// One event to append, with what caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Derived from the inbound event id and the event's position, so redelivery collides.
    pub event_id: Uuid,
    pub cause_event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub event: LedgerEvent,
}

/// An event as stored, with its position in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub new: NewEvent,
    /// The audit chain: the previous hash of the event's stream, and its own hash (`None` only
    /// for events written before the chain existed). See [`crate::audit`].
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

/// The answer recorded for one inbound event.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRecord {
    pub event_id: Uuid,
    pub kind: String,
    /// What is stored as its answer.
    pub answer: StoredAnswer,
    /// The order a retried payment was answered from (`replayed`), as `merchant_id/out_trade_no`
    /// ([`order_key`]): the order's page lists the retries it answered.
    pub retry_of: Option<String>,
}

/// An order as [`InboundRecord::retry_of`] names it.
pub fn order_key(merchant: &MerchantId, out_trade_no: &OutTradeNo) -> String {
    format!("{merchant}/{out_trade_no}")
}

/// An inbound event's stored answer, as [`LedgerWriter::answered`] reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    /// The JSON of the outcome body.
    pub outcome_json: String,
    /// The device it answered ([`device_key`]); none for platform and merchant events.
    pub device: Option<String>,
    pub processed_at: DateTime<Utc>,
}

impl StoredAnswer {
    /// Whether this answered an event of `device` (none: a platform or merchant event): an
    /// event id that another sender uses again is never answered with this.
    pub fn answered(&self, device: Option<&facepay_domain::DeviceRef>) -> bool {
        self.device == device.map(device_key)
    }

    /// The outcome as it was published: in reply to `event_id`, to its device, decided when it
    /// was kept.
    pub fn outcome(&self, event_id: Uuid) -> Result<facepay_domain::Outcome, StoreError> {
        let body = serde_json::from_str(&self.outcome_json)
            .map_err(|e| StoreError::Corrupt(format!("stored outcome of {event_id}: {e}")))?;
        let device = self.device.as_deref().map(device_from_key).transpose()?;
        Ok(facepay_domain::Outcome { in_reply_to: event_id, decided_at: self.processed_at, device, body })
    }
}

/// How an answer names its device: `merchant_id/store_id/device_id` (no id holds a `/`).
pub fn device_key(d: &facepay_domain::DeviceRef) -> String {
    format!("{}/{}/{}", d.merchant_id, d.store_id, d.device_id)
}

fn device_from_key(key: &str) -> Result<facepay_domain::DeviceRef, StoreError> {
    let bad = |e: String| StoreError::Corrupt(format!("stored answer's device {key:?}: {e}"));
    let mut parts = key.splitn(3, '/');
    let mut next = || parts.next().map(str::to_string).ok_or_else(|| bad("fewer than three parts".into()));
    Ok(facepay_domain::DeviceRef {
        merchant_id: facepay_domain::MerchantId::parse(next()?).map_err(|e| bad(e.message))?,
        store_id: facepay_domain::StoreId::parse(next()?).map_err(|e| bad(e.message))?,
        device_id: facepay_domain::DeviceId::parse(next()?).map_err(|e| bad(e.message))?,
    })
}

/// A rejected inbound event, kept with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RejectedEvent {
    pub received_at: DateTime<Utc>,
    /// Where it came from: `http`, `bus`, `ledger`.
    pub source: String,
    pub event_id: Option<Uuid>,
    pub kind: Option<String>,
    pub reason_code: String,
    pub field: Option<String>,
    pub message: String,
    /// The raw body, cut at `REJECTED_RAW_BYTES_MAX`.
    #[serde(skip)]
    pub raw: Vec<u8>,
    pub raw_truncated: bool,
}

/// One row of a merchant's transaction history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HistoryRow {
    /// Position in the history (the pagination cursor); assigned by the store.
    #[serde(skip)]
    pub id: i64,
    pub event_id: Uuid,
    pub merchant_id: MerchantId,
    pub out_trade_no: OutTradeNo,
    pub amount_fen: i64,
    pub status: OrderStatus,
    pub reason: Option<String>,
    pub payer_id: Option<PayerId>,
    pub member_quick_pay: bool,
    pub store_id: String,
    pub device_id: String,
    pub occurred_at: DateTime<Utc>,
    pub day: NaiveDate,
}

/// Everything one batch writes, in one database transaction.
#[derive(Debug, Clone, Default)]
pub struct CommitBatch {
    pub events: Vec<NewEvent>,
    /// The state after the batch, from which the touched entities are upserted.
    pub projections: Projections,
    pub history: Vec<HistoryRow>,
    pub inbound: Vec<InboundRecord>,
    pub rejected: Vec<RejectedEvent>,
    /// Where the batch's input ends in each consumed partition: committed with its writes, so
    /// a restarted consumer resumes exactly after the last batch that landed.
    pub offsets: Vec<ConsumerOffset>,
    /// Messages to publish once the batch is durable (the transactional outbox).
    pub outbox: Vec<OutboxMessage>,
    /// Each order the batch writes, with its `updated_at` as read (`None`: absent). On
    /// PostgreSQL, where several processes decide, the commit locks these keys first and is a
    /// write conflict if any changed since (a payer's partition and an order's, or the
    /// sweeper, deciding the same order at once): decided again, never overwritten.
    pub orders_read: Vec<(crate::model::OrderKey, Option<DateTime<Utc>>)>,
    /// Answered events their devices sent again (refused as replays): each counted on its
    /// event's repeats if it was that device's ([`LedgerWriter::note_repeat`]).
    pub repeats: Vec<Repeat>,
}

/// One copy of an answered event sent again by `device` (`merchant_id/store_id/device_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    pub event_id: Uuid,
    pub device: String,
    pub at: DateTime<Utc>,
}

/// The next offset to consume in one partition, for one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOffset {
    pub group_id: String,
    pub topic: String,
    pub partition: i32,
    /// The stored offset this batch was read from (`None`: none stored yet). The commit
    /// succeeds only if the store still holds exactly this, so a consumer that lost its
    /// partition in a rebalance and decided from stale state is fenced off, whole batch.
    pub expected: Option<i64>,
    pub next_offset: i64,
}

/// One message for the transport to publish after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub topic: String,
    pub key: String,
    pub payload: OutboxPayload,
}

/// What an outbox message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxPayload {
    /// These bytes (a dead letter, the answer to a rejected event).
    Bytes(Vec<u8>),
    /// The answer stored for this event in the same commit, published as
    /// [`StoredAnswer::outcome`] rebuilds it: the outcome's JSON is written once (in the
    /// answers), not a second time in the outbox.
    Answer(Uuid),
}

impl OutboxPayload {
    /// The bytes the message is written with (none: it refers to an answer).
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(b) => Some(b),
            Self::Answer(_) => None,
        }
    }

    /// The event whose stored answer the message is.
    pub fn answer_of(&self) -> Option<Uuid> {
        match self {
            Self::Bytes(_) => None,
            Self::Answer(event_id) => Some(*event_id),
        }
    }
}

/// An outbox message as the relay publishes it: its bytes, whatever it was written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// The entities a batch changed, with their new values.
#[derive(Debug, Clone, Default)]
pub struct Projections {
    pub keys: Keys,
    pub state: LedgerState,
}

/// A page request for a merchant's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only rows of this Asia/Shanghai day.
    pub day: Option<NaiveDate>,
    pub status: Option<OrderStatus>,
    /// Only rows older than this cursor (the `id` of the last row of the previous page).
    pub before_id: Option<i64>,
    /// Only rows of this store of the merchant (what a store-scoped key sees).
    pub store_id: Option<facepay_domain::StoreId>,
    /// Only rows of this device.
    pub device_id: Option<facepay_domain::DeviceId>,
    /// Only the attempts at this order (an order's page: its whole life of decided attempts,
    /// from the history's (merchant, order) index).
    pub out_trade_no: Option<OutTradeNo>,
    pub limit: u32,
}

/// A member of a merchant, as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    /// The member's place in the merchant's list (its cursor, signed by the API).
    #[serde(skip)]
    pub id: i64,
    pub payer_id: PayerId,
    pub card_code: String,
    pub channel: String,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// When the ledger last accepted the member's payment at this merchant while the card was
    /// open; absent before the first.
    pub last_visit_at: Option<DateTime<Utc>>,
}

/// A page of a merchant's devices, by store and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicesPage {
    /// Only this store's devices (what a store-scoped key sees).
    pub store_id: Option<facepay_domain::StoreId>,
    /// Only the devices after this one (the previous page's last).
    pub after: Option<(facepay_domain::StoreId, facepay_domain::DeviceId)>,
    pub limit: u32,
}

/// A page of a merchant's members: newest card holders first, before a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembersPage {
    /// Only members listed before this one (the previous page's last `id`).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// What the invariant checks found, over the whole store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Invariants {
    /// Every transaction's postings sum to zero, all postings sum to zero, and every
    /// balance equals the sum of its postings.
    pub balanced: bool,
    /// No (merchant, out_trade_no) has more than one successful payment event.
    pub no_order_paid_twice: bool,
    /// No wallet balance is below zero.
    pub no_overdraft: bool,
}

/// The fleet: devices and the merchant and store each is bound to.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub merchants: HashMap<MerchantId, String>,
    pub devices: HashMap<facepay_domain::DeviceId, DeviceRef>,
    /// Unrevoked device keys (their secrets are derived from the pepper when needed).
    pub device_keys: HashMap<facepay_domain::auth::KeyId, crate::credentials::Credential>,
}

/// What a face capture resolved to, kept by the matcher until its payment comes (migration
/// 0012): a matcher that restarts between a capture and its payment still knows whom the
/// capture identified, instead of declining the payment as an unknown capture.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureMemo {
    pub face_code: facepay_domain::FaceCode,
    /// The payer it resolved to (none: unresolved, `rule` says why).
    pub payer_id: Option<PayerId>,
    /// The match rule that decided (`global_hit`, `no_match`, …).
    pub rule: String,
    /// When the matcher identified it (the server's clock): restores look back a window.
    pub captured_at: DateTime<Utc>,
}

/// A payer's sealed face template as the ledger keeps it (the matcher's gallery at rest):
/// the ciphertext and the id of the data key that opens it. The key itself is not here: it
/// lives in the face key file ([`crate::face_keys`]). Only byte counts are printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredFace {
    pub payer_id: PayerId,
    /// Stable hash of the payer id; shard `i` of `n` holds the payers with `shard_hash % n == i`.
    pub shard_hash: u32,
    /// The data key's id, bound into both seals.
    pub key_id: Uuid,
    /// The template sealed under the data key.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for StoredFace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredFace")
            .field("payer_id", &self.payer_id)
            .field("shard_hash", &self.shard_hash)
            .field("key_id", &self.key_id)
            .field("ciphertext_bytes", &self.ciphertext.len())
            .finish()
    }
}

/// The ledger's writer: what a batch of commands reads and commits, and the ledger's clock.
#[async_trait]
pub trait LedgerWriter: Send + Sync + 'static {
    /// The entities named by `keys` (absent ones stay absent).
    async fn load(&self, keys: &Keys) -> Result<LedgerState, StoreError>;

    /// The stored answers of those inbound events that were already processed.
    async fn answered(&self, event_ids: &[Uuid]) -> Result<HashMap<Uuid, StoredAnswer>, StoreError>;

    /// Appends events, postings, transactions, projections, history, answers, rejections,
    /// consumer offsets and outbox messages, all in one database transaction.
    async fn commit(&self, batch: &CommitBatch) -> Result<(), StoreError>;

    /// Keeps one rejected event.
    async fn reject(&self, rejected: &RejectedEvent) -> Result<(), StoreError>;

    /// Counts one more copy of `event_id` that `device` (`merchant_id/store_id/device_id`)
    /// sent again, at `at`, if the event was answered and was that device's: a copy of
    /// another sender's event id counts nothing. Whether it counted.
    async fn note_repeat(&self, event_id: Uuid, device: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// The highest sequence number in the log (0 when it is empty): a writer caching what it
    /// read notices by it that someone else appended.
    async fn log_position(&self) -> Result<i64, StoreError>;

    /// Up to `limit` orders and holds past their deadline at `now` (orders still unpaid 45 s
    /// after creation, holds still open 30 days after), oldest first within each kind.
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<crate::model::Due>, StoreError>;

    /// The keys of `payers`' holds still open and created at or before `created_before`:
    /// the holds a batch's payments may find expired and must release first, loaded with the
    /// batch (partial index of migration 0010).
    async fn holds_due(&self, payers: &[PayerId], created_before: DateTime<Utc>) -> Result<Vec<HoldKey>, StoreError>;
}

/// The event log and every projection, read whole: replay, verification, invariants.
#[async_trait]
pub trait LogReader: Send + Sync + 'static {
    /// Every projection, as a state (for replay's comparison).
    async fn load_all(&self) -> Result<LedgerState, StoreError>;

    /// The whole history projection, oldest first.
    async fn history_all(&self) -> Result<Vec<HistoryRow>, StoreError>;

    /// Up to `limit` events after `after_seq`, in log order.
    async fn events_after(&self, after_seq: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;

    async fn check_invariants(&self) -> Result<Invariants, StoreError>;
}

/// The read side the API serves: orders, history, members, wallets, settlement, rejections.
#[async_trait]
pub trait ProjectionReader: Send + Sync + 'static {
    async fn order(&self, merchant: &MerchantId, out_trade_no: &OutTradeNo) -> Result<Option<Order>, StoreError>;

    /// The orders of `keys` that exist, read together from the readers' side (see
    /// [`crate::lookup`]).
    async fn orders(
        &self,
        keys: &[crate::model::OrderKey],
    ) -> Result<std::collections::BTreeMap<crate::model::OrderKey, Order>, StoreError>;

    async fn history(&self, merchant: &MerchantId, filter: &HistoryFilter) -> Result<Vec<HistoryRow>, StoreError>;

    async fn members(&self, merchant: &MerchantId, page: MembersPage) -> Result<Vec<MemberView>, StoreError>;
    /// Every open member card, as (merchant, payer): what the matcher's member lists hold.
    async fn open_cards(&self) -> Result<Vec<(MerchantId, PayerId)>, StoreError>;

    /// The payer's wallet balance and frozen flag, if the payer is known to the ledger.
    async fn wallet(&self, payer: &PayerId) -> Result<Option<(i64, bool)>, StoreError>;

    async fn rejected(&self, limit: u32) -> Result<Vec<RejectedEvent>, StoreError>;

    /// The merchant's daily settlement, newest day first, at most `limit` days.
    async fn settlement(&self, merchant: &MerchantId, limit: u32) -> Result<Vec<SettlementView>, StoreError>;

    /// One Asia/Shanghai day of the merchant's payment attempts (of one store, if given),
    /// counted and summed by status, decline reason and member quick pay: a day at a glance,
    /// read from the history's (merchant, day) index.
    async fn day_glance(
        &self,
        merchant: &MerchantId,
        store: Option<&facepay_domain::StoreId>,
        day: NaiveDate,
    ) -> Result<Vec<GlanceRow>, StoreError>;

    /// A page of the merchant's registered devices (by store and device), each with when the ledger last answered one of its events and how many of its events
    /// since `since` it refused, rejected or declined: read from the answers' (device, time)
    /// index, one lookup per device.
    async fn devices(
        &self,
        merchant: &MerchantId,
        page: &DevicesPage,
        since: DateTime<Utc>,
    ) -> Result<Vec<DeviceActivity>, StoreError>;

    /// An order's refunds, oldest first (at most `ORDER_REFUNDS_MAX`), from the refunds'
    /// (merchant, order) index.
    async fn order_refunds(
        &self,
        merchant: &MerchantId,
        out_trade_no: &OutTradeNo,
    ) -> Result<Vec<RefundView>, StoreError>;

    /// The retried payments an order answered from itself, oldest first (at most
    /// `ORDER_RETRIES_MAX`), from the answers' partial `retry_of` index.
    async fn order_retries(
        &self,
        merchant: &MerchantId,
        out_trade_no: &OutTradeNo,
    ) -> Result<Vec<RetryView>, StoreError>;

    /// The events of an order (its decided attempts and the retries it answered) their
    /// devices sent again under the same event id, each with how often and when last.
    async fn order_repeats(
        &self,
        merchant: &MerchantId,
        out_trade_no: &OutTradeNo,
    ) -> Result<Vec<RepeatView>, StoreError>;
}

/// An event its device sent again under the same id (a retry after a timeout, or a copy),
/// answered from its stored outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RepeatView {
    /// A decided attempt's event, or a retry's the order answered.
    pub event_id: Uuid,
    /// How many copies came after the first.
    pub repeats: i64,
    pub last_at: DateTime<Utc>,
}

/// A retried payment an order answered (`replayed`, sent again under a new event id after a
/// timeout), from its stored answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RetryView {
    pub event_id: Uuid,
    pub answered_at: DateTime<Utc>,
    /// The device that sent it (`merchant_id/store_id/device_id`).
    pub device: Option<String>,
}

/// One refund of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundView {
    pub out_refund_no: String,
    pub amount_fen: i64,
    pub fee_refund_fen: i64,
    pub refunded_at: DateTime<Utc>,
}

/// A registered device and what the ledger last heard of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeviceActivity {
    pub device_id: String,
    pub store_id: String,
    pub registered_at: DateTime<Utc>,
    /// When the ledger last answered one of its events (none: never heard of).
    pub last_event_at: Option<DateTime<Utc>>,
    /// Its events answered as refused, rejected or declined since [`ProjectionReader::devices`]'s
    /// `since` (the API asks for the last hour, `FLEET_REFUSED_WINDOW_MS`).
    pub refused_last_hour: i64,
}

/// Payment attempts of one day that share a status, a reason and member quick pay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlanceRow {
    pub status: OrderStatus,
    pub reason: Option<String>,
    pub member_quick_pay: bool,
    pub attempts: i64,
    pub amount_fen: i64,
}

/// The fleet registry: merchants and their devices.
#[async_trait]
pub trait RegistryStore: Send + Sync + 'static {
    async fn register_merchant(&self, merchant: &MerchantId, name: &str) -> Result<(), StoreError>;

    async fn register_device(&self, device: &DeviceRef) -> Result<(), StoreError>;

    async fn registry(&self) -> Result<Registry, StoreError>;
}

/// The Kafka transport's state kept with the ledger: consumer offsets, the outbox and its relay's lease.
#[async_trait]
pub trait TransportStore: Send + Sync + 'static {
    /// The committed next offset of each partition of `topic` for `group_id`.
    async fn offsets(&self, group_id: &str, topic: &str) -> Result<HashMap<i32, i64>, StoreError>;

    /// Takes or renews the lease `name` for `holder` for `lease_ms` from now; true if
    /// `holder` holds it now (it was free, lapsed, or already its own).
    async fn lease(&self, name: &str, holder: &str, lease_ms: u64) -> Result<bool, StoreError> {
        Ok(!self.leases(&[name.to_string()], holder, lease_ms).await?.is_empty())
    }

    /// [`TransportStore::lease`] for every one of `names` at once, in one statement (one
    /// commit: a stage's ownership tick renews its membership and its partitions together);
    /// the names `holder` holds now, in name order. At most [`LEASES_AT_ONCE_MAX`] names.
    async fn leases(&self, names: &[String], holder: &str, lease_ms: u64) -> Result<Vec<String>, StoreError>;

    /// The leases whose names start with `prefix` and have not lapsed: `(name, holder)`,
    /// ordered by name.
    async fn leases_live(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Gives up the lease `name` if `holder` holds it, so another may take it at once.
    async fn lease_release(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Moves `group_id`'s next offset of each `(partition, next_offset)` of `topic` forward
    /// to at least the given one, outside any ledger commit, in one statement: for a stage
    /// that is at-least-once (the matcher), whose position is only where a successor resumes.
    /// At most [`LEASES_AT_ONCE_MAX`] partitions.
    async fn offsets_advance(&self, group_id: &str, topic: &str, next: &[(i32, i64)]) -> Result<(), StoreError>;

    /// Up to `limit` unpublished outbox messages, oldest first, with their ids.
    async fn outbox_pending(&self, limit: u32) -> Result<Vec<(i64, PendingMessage)>, StoreError>;

    /// Forgets these outbox messages: published (the outbox is not the log, and a published
    /// message is on its topic; deleting it writes less than marking it would).
    async fn outbox_published(&self, ids: &[i64]) -> Result<(), StoreError>;

    /// A listener to the ids of the events each transport commit answers, from whichever
    /// process committed it ([`crate::decided`]); `None` where the database cannot tell other
    /// processes (SQLite: one process decides there, and tells its own waiters itself).
    async fn decided_listener(&self) -> Result<Option<crate::decided::DecidedListener>, StoreError>;
}

/// The face gallery at rest (migrations 0005, 0020): sealed templates and which key opens
/// each payer's live one (the keys are in the face key file, [`crate::face_keys`]).
#[async_trait]
pub trait FaceVault: Send + Sync + 'static {
    /// Appends `face`'s sealed template to the append-only log and makes it the payer's live
    /// one (replacing an earlier enrolment's), in one transaction with its gallery change.
    /// The key of the live template it replaced, if any: never live again, so its key may go.
    async fn face_enrol(&self, face: &StoredFace, at: DateTime<Utc>) -> Result<Option<Uuid>, StoreError>;

    /// Forgets `payer`'s live face (its key is shredded in the key file); `true` if there was
    /// one. The gallery change is written either way.
    async fn face_delete(&self, payer: &PayerId) -> Result<bool, StoreError>;

    /// Up to `limit` wrapped keys still in the ledger's database from before migration 0020,
    /// for the matcher to move to the key file.
    async fn face_keys_legacy(&self, limit: u32) -> Result<Vec<crate::face_keys::KeyRecord>, StoreError>;

    /// Deletes these moved keys from the ledger's database.
    async fn face_keys_legacy_forget(&self, key_ids: &[Uuid]) -> Result<(), StoreError>;

    /// The live faces of shard `shard` of `shards` (each payer's template of their live key),
    /// ordered by payer id.
    async fn face_gallery(&self, shard: u32, shards: u32) -> Result<Vec<StoredFace>, StoreError>;

    /// Every template ciphertext ever stored for `payer` with its key id (the log keeps them
    /// after deletion): for audits of the shredding.
    async fn face_ciphertexts(&self, payer: &PayerId) -> Result<Vec<(Uuid, Vec<u8>)>, StoreError>;

    /// `payer`'s live face (their template of their live key), if they have one.
    async fn face_of(&self, payer: &PayerId) -> Result<Option<StoredFace>, StoreError>;

    /// The last change of the gallery feed (migration 0019): where a matcher that loads the
    /// gallery now starts following it.
    async fn face_feed_head(&self) -> Result<i64, StoreError>;

    /// Up to `limit` changes of the gallery feed after `after`, in order: each the payer whose
    /// face was enrolled or deleted. Changes commit in order, so none is missed by reading
    /// past the last one seen; one pruned since shows as a gap (the first `seq` past
    /// `after + 1`).
    async fn face_feed_after(&self, after: i64, limit: u32) -> Result<Vec<(i64, PayerId)>, StoreError>;
}

/// The matcher's recent captures (migration 0012).
#[async_trait]
pub trait CaptureLog: Send + Sync + 'static {
    /// Keeps what `captures` resolved to (a face code seen again is overwritten) and forgets
    /// every capture identified before `forget_before`, in one transaction.
    async fn captures_remember(&self, captures: &[CaptureMemo], forget_before: DateTime<Utc>)
        -> Result<(), StoreError>;

    /// The captures identified at or after `since`, oldest first, at most `limit` (the newest).
    async fn captures_recent(&self, since: DateTime<Utc>, limit: u32) -> Result<Vec<CaptureMemo>, StoreError>;
}

/// The benchmark's ceiling: the log's rows of a batch written with no projections.
#[async_trait]
pub trait CeilingWriter: Send + Sync + 'static {
    /// Appends only the events, postings and transactions of `batch`, with no projections:
    /// the raw ceiling the benchmark measures decisions against.
    async fn commit_raw(&self, batch: &CommitBatch) -> Result<(), StoreError>;
}

/// Every role of a database the ledger runs on, as one trait: what the wiring holds and
/// hands out. A caller that needs one role takes that role's trait (an `Arc<dyn LedgerStore>`
/// coerces to any of them).
pub trait LedgerStore:
    LedgerWriter
    + LogReader
    + ProjectionReader
    + RegistryStore
    + TransportStore
    + FaceVault
    + CaptureLog
    + CeilingWriter
    + crate::credentials::CredentialStore
    + crate::console_sessions::SessionStore
{
}

impl<S> LedgerStore for S where
    S: LedgerWriter
        + LogReader
        + ProjectionReader
        + RegistryStore
        + TransportStore
        + FaceVault
        + CaptureLog
        + CeilingWriter
        + crate::credentials::CredentialStore
        + crate::console_sessions::SessionStore
{
}

/// One merchant's money of one Asia/Shanghai day, as served (fen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettlementView {
    pub day: NaiveDate,
    pub gross_fen: i64,
    pub refunds_fen: i64,
    pub fees_fen: i64,
    pub net_fen: i64,
}

/// The role traits, for callers that hold an `Arc<dyn LedgerStore>` and call its methods
/// (a trait's methods are callable where the trait is in scope).
pub mod prelude {
    pub use super::{
        CaptureLog, CeilingWriter, FaceVault, LedgerStore, LedgerWriter, LogReader, ProjectionReader, RegistryStore,
        TransportStore,
    };
    pub use crate::credentials::CredentialStore;
}
