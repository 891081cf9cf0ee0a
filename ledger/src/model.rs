//! The ledger's events, its double-entry transfers, and the state they fold into.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use facepay_domain::limits::{FEE_RATE_DEFAULT_PPM, SINGLE_PAYMENT_LIMIT_DEFAULT_FEN};
use facepay_domain::time::shanghai_day;
use facepay_domain::{
    CardChannel, CardCode, DeclineReason, DeviceId, FaceCode, MerchantId, Money, OrderStatus, OutOrderNo, OutRefundNo,
    OutTradeNo, PayerId, StoreId,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A ledger account. Balances are signed fen; postings move them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Account {
    /// A payer's wallet: what facepay owes the payer.
    Wallet(PayerId),
    /// A merchant's settlement account: what facepay owes the merchant.
    Settlement(MerchantId),
    /// The outside world money comes from (bank top-ups). It runs negative by design.
    Funding,
    /// The platform's fee income: what merchants paid facepay for their payments.
    PlatformFees,
    /// Money held for a payer's Pay Score orders: moved out of the wallet at creation, so
    /// the wallet's balance is the available balance; completion and cancellation empty it.
    Hold(PayerId),
}

impl From<Account> for String {
    fn from(a: Account) -> String {
        a.key()
    }
}

impl TryFrom<String> for Account {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Account::parse(&s).ok_or_else(|| format!("not an account: {s}"))
    }
}

impl Account {
    /// The stored key: `wallet:<payer>`, `settlement:<merchant>`, `funding:external`.
    pub fn key(&self) -> String {
        match self {
            Account::Wallet(p) => format!("wallet:{p}"),
            Account::Settlement(m) => format!("settlement:{m}"),
            Account::Funding => "funding:external".to_string(),
            Account::PlatformFees => "fees:platform".to_string(),
            Account::Hold(p) => format!("hold:{p}"),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.split_once(':')? {
            ("wallet", p) => PayerId::parse(p).ok().map(Account::Wallet),
            ("settlement", m) => MerchantId::parse(m).ok().map(Account::Settlement),
            ("funding", "external") => Some(Account::Funding),
            ("fees", "platform") => Some(Account::PlatformFees),
            ("hold", p) => PayerId::parse(p).ok().map(Account::Hold),
            _ => None,
        }
    }
}

/// One leg of a transfer: a signed change of one account's balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account: Account,
    pub amount_fen: i64,
}

/// A balanced set of postings: they sum to zero, always (asserted here, and enforced again by
/// the schema when they are stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub txn_id: Uuid,
    pub postings: Vec<Posting>,
}

impl Transfer {
    /// Moves `amount` from `from` to `to`.
    pub fn between(txn_id: Uuid, from: Account, to: Account, amount: Money) -> Self {
        let postings = vec![
            Posting { account: from, amount_fen: -amount.fen() },
            Posting { account: to, amount_fen: amount.fen() },
        ];
        let t = Self { txn_id, postings };
        t.assert_balanced();
        t
    }

    /// A transfer of the given signed legs, leaving out those that move nothing; `None` when
    /// no leg moves money.
    pub fn legs(txn_id: Uuid, legs: Vec<(Account, i64)>) -> Option<Self> {
        let postings: Vec<Posting> = legs
            .into_iter()
            .filter(|(_, fen)| *fen != 0)
            .map(|(account, amount_fen)| Posting { account, amount_fen })
            .collect();
        if postings.is_empty() {
            return None;
        }
        let t = Self { txn_id, postings };
        t.assert_balanced();
        Some(t)
    }

    /// The leg of `account`, in signed fen (0 when it has none).
    pub fn leg_fen(&self, account: &Account) -> i64 {
        self.postings.iter().filter(|p| p.account == *account).map(|p| p.amount_fen).sum()
    }

    /// Panics unless the postings sum to zero and each moves money: a broken transfer is
    /// a bug that must never reach the store.
    pub fn assert_balanced(&self) {
        assert!(self.postings.len() >= 2, "a transfer has at least two legs");
        assert!(self.postings.iter().all(|p| p.amount_fen != 0), "a leg moves money");
        let sum: i64 = self.postings.iter().map(|p| p.amount_fen).sum();
        assert_eq!(sum, 0, "postings of transfer {} must sum to zero", self.txn_id);
    }
}

