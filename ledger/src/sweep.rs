//! The ledger's clock: revokes orders still unpaid 45 s after their creation and expires Pay
//! Score holds untouched for 30 days, without anyone having to ask.
//!
//! Payments, queries, completions and cancellations check these deadlines themselves (on
//! their own platform time), so the sweeper changes no decision: it only makes the projections
//! say so, and gives the held money back, when nobody touches the order or the hold again.
//!
//! Replay gives the same result because each tick is an ordinary command whose time is the
//! deadline itself (`created_at + 45 s`, `created_at + 30 days`), not the moment the sweep
//! happened to run, and whose event id is derived from the order or hold it concerns:
//! sweeping twice, or from two processes at once, decides once (the second is answered as a
//! repeat). The sweep's "now" is the platform's clock ([`Clock`]) less
//! [`SWEEP_EVENT_TIME_LAG_MS`], and it never runs backwards: nothing a device sends moves it
//! (every event's time is the platform's accept time, and the sweep does not read events'
//! times at all), and it never runs ahead of the platform. A simulation drives the platform's
//! clock (the demo's past day), so its log is swept as of its own time.
//!
//! # Layout
//! - [`Due`]: an order or hold past its deadline, as a store finds it.
//! - [`tick`], [`due_in`]: the pure part: the command a due entity gets, and what is due in
//!   a state held whole.
//! - [`Sweeper`]: reads the clock, finds what is due, and decides the ticks through the
//!   [`Ledger`], a bounded batch per sweep.

use std::time::Duration;

use chrono::{DateTime, Utc};
use facepay_domain::limits::{SWEEP_BATCH_MAX, SWEEP_EVENT_TIME_LAG_MS, SWEEP_LEASE_MS};
use facepay_domain::time::SharedClock;
use facepay_domain::OutcomeBody;
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

/// The sweeper's lease: one process at a time sweeps.
pub const SWEEP_LEASE: &str = "sweeper";

pub use crate::model::Due;

/// What is due at `now` in `state` (orders still unpaid, holds still open, past their
/// deadlines): what a store's `due` query finds, for a state held whole (replays, tests).
pub fn due_in(state: &crate::model::LedgerState, now: DateTime<Utc>) -> Vec<Due> {
    use facepay_domain::OrderStatus;
    let orders = state.orders.values().filter(|o| o.status == OrderStatus::Declined).map(|o| Due::Order {
        merchant_id: o.merchant_id.clone(),
        out_trade_no: o.out_trade_no.clone(),
        created_at: o.created_at,
    });
    let holds =
        state.holds.iter().filter(|(_, h)| h.status == crate::model::HoldStatus::Created).map(|((m, no), h)| {
            Due::Hold { merchant_id: m.clone(), out_order_no: no.clone(), created_at: h.created_at }
        });
    orders.chain(holds).filter(|d| d.due_at() <= now).collect()
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
    Command::new(Uuid::new_v5(&TICK_NAMESPACE, name.as_bytes()), due.due_at(), None, CommandKind::Lifecycle(kind))
}

/// The sweep's "now" when the platform's clock reads `now`: an attempt accepted just inside
/// an order's 45 s may still wait in a lagging partition, and is decided before the sweep.
pub fn clock(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::milliseconds(SWEEP_EVENT_TIME_LAG_MS)
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
    /// The platform's clock.
    platform: SharedClock,
    /// The newest clock reading so far (ms since the epoch): the clock never runs backwards.
    newest_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Sweeper {
    pub fn new(ledger: Ledger, delivery: Delivery, platform: SharedClock) -> Self {
        let newest_ms = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN));
        Self { ledger, delivery, holder: format!("sweeper-{}", Uuid::new_v4()), platform, newest_ms }
    }

    /// One sweep: at most [`SWEEP_BATCH_MAX`] ticks, decided in one transaction.
    pub async fn sweep_once(&self) -> Result<SweepReport, StoreError> {
        let read = self.platform.now().timestamp_millis();
        let ms = self.newest_ms.fetch_max(read, std::sync::atomic::Ordering::Relaxed).max(read);
        let now = DateTime::from_timestamp_millis(ms).expect("a clock reading in range");
        let due = self.ledger.store().due(clock(now), SWEEP_BATCH_MAX).await?;
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
