//! The ledger's clock: revokes orders still unpaid 45 s after their creation and expires Pay
//! Score holds untouched for 30 days, without anyone having to ask.
//!
//! Payments, queries, completions and cancellations check these deadlines themselves (on
//! their own event time), so the sweeper changes no decision: it only makes the projections
//! say so, and gives the held money back, when nobody touches the order or the hold again.
//!
//! Replay gives the same result because each tick is an ordinary command whose event time
//! is the deadline itself (`created_at + 45 s`, `created_at + 30 days`), not the moment the
//! sweep happened to run, and whose event id is derived from the order or hold it concerns:
//! sweeping twice, or from two processes at once, decides once (the second is answered as a
//! repeat). The sweep's "now" is the newest event time the ledger recorded for the trade
//! (not its own ticks, nor reconciliation's records), less [`SWEEP_EVENT_TIME_LAG_MS`]:
//! event time, as the rest of the ledger, not the wall clock; and it never runs backwards.
//! A log of past events (the demo's simulated days, a replayed month) is swept as of its own
//! time, and a store nobody writes to keeps its clock still.
//!
//! # Layout
//! - [`Due`]: an order or hold past its deadline, as a store finds it.
//! - [`tick`]: the pure part: the command a due entity gets.
//! - [`Sweeper`]: reads the clock, finds what is due, and decides the ticks through the
//!   [`Ledger`], a bounded batch per sweep.

use std::time::Duration;

use chrono::{DateTime, Utc};
use facepay_domain::limits::{
    HOLD_EXPIRY_MS, ORDER_REVOKE_AFTER_MS, SWEEP_BATCH_MAX, SWEEP_EVENT_TIME_LAG_MS, SWEEP_LEASE_MS,
};
use facepay_domain::{MerchantId, OutOrderNo, OutTradeNo, OutcomeBody};
use uuid::Uuid;

use crate::command::{Command, CommandKind, Lifecycle};
use crate::service::{Delivery, Ledger};
use crate::store::StoreError;

/// Namespace of the ticks' event ids (UUID v5): fixed forever, or a tick sent by an older
/// build would not be recognised as the same tick by a newer one.
const TICK_NAMESPACE: Uuid = Uuid::from_u128(0x6661_6365_7061_7900_7377_6565_7000_0001);

/// The kinds of the ticks' answers in `inbound`: the ledger's own commands, not events any
/// device or merchant system sent (counts of answered inbound events leave them out).
pub const TICK_KINDS: [&str; 2] = ["order_revoke_due", "pay_score_order_expire"];

/// The clock's reading, the same SQL on both stores: the newest event time among the last
/// events appended (by sequence, so it is an index read); the last few rather than the very
/// last, as batches from several partitions interleave. Only events of the trade count: the
/// clock's own (stamped with a past deadline) would turn it back, and reconciliation's
/// (stamped when finance ran it) could throw it forward past a log of older events.
pub(crate) const EVENT_TIME_SQL: &str = "SELECT max(occurred_at) FROM (SELECT occurred_at FROM events \
     WHERE type NOT IN ('order_revoked', 'hold_expired') AND stream NOT LIKE 'recon:%' ORDER BY seq DESC LIMIT 64) t";

/// The sweeper's lease: one process at a time sweeps.
pub const SWEEP_LEASE: &str = "sweeper";

/// An order or hold whose deadline has passed at the sweep's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// An order still unpaid (declined, awaiting the payer) created at `created_at`.
    Order { merchant_id: MerchantId, out_trade_no: OutTradeNo, created_at: DateTime<Utc> },
    /// A Pay Score hold neither completed nor cancelled, created at `created_at`.
    Hold { merchant_id: MerchantId, out_order_no: OutOrderNo, created_at: DateTime<Utc> },
}

impl Due {
    /// When the deadline fell: the tick's event time.
    pub fn due_at(&self) -> DateTime<Utc> {
        match self {
            Due::Order { created_at, .. } => *created_at + chrono::Duration::milliseconds(ORDER_REVOKE_AFTER_MS),
            Due::Hold { created_at, .. } => *created_at + chrono::Duration::milliseconds(HOLD_EXPIRY_MS),
        }
    }
}