/// Where and what a payment attempt was: the fields both outcomes of a payment carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub merchant_id: MerchantId,
    pub store_id: StoreId,
    pub device_id: DeviceId,
    pub out_trade_no: OutTradeNo,
    pub amount: Money,
    pub face_code: FaceCode,
    /// The device's own `occurred_at` of the payment request: its claim, kept for the record.
    /// The payment's time is its event's (the platform's accept time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<DateTime<Utc>>,
}

/// The ledger's own events: the append-only log, the only source of truth. Projections are
/// folds of these; `facepay replay` proves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LedgerEvent {
    PaymentSucceeded {
        attempt: Attempt,
        payer_id: PayerId,
        member_quick_pay: bool,
        /// The Asia/Shanghai day the payment counts against for the daily caps.
        day: NaiveDate,
        /// The merchant's fee, in fen, posted to the platform's fee account (0 in events
        /// written before fees existed).
        #[serde(default)]
        fee_fen: i64,
        transfer: Transfer,
    },
    PaymentDeclined {
        attempt: Attempt,
        payer_id: Option<PayerId>,
        reason: DeclineReason,
        /// False when the decline concerns a new attempt on an order it must not touch
        /// (`ORDER_PAID`, `OUT_TRADE_NO_USED`): the order keeps its state.
        records_order: bool,
    },
    AccountFunded {
        payer_id: PayerId,
        amount: Money,
        transfer: Transfer,
    },
    AccountFrozen {
        payer_id: PayerId,
    },
    AccountUnfrozen {
        payer_id: PayerId,
    },
    MerchantLimitChanged {
        merchant_id: MerchantId,
        single_limit: Money,
    },
    /// The payer the capture `face_code` resolved to opened the merchant's member card (the
    /// capture is spent). Logs from before face-authorised cards have no face code.
    MemberCardOpened {
        merchant_id: MerchantId,
        payer_id: PayerId,
        card_code: CardCode,
        channel: CardChannel,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        face_code: Option<FaceCode>,
    },
    MemberCardClosed {
        merchant_id: MerchantId,
        payer_id: PayerId,
        card_code: CardCode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        face_code: Option<FaceCode>,
    },
    /// The payer the capture `face_code` resolved to authorised the merchant's Pay Score
    /// orders ("刷脸授权开通支付分"); the capture is spent.
    PayScoreAuthorised {
        merchant_id: MerchantId,
        payer_id: PayerId,
        face_code: FaceCode,
    },
    /// An order still unpaid 45 s (platform time) after its creation was closed.
    OrderRevoked {
        merchant_id: MerchantId,
        out_trade_no: OutTradeNo,
        payer_id: Option<PayerId>,
    },
    /// An order was reversed: closed, and when it was paid, what was left of it refunded
    /// (with what was left of its fee).
    OrderReversed {
        merchant_id: MerchantId,
        out_trade_no: OutTradeNo,
        payer_id: Option<PayerId>,
        refund_fen: i64,
        fee_refund_fen: i64,
        transfer: Option<Transfer>,
    },
    RefundSucceeded {
        merchant_id: MerchantId,
        out_trade_no: OutTradeNo,
        out_refund_no: OutRefundNo,
        payer_id: PayerId,
        amount: Money,
        /// The share of the order's fee returned with this refund, in fen.
        fee_refund_fen: i64,
        transfer: Transfer,
    },
    MerchantFeeRateChanged {
        merchant_id: MerchantId,
        fee_rate_ppm: i64,
    },
    /// A Pay Score order's hold moved from the payer's wallet to their hold account; the
    /// payer is whom the capture `face_code` resolved to (spent by it). Logs from before
    /// face-authorised orders have no face code.
    HoldCreated {
        merchant_id: MerchantId,
        out_order_no: OutOrderNo,
        payer_id: PayerId,
        amount: Money,
        transfer: Transfer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        face_code: Option<FaceCode>,
    },
    /// Completed with `total`: the merchant is paid (less the fee), the rest released.
    HoldCompleted {
        merchant_id: MerchantId,
        out_order_no: OutOrderNo,
        payer_id: PayerId,
        total: Money,
        fee_fen: i64,
        transfer: Transfer,
    },
    /// Cancelled: the whole hold went back to the wallet.
    HoldCancelled {
        merchant_id: MerchantId,
        out_order_no: OutOrderNo,
        payer_id: PayerId,
        transfer: Transfer,
    },
    /// Untouched for 30 days (platform time): the whole hold went back to the wallet.
    HoldExpired {
        merchant_id: MerchantId,
        out_order_no: OutOrderNo,
        payer_id: PayerId,
        transfer: Transfer,
    },
    /// Reconciliation found a difference between the channel's bill and the ledger (issue 6;
    /// stream `recon:<merchant>`). Moves no money: a break is a fact about two records.
    ReconBreakRecorded {
        merchant_id: String,
        day: NaiveDate,
        run_id: Uuid,
        break_id: Uuid,
        class: String,
        /// `P` payment, `R` refund, `V` reversal.
        kind: String,
        number: String,
        bill_amount_fen: Option<i64>,
        ledger_amount_fen: Option<i64>,
        detail: String,
    },
    /// The channel's bill proved paid an order the ledger had unpaid (a timeout), and
    /// finance resolved the break as `confirmed_paid`: the order is paid from now on, and the
    /// money the channel took outside facepay's wallets comes from the funding account
    /// (see [`crate::reconcile::settle`]). The payment counts on `paid_at`'s day.
    PaymentConfirmed {
        attempt: Attempt,
        payer_id: Option<PayerId>,
        /// When the channel took the money (the bill's trade time).
        paid_at: DateTime<Utc>,
        /// The channel's transaction id, as the bill printed it.
        channel_txn_id: String,
        /// The break this settled.
        break_id: Uuid,
        fee_fen: i64,
        transfer: Transfer,
    },
    /// A break was resolved: how, by whom and why (when: the event's time).
    ReconBreakResolved {
        merchant_id: String,
        break_id: Uuid,
        action: String,
        resolved_by: String,
        reason: String,
    },
}

impl LedgerEvent {
    /// The stored `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            LedgerEvent::PaymentSucceeded { .. } => "payment_succeeded",
            LedgerEvent::PaymentDeclined { .. } => "payment_declined",
            LedgerEvent::AccountFunded { .. } => "account_funded",
            LedgerEvent::AccountFrozen { .. } => "account_frozen",
            LedgerEvent::AccountUnfrozen { .. } => "account_unfrozen",
            LedgerEvent::MerchantLimitChanged { .. } => "merchant_limit_changed",
            LedgerEvent::MemberCardOpened { .. } => "member_card_opened",
            LedgerEvent::MemberCardClosed { .. } => "member_card_closed",
            LedgerEvent::PayScoreAuthorised { .. } => "pay_score_authorised",
            LedgerEvent::OrderRevoked { .. } => "order_revoked",
            LedgerEvent::OrderReversed { .. } => "order_reversed",
            LedgerEvent::RefundSucceeded { .. } => "refund_succeeded",
            LedgerEvent::MerchantFeeRateChanged { .. } => "merchant_fee_rate_changed",
            LedgerEvent::HoldCreated { .. } => "hold_created",
            LedgerEvent::HoldCompleted { .. } => "hold_completed",
            LedgerEvent::HoldCancelled { .. } => "hold_cancelled",
            LedgerEvent::HoldExpired { .. } => "hold_expired",
            LedgerEvent::ReconBreakRecorded { .. } => "recon_break_recorded",
            LedgerEvent::ReconBreakResolved { .. } => "recon_break_resolved",
            LedgerEvent::PaymentConfirmed { .. } => "payment_confirmed",
        }
    }

    /// The stream the event belongs to (its aggregate): a payer, or a merchant.
    pub fn stream(&self) -> String {
        match self {
            LedgerEvent::PaymentSucceeded { payer_id, .. } => format!("payer:{payer_id}"),
            LedgerEvent::PaymentDeclined { attempt, payer_id, .. } => match payer_id {
                Some(p) => format!("payer:{p}"),
                None => format!("merchant:{}", attempt.merchant_id),
            },
            LedgerEvent::AccountFunded { payer_id, .. }
            | LedgerEvent::AccountFrozen { payer_id }
            | LedgerEvent::AccountUnfrozen { payer_id } => format!("payer:{payer_id}"),
            LedgerEvent::MerchantLimitChanged { merchant_id, .. }
            | LedgerEvent::MemberCardOpened { merchant_id, .. }
            | LedgerEvent::MemberCardClosed { merchant_id, .. }
            | LedgerEvent::MerchantFeeRateChanged { merchant_id, .. } => format!("merchant:{merchant_id}"),
            LedgerEvent::PayScoreAuthorised { payer_id, .. } => format!("payer:{payer_id}"),
            LedgerEvent::OrderRevoked { merchant_id, payer_id, .. }
            | LedgerEvent::OrderReversed { merchant_id, payer_id, .. } => match payer_id {
                Some(p) => format!("payer:{p}"),
                None => format!("merchant:{merchant_id}"),
            },
            LedgerEvent::RefundSucceeded { payer_id, .. }
            | LedgerEvent::HoldCreated { payer_id, .. }
            | LedgerEvent::HoldCompleted { payer_id, .. }
            | LedgerEvent::HoldCancelled { payer_id, .. }
            | LedgerEvent::HoldExpired { payer_id, .. } => format!("payer:{payer_id}"),
            LedgerEvent::ReconBreakRecorded { merchant_id, .. }
            | LedgerEvent::ReconBreakResolved { merchant_id, .. } => format!("recon:{merchant_id}"),
            LedgerEvent::PaymentConfirmed { attempt, payer_id, .. } => match payer_id {
                Some(p) => format!("payer:{p}"),
                None => format!("merchant:{}", attempt.merchant_id),
            },
        }
    }

    pub fn transfer(&self) -> Option<&Transfer> {
        match self {
            LedgerEvent::PaymentSucceeded { transfer, .. }
            | LedgerEvent::AccountFunded { transfer, .. }
            | LedgerEvent::RefundSucceeded { transfer, .. }
            | LedgerEvent::HoldCreated { transfer, .. }
            | LedgerEvent::HoldCompleted { transfer, .. }
            | LedgerEvent::HoldCancelled { transfer, .. }
            | LedgerEvent::HoldExpired { transfer, .. }
            | LedgerEvent::PaymentConfirmed { transfer, .. } => Some(transfer),
            LedgerEvent::OrderReversed { transfer, .. } => transfer.as_ref(),
            _ => None,
        }
    }

    /// What the event adds to its merchant's settlement of its Asia/Shanghai day (payments
    /// gross, refunds, net fees), if it moves a merchant's money.
    pub fn settlement(&self, occurred_at: DateTime<Utc>) -> Option<(SettlementKey, Settlement)> {
        let fees = |t: &Transfer| t.leg_fen(&Account::PlatformFees);
        let (merchant_id, s) = match self {
            LedgerEvent::PaymentConfirmed { attempt, paid_at, transfer, .. } => {
                let s = Settlement { gross_fen: attempt.amount.fen(), refunds_fen: 0, fees_fen: fees(transfer) };
                return Some(((attempt.merchant_id.clone(), shanghai_day(*paid_at)), s));
            }
            LedgerEvent::PaymentSucceeded { attempt, transfer, .. } => (
                &attempt.merchant_id,
                Settlement { gross_fen: attempt.amount.fen(), refunds_fen: 0, fees_fen: fees(transfer) },
            ),
            LedgerEvent::HoldCompleted { merchant_id, total, transfer, .. } => {
                (merchant_id, Settlement { gross_fen: total.fen(), refunds_fen: 0, fees_fen: fees(transfer) })
            }
            LedgerEvent::RefundSucceeded { merchant_id, amount, transfer, .. } => {
                (merchant_id, Settlement { gross_fen: 0, refunds_fen: amount.fen(), fees_fen: fees(transfer) })
            }
            LedgerEvent::OrderReversed { merchant_id, refund_fen, transfer: Some(t), .. } => {
                (merchant_id, Settlement { gross_fen: 0, refunds_fen: *refund_fen, fees_fen: fees(t) })
            }
            _ => return None,
        };
        Some(((merchant_id.clone(), shanghai_day(occurred_at)), s))
    }
}