/// The command that settles `due`: stamped with its deadline, and with an id that names the
/// order or hold, so the same tick is recognised however often it is sent.
pub fn tick(due: &Due) -> Command {
    let (name, kind) = match due {
        Due::Order { merchant_id, out_trade_no, .. } => (
            format!("order-revoke:{merchant_id}:{out_trade_no}"),
            Lifecycle::RevokeIfDue { merchant_id: merchant_id.clone(), out_trade_no: out_trade_no.clone() },
        ),
        Due::Hold { merchant_id, out_order_no, .. } => (
            format!("hold-expire:{merchant_id}:{out_order_no}"),
            Lifecycle::HoldExpire { merchant_id: merchant_id.clone(), out_order_no: out_order_no.clone() },
        ),
    };
    Command {
        event_id: Uuid::new_v5(&TICK_NAMESPACE, name.as_bytes()),
        occurred_at: due.due_at(),
        device: None,
        kind: CommandKind::Lifecycle(kind),
        request_id: None,
    }
}

/// The sweep's clock for a ledger whose newest recorded event time is `newest`.
pub fn clock(newest: DateTime<Utc>) -> DateTime<Utc> {
    newest - chrono::Duration::milliseconds(SWEEP_EVENT_TIME_LAG_MS)
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Orders revoked by this sweep.
    pub orders_revoked: u32,
    /// Holds expired (their money released) by this sweep.
    pub holds_expired: u32,
    /// Ticks sent: more than the two above when a tick found nothing left to do.
    pub ticks: u32,
}

/// Sends the ticks of whatever is due, through a ledger.
#[derive(Clone)]
pub struct Sweeper {
    ledger: Ledger,
    /// What goes with each sweep's transaction: the outbox topics in the Kafka profile, so
    /// a revocation is published like any other outcome; nothing in the embedded one.
    delivery: Delivery,
    /// This process's name on the lease.
    holder: String,
    /// The newest clock reading so far (ms since the epoch): the clock never runs backwards.
    newest_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Sweeper {
    pub fn new(ledger: Ledger, delivery: Delivery) -> Self {
        let newest_ms = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN));
        Self { ledger, delivery, holder: format!("sweeper-{}", Uuid::new_v4()), newest_ms }
    }

    /// One sweep: at most [`SWEEP_BATCH_MAX`] ticks, decided in one transaction.
    pub async fn sweep_once(&self) -> Result<SweepReport, StoreError> {
        let store = self.ledger.store();
        let Some(read) = store.event_time().await? else { return Ok(SweepReport::default()) };
        let ms = self.newest_ms.fetch_max(read.timestamp_millis(), std::sync::atomic::Ordering::Relaxed);
        let newest = DateTime::from_timestamp_millis(ms.max(read.timestamp_millis())).unwrap_or(read);
        let due = store.due(clock(newest), SWEEP_BATCH_MAX).await?;
        if due.is_empty() {
            return Ok(SweepReport::default());
        }
        let commands: Vec<Command> = due.iter().map(tick).collect();
        let outcomes = self.ledger.handle_delivery(&commands, &self.delivery).await?;
        let mut report = SweepReport { ticks: u32::try_from(commands.len()).unwrap_or(u32::MAX), ..Default::default() };
        // The store found each of these past its deadline and still open: after the commit
        // it is revoked or expired, by this tick or by a racing one. A refusal is counted
        // as neither (it is kept with its reason like any other).
        for (d, outcome) in due.iter().zip(&outcomes) {
            match (d, &outcome.body) {
                (_, OutcomeBody::Refused { .. }) => {}
                (Due::Order { .. }, _) => report.orders_revoked += 1,
                (Due::Hold { .. }, _) => report.holds_expired += 1,
            }
        }
        Ok(report)
    }

    /// Sweeps until nothing is due at the ledger's clock (for the demo and tests: a finished
    /// run whose projections must not depend on when the last periodic sweep happened).
    pub async fn sweep_all(&self) -> Result<SweepReport, StoreError> {
        let mut total = SweepReport::default();
        loop {
            let r = self.sweep_once().await?;
            total.orders_revoked += r.orders_revoked;
            total.holds_expired += r.holds_expired;
            total.ticks += r.ticks;
            if r.ticks < SWEEP_BATCH_MAX {
                return Ok(total);
            }
        }
    }

    /// Sweeps every `interval` while this process holds the sweeper's lease, until `stop`
    /// resolves. A failed sweep (the database away) is logged and tried again next time:
    /// nothing was decided, and the ticks are the same the next time.
    pub async fn run(self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
            match self.ledger.store().lease(SWEEP_LEASE, &self.holder, SWEEP_LEASE_MS).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "sweeper: the lease could not be read; trying again");
                    continue;
                }
            }
            match self.sweep_once().await {
                Ok(r) if r.ticks > 0 => {
                    tracing::info!(revoked = r.orders_revoked, expired = r.holds_expired, ticks = r.ticks, "swept");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweep failed; trying again next interval"),
            }
        }
    }
}