/// An order, as its latest deciding event left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub merchant_id: MerchantId,
    pub out_trade_no: OutTradeNo,
    pub amount_fen: i64,
    pub status: OrderStatus,
    pub reason: Option<DeclineReason>,
    pub payer_id: Option<PayerId>,
    /// The face code of the attempt that set this state: an exact retry repeats it.
    pub face_code: FaceCode,
    pub member_quick_pay: bool,
    pub store_id: StoreId,
    pub device_id: DeviceId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The fee taken from the merchant when the order was paid, in fen.
    pub fee_fen: i64,
    /// How much of the payment went back to the payer (refunds and reversal); never above
    /// `amount_fen`.
    pub refunded_fen: i64,
    /// How much of the fee went back to the merchant with those refunds; never above `fee_fen`.
    pub fee_refunded_fen: i64,
}

/// A refund, as decided; its number is unique per merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub out_trade_no: OutTradeNo,
    pub payer_id: PayerId,
    pub amount_fen: i64,
    pub fee_refund_fen: i64,
    pub refunded_at: DateTime<Utc>,
}

/// Where a Pay Score order is (the channel's states, less DOING which facepay does not track).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HoldStatus {
    /// Created: the hold is on the payer's money.
    Created,
    /// Completed with a total: final.
    Done,
    /// Cancelled before completion: final.
    Revoked,
    /// Untouched for 30 days: final.
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Created => "CREATED",
            HoldStatus::Done => "DONE",
            HoldStatus::Revoked => "REVOKED",
            HoldStatus::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [HoldStatus::Created, HoldStatus::Done, HoldStatus::Revoked, HoldStatus::Expired]
            .into_iter()
            .find(|h| h.as_str() == s)
    }
}

/// A Pay Score order and its hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub payer_id: PayerId,
    pub hold_fen: i64,
    pub status: HoldStatus,
    /// The completed total, once done.
    pub total_fen: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A merchant's money of one Asia/Shanghai day: what the daily bill's summary line shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Payments and completed Pay Score orders.
    pub gross_fen: i64,
    /// Refunds and reversals of paid orders.
    pub refunds_fen: i64,
    /// Fees taken, less fees returned with refunds.
    pub fees_fen: i64,
}

impl Settlement {
    /// What the merchant is owed for the day.
    pub fn net_fen(&self) -> i64 {
        self.gross_fen - self.refunds_fen - self.fees_fen
    }

    pub fn add(&mut self, other: &Settlement) {
        self.gross_fen += other.gross_fen;
        self.refunds_fen += other.refunds_fen;
        self.fees_fen += other.fees_fen;
    }
}

pub type SettlementKey = (MerchantId, NaiveDate);

/// A merchant's member card held by a payer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub card_code: CardCode,
    pub channel: CardChannel,
    pub opened_at: DateTime<Utc>,
    /// Set when the card is closed; a closed member pays like anyone else.
    pub closed_at: Option<DateTime<Utc>>,
    /// The member's last visit: when the ledger last accepted their payment at the merchant
    /// while this card was open (platform time; `None` until the first).
    pub last_visit_at: Option<DateTime<Utc>>,
}

/// What spent a face code (a capture authorises one thing, once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureUse {
    pub merchant_id: MerchantId,
    /// The order number of a payment; `card|<code>`, `pay_score|<order no>` or
    /// `pay_score_authorised` for what else a capture authorises.
    pub used_by: String,
}

/// A payer's successful face payments on one Asia/Shanghai day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DailyUsage {
    pub amount_fen: i64,
    pub count: u32,
}

pub type OrderKey = (MerchantId, OutTradeNo);
pub type RefundKey = (MerchantId, OutRefundNo);
pub type HoldKey = (MerchantId, OutOrderNo);

/// Everything `decide` may consult. In the service it holds only the entities a batch
/// touches (loaded from the projections); in replay and tests it holds everything. An
/// absent entity means "does not exist": the loader guarantees every touched key was read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    pub balances_fen: BTreeMap<Account, i64>,
    /// Payers whose account is frozen (a present `false` means unfrozen after a freeze).
    pub frozen: BTreeMap<PayerId, bool>,
    /// Merchants whose single-payment limit was changed from the default.
    pub limits_fen: BTreeMap<MerchantId, i64>,
    pub orders: BTreeMap<OrderKey, Order>,
    pub captures: BTreeMap<FaceCode, CaptureUse>,
    pub members: BTreeMap<(MerchantId, PayerId), Member>,
    pub daily: BTreeMap<(PayerId, NaiveDate), DailyUsage>,
    /// Merchants whose fee rate was set, in parts per million.
    pub fee_rates_ppm: BTreeMap<MerchantId, i64>,
    pub refunds: BTreeMap<RefundKey, Refund>,
    pub holds: BTreeMap<HoldKey, Hold>,
    /// When each payer authorised each merchant's Pay Score orders.
    pub pay_score: BTreeMap<(MerchantId, PayerId), DateTime<Utc>>,
    /// Per merchant and day: a fold of the log that `decide` never reads. The stores add
    /// each batch's events to it (as balances), so it is never loaded per batch.
    pub settlement: BTreeMap<SettlementKey, Settlement>,
}

impl LedgerState {
    pub fn fee_rate_ppm(&self, merchant: &MerchantId) -> i64 {
        self.fee_rates_ppm.get(merchant).copied().unwrap_or(FEE_RATE_DEFAULT_PPM)
    }

    pub fn balance_fen(&self, account: &Account) -> i64 {
        self.balances_fen.get(account).copied().unwrap_or(0)
    }

    pub fn is_frozen(&self, payer: &PayerId) -> bool {
        self.frozen.get(payer).copied().unwrap_or(false)
    }

    pub fn single_limit_fen(&self, merchant: &MerchantId) -> i64 {
        self.limits_fen.get(merchant).copied().unwrap_or(SINGLE_PAYMENT_LIMIT_DEFAULT_FEN)
    }

    pub fn daily(&self, payer: &PayerId, day: NaiveDate) -> DailyUsage {
        self.daily.get(&(payer.clone(), day)).copied().unwrap_or_default()
    }

    /// True when the payer authorised the merchant's Pay Score orders.
    pub fn pay_score_authorised(&self, merchant: &MerchantId, payer: &PayerId) -> bool {
        self.pay_score.contains_key(&(merchant.clone(), payer.clone()))
    }

    /// True when the payer holds an open member card of the merchant.
    pub fn is_member(&self, merchant: &MerchantId, payer: &PayerId) -> bool {
        self.members.get(&(merchant.clone(), payer.clone())).is_some_and(|m| m.closed_at.is_none())
    }
}

/// Keys of ledger entities: those a command must read (what the store loads before a batch
/// is decided) or those an event changed (what the projection writer upserts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub accounts: BTreeSet<Account>,
    pub frozen: BTreeSet<PayerId>,
    pub limits: BTreeSet<MerchantId>,
    pub orders: BTreeSet<OrderKey>,
    pub captures: BTreeSet<FaceCode>,
    pub members: BTreeSet<(MerchantId, PayerId)>,
    pub daily: BTreeSet<(PayerId, NaiveDate)>,
    pub fee_rates: BTreeSet<MerchantId>,
    pub refunds: BTreeSet<RefundKey>,
    pub holds: BTreeSet<HoldKey>,
    pub pay_score: BTreeSet<(MerchantId, PayerId)>,
}

impl Keys {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.frozen.is_empty()
            && self.limits.is_empty()
            && self.orders.is_empty()
            && self.captures.is_empty()
            && self.members.is_empty()
            && self.daily.is_empty()
            && self.fee_rates.is_empty()
            && self.refunds.is_empty()
            && self.holds.is_empty()
            && self.pay_score.is_empty()
    }
}

/// Applies `$body` to each (keys field, state field) pair of [`Keys`] and [`LedgerState`].
macro_rules! for_each_entity {
    ($m:ident) => {
        $m!(accounts, balances_fen);
        $m!(frozen, frozen);
        $m!(limits, limits_fen);
        $m!(orders, orders);
        $m!(captures, captures);
        $m!(members, members);
        $m!(daily, daily);
        $m!(fee_rates, fee_rates_ppm);
        $m!(refunds, refunds);
        $m!(holds, holds);
        $m!(pay_score, pay_score);
    };
}

impl Keys {
    /// Adds every key of `other`.
    pub fn extend(&mut self, other: &Keys) {
        macro_rules! ext {
            ($k:ident, $s:ident) => {
                self.$k.extend(other.$k.iter().cloned());
            };
        }
        for_each_entity!(ext);
    }

    /// The keys of `self` that `known` lacks.
    pub fn minus(&self, known: &Keys) -> Keys {
        let mut out = Keys::default();
        macro_rules! diff {
            ($k:ident, $s:ident) => {
                out.$k = self.$k.difference(&known.$k).cloned().collect();
            };
        }
        for_each_entity!(diff);
        out
    }

    /// Drops every key of `gone` from `self`, in place: the cost is `gone`'s, not `self`'s (a
    /// ledger's cache forgets a batch's keys after every commit, and its known keys grow to
    /// [`facepay_domain::limits::LEDGER_CACHE_ENTITIES_MAX`]).
    pub fn remove_all(&mut self, gone: &Keys) {
        macro_rules! remove {
            ($k:ident, $s:ident) => {
                for key in &gone.$k {
                    self.$k.remove(key);
                }
            };
        }
        for_each_entity!(remove);
    }

    /// How many keys in all.
    pub fn len(&self) -> usize {
        let mut n = 0;
        macro_rules! count {
            ($k:ident, $s:ident) => {
                n += self.$k.len();
            };
        }
        for_each_entity!(count);
        n
    }
}

impl LedgerState {
    /// A state holding just the entities `keys` name (absent ones stay absent).
    pub fn extract(&self, keys: &Keys) -> LedgerState {
        let mut out = LedgerState::default();
        macro_rules! take {
            ($k:ident, $s:ident) => {
                for key in &keys.$k {
                    if let Some(v) = self.$s.get(key) {
                        out.$s.insert(key.clone(), v.clone());
                    }
                }
            };
        }
        for_each_entity!(take);
        out
    }

    /// Sets the entities `keys` name to their value in `from` (absent there → absent here).
    pub fn overwrite(&mut self, from: &LedgerState, keys: &Keys) {
        macro_rules! put {
            ($k:ident, $s:ident) => {
                for key in &keys.$k {
                    match from.$s.get(key) {
                        Some(v) => self.$s.insert(key.clone(), v.clone()),
                        None => self.$s.remove(key),
                    };
                }
            };
        }
        for_each_entity!(put);
    }
}

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
            Due::Order { created_at, .. } => {
                *created_at + chrono::Duration::milliseconds(facepay_domain::limits::ORDER_REVOKE_AFTER_MS)
            }
            Due::Hold { created_at, .. } => {
                *created_at + chrono::Duration::milliseconds(facepay_domain::limits::HOLD_EXPIRY_MS)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payer(s: &str) -> PayerId {
        PayerId::parse(s).unwrap()
    }

    fn order(m: &str, o: &str) -> OrderKey {
        (MerchantId::parse(m).unwrap(), OutTradeNo::parse(o).unwrap())
    }

    #[test]
    fn given_known_keys_when_some_are_removed_then_only_those_go() {
        let mut known = Keys::default();
        known.accounts.extend([Account::Wallet(payer("p1")), Account::Wallet(payer("p2")), Account::Funding]);
        known.orders.extend([order("m1", "o1"), order("m1", "o2")]);
        known.frozen.insert(payer("p1"));
        let mut gone = Keys::default();
        gone.accounts.extend([Account::Wallet(payer("p2")), Account::Wallet(payer("p9"))]);
        gone.orders.insert(order("m1", "o2"));

        known.remove_all(&gone);

        assert_eq!(known.accounts, BTreeSet::from([Account::Wallet(payer("p1")), Account::Funding]));
        assert_eq!(known.orders, BTreeSet::from([order("m1", "o1")]));
        assert_eq!(known.frozen, BTreeSet::from([payer("p1")]), "a kind not named is untouched");
        assert_eq!(known.minus(&gone), known, "nothing removed is left");
    }
}
