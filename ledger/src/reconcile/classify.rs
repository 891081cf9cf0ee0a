//! The pure core of reconciliation: no I/O, no clock.
//!
//! [`reconcile`] merges two streams sorted by the same key, (merchant, kind, number): the
//! bill's lines and the ledger's entries of the day. Each key's group is classified by
//! [`classify_group`]: every bill line and every money-moving ledger entry gets exactly one
//! [`Finding`]. Memory is one group, whatever the size of the day.
//!
//! A line or entry missing on its side but within [`RECON_TIMING_WINDOW_S`] of midnight is
//! flagged `near_midnight`; the shell looks its counterpart up in the neighbouring day and
//! [`settle_timing`] turns it into a timing difference (matched across days, not a break)
//! when found there with the same amount.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use facepay_domain::limits::RECON_TIMING_WINDOW_S;
use facepay_domain::time::shanghai;
use facepay_domain::OrderStatus;
use serde::{Deserialize, Serialize};

use super::bill::{channel_txn_id, BillLine, MFEN_PER_FEN};
use super::EntryKind;

/// One ledger entry of the day, as the bill should show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub merchant_id: String,
    pub kind: EntryKind,
    /// The order number (payments, reversals) or the refund number (refunds).
    pub number: String,
    pub out_trade_no: String,
    pub amount_fen: i64,
    /// Signed as the bill prints it: the fee taken (payments), or minus the fee returned.
    pub fee_fen: i64,
    /// `PAID` for money that moved (payments; refunds and reversals that were made); an
    /// order that was never paid carries its status (`DECLINED`, `REVOKED`, `REVERSED`) and
    /// is not expected in the bill.
    pub status: OrderStatus,
    pub occurred_at: DateTime<Utc>,
}

impl LedgerEntry {
    pub fn key(&self) -> (&str, EntryKind, &str) {
        (&self.merchant_id, self.kind, &self.number)
    }

    /// The bill line the channel prints for this entry (line numbers are the writer's).
    pub fn to_bill_line(&self, line_no: u64, rate_ppm: Option<i64>) -> BillLine {
        BillLine {
            line_no,
            trade_at: self.occurred_at,
            merchant_id: self.merchant_id.clone(),
            device_id: String::new(),
            channel_txn_id: channel_txn_id(&self.merchant_id, &self.out_trade_no),
            out_trade_no: self.out_trade_no.clone(),
            kind: self.kind,
            out_refund_no: if self.kind == EntryKind::Refund { self.number.clone() } else { String::new() },
            amount_fen: self.amount_fen,
            fee_mfen: self.fee_fen * MFEN_PER_FEN,
            rate_ppm,
        }
    }
}

/// What reconciliation found for one line or entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Both sides agree.
    Matched,
    /// Near midnight, found in the neighbouring day's bill or ledger: not a break.
    TimingDifference,
    /// In the bill, not in the ledger (a lost event).
    MissingInLedger,
    /// In the ledger, not in the bill.
    MissingInBill,
    AmountMismatch,
    FeeMismatch,
    /// The ledger has the order unpaid (declined, revoked, reversed) while the bill says
    /// SUCCESS: the network-timeout case.
    StatusMismatch,
    /// A second line with the key of an earlier one.
    DuplicateLine,
    /// The channel billed the order (or refund) on another day too, whatever this day's
    /// ledger says of it: charged twice.
    BilledTwice,
}

impl Class {
    pub const ALL: [Class; 9] = [
        Class::Matched,
        Class::TimingDifference,
        Class::MissingInLedger,
        Class::MissingInBill,
        Class::AmountMismatch,
        Class::FeeMismatch,
        Class::StatusMismatch,
        Class::DuplicateLine,
        Class::BilledTwice,
    ];

    pub fn is_break(self) -> bool {
        !matches!(self, Class::Matched | Class::TimingDifference)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Matched => "matched",
            Class::TimingDifference => "timing_difference",
            Class::MissingInLedger => "missing_in_ledger",
            Class::MissingInBill => "missing_in_bill",
            Class::AmountMismatch => "amount_mismatch",
            Class::FeeMismatch => "fee_mismatch",
            Class::StatusMismatch => "status_mismatch",
            Class::DuplicateLine => "duplicate_line",
            Class::BilledTwice => "billed_twice",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// One classified line or entry (or a matched pair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub class: Class,
    pub bill: Option<BillLine>,
    pub ledger: Option<LedgerEntry>,
    /// Missing on one side, and within the timing window of midnight: the shell looks in
    /// the neighbouring day before it counts this as a break.
    pub near_midnight: bool,
    /// The line was paired by the channel's transaction id, not by its key (its order
    /// number did not name the ledger's entry): see [`TxnRescue`].
    pub by_txn_id: bool,
    /// The other day whose bill has this line's key too ([`billed_twice`]).
    pub also_billed_on: Option<NaiveDate>,
}

impl Finding {
    pub fn merchant_id(&self) -> &str {
        match (&self.bill, &self.ledger) {
            (Some(b), _) => &b.merchant_id,
            (None, Some(l)) => &l.merchant_id,
            (None, None) => "",
        }
    }

    pub fn kind(&self) -> EntryKind {
        self.bill.as_ref().map_or_else(|| self.ledger.as_ref().map_or(EntryKind::Payment, |l| l.kind), |b| b.kind)
    }

    pub fn number(&self) -> &str {
        match (&self.bill, &self.ledger) {
            (Some(b), _) => b.number(),
            (None, Some(l)) => &l.number,
            (None, None) => "",
        }
    }

    /// The moment the finding is about (the bill's time, else the ledger's).
    pub fn at(&self) -> Option<DateTime<Utc>> {
        self.bill.as_ref().map(|b| b.trade_at).or(self.ledger.as_ref().map(|l| l.occurred_at))
    }

    /// A sentence for finance.
    pub fn detail(&self) -> String {
        match (&self.bill, &self.ledger) {
            (Some(b), Some(l)) if self.by_txn_id => format!(
                "{}; paired by channel transaction id {}: the bill's order number {:?} is the ledger's {:?}",
                self.class_detail(),
                b.channel_txn_id,
                b.out_trade_no,
                l.out_trade_no
            ),
            _ => self.class_detail(),
        }
    }

    fn class_detail(&self) -> String {
        let (b, l) = (self.bill.as_ref(), self.ledger.as_ref());
        let fen = |v: i64| facepay_domain::money::fen_to_string(v);
        match (self.class, b, l) {
            (Class::AmountMismatch, Some(b), Some(l)) => {
                format!("bill {} vs ledger {}", fen(b.amount_fen), fen(l.amount_fen))
            }
            (Class::FeeMismatch, Some(b), Some(l)) => {
                format!("bill fee {} vs ledger fee {}", super::bill::format_scaled(b.fee_mfen, 5), fen(l.fee_fen))
            }
            (Class::StatusMismatch, Some(b), Some(l)) => {
                format!("bill SUCCESS {} vs ledger {}", fen(b.amount_fen), l.status.as_str())
            }
            (Class::MissingInLedger, Some(b), _) => {
                format!("bill line {} ({}) has no ledger entry", b.line_no, fen(b.amount_fen))
            }
            (Class::MissingInBill, _, Some(l)) => format!("ledger entry ({}) not in the bill", fen(l.amount_fen)),
            (Class::DuplicateLine, Some(b), _) if self.by_txn_id => {
                format!(
                    "bill line {} repeats the channel transaction id {} of an earlier line",
                    b.line_no, b.channel_txn_id
                )
            }
            (Class::DuplicateLine, Some(b), _) => format!("bill line {} repeats an earlier line's key", b.line_no),
            (Class::BilledTwice, Some(b), _) => format!(
                "bill line {} ({}) is billed again in the bill of {}: charged twice",
                b.line_no,
                fen(b.amount_fen),
                self.also_billed_on.map_or_else(|| "another day".to_string(), |d| d.to_string())
            ),

            (c, _, _) => c.as_str().to_string(),
        }
    }
}

type Key = (String, EntryKind, String);

fn owned((m, k, n): (&str, EntryKind, &str)) -> Key {
    (m.to_string(), k, n.to_string())
}

fn key_ref(k: &Key) -> (&str, EntryKind, &str) {
    (&k.0, k.1, &k.2)
}

/// Merges the day's bill lines and ledger entries, both sorted by key (ledger keys unique),
/// and hands every finding to `sink`. Panics if an input is out of order: the merge would
/// silently misclassify, so that is a bug in the caller.
pub fn reconcile<E>(
    day: NaiveDate,
    mut bill: impl Iterator<Item = Result<BillLine, E>>,
    mut ledger: impl Iterator<Item = Result<LedgerEntry, E>>,
    mut sink: impl FnMut(Finding) -> Result<(), E>,
) -> Result<(), E> {
    let mut next_b = bill.next().transpose()?;
    let mut next_l = ledger.next().transpose()?;
    loop {
        let key = match (&next_b, &next_l) {
            (None, None) => return Ok(()),
            (Some(b), None) => owned(b.key()),
            (None, Some(l)) => owned(l.key()),
            (Some(b), Some(l)) => owned(b.key().min(l.key())),
        };
        let mut lines = Vec::new();
        while let Some(b) = next_b.take_if(|b| b.key() == key_ref(&key)) {
            lines.push(b);
            next_b = bill.next().transpose()?;
            if let Some(n) = &next_b {
                assert!(n.key() >= key_ref(&key), "bill lines must come sorted by key");
            }
        }
        let entry = next_l.take_if(|l| l.key() == key_ref(&key));
        if entry.is_some() {
            next_l = ledger.next().transpose()?;
            if let Some(n) = &next_l {
                assert!(n.key() > key_ref(&key), "ledger entries must come sorted by a unique key");
            }
        }
        for f in classify_group(day, lines, entry) {
            sink(f)?;
        }
    }
}

/// The findings of one key: the bill's lines with that key (any number) and the ledger's
/// entry (at most one).
pub fn classify_group(day: NaiveDate, lines: Vec<BillLine>, entry: Option<LedgerEntry>) -> Vec<Finding> {
    let mut lines = lines.into_iter();
    let Some(first) = lines.next() else {
        return match entry {
            Some(e) if e.status == OrderStatus::Paid => {
                let near_midnight = near_midnight(e.occurred_at, day);
                vec![Finding {
                    class: Class::MissingInBill,
                    bill: None,
                    ledger: Some(e),
                    near_midnight,
                    by_txn_id: false,
                    also_billed_on: None,
                }]
            }
            _ => vec![],
        };
    };
    let class = entry.as_ref().map_or(Class::MissingInLedger, |e| compare(&first, e));
    let near = entry.is_none() && near_midnight(first.trade_at, day);
    let mut out = vec![Finding {
        class,
        bill: Some(first),
        ledger: entry,
        near_midnight: near,
        by_txn_id: false,
        also_billed_on: None,
    }];
    out.extend(lines.map(|dup| Finding {
        class: Class::DuplicateLine,
        bill: Some(dup),
        ledger: None,
        near_midnight: false,
        by_txn_id: false,
        also_billed_on: None,
    }));
    out
}

/// A line against the ledger's entry of the same key: status first, then amount, then fee.
pub fn compare(b: &BillLine, e: &LedgerEntry) -> Class {
    if e.status != OrderStatus::Paid {
        Class::StatusMismatch
    } else if b.amount_fen != e.amount_fen {
        Class::AmountMismatch
    } else if b.fee_mfen != e.fee_fen * MFEN_PER_FEN {
        Class::FeeMismatch
    } else {
        Class::Matched
    }
}

/// A second chance, by the channel's transaction id (微信订单号), for the bill lines the
/// merge found no ledger entry for (their order number missing from the ledger: mangled by
/// the channel, or a lost event).
///
/// The ledger keeps no transaction id of its own: facepay is its own channel, and the id of
/// an order's payment is derived from the merchant and the order number
/// ([`channel_txn_id`]). So the shell streams the day's ledger entries again (only when
/// there is a line to look for), and each payment entry whose derived id is a held line's
/// id pairs with it:
/// - the entry was missing in the bill: the two are compared as if matched by key
///   (matched, amount, fee), and the entry's missing-in-bill finding is dropped;
/// - the entry is unpaid in the ledger (declined, revoked): a status mismatch;
/// - the entry was matched by another line: this line is a duplicate of that one.
///
/// Two held lines with one transaction id: the later is a duplicate. Memory: the held
/// findings only (at most [`facepay_domain::limits::RECON_BREAKS_MAX`]).
pub struct TxnRescue {
    /// Held lines still looked for, by transaction id: their index in the held findings.
    wanted: std::collections::HashMap<String, usize>,
    /// Held missing-in-bill payments, by (merchant, order number).
    open: std::collections::HashMap<(String, String), usize>,
    /// Missing-in-bill findings now paired: dropped by [`TxnRescue::finish`].
    paired: std::collections::HashSet<usize>,
}

impl TxnRescue {
    /// `None` when no held line can be looked for (nothing to stream again).
    pub fn new(held: &mut [Finding]) -> Option<Self> {
        let mut rescue = Self { wanted: Default::default(), open: Default::default(), paired: Default::default() };
        for (i, f) in held.iter_mut().enumerate() {
            match (&f.bill, &f.ledger) {
                (Some(b), None)
                    if f.class == Class::MissingInLedger
                        && b.kind == EntryKind::Payment
                        && !b.channel_txn_id.is_empty() =>
                {
                    if rescue.wanted.contains_key(&b.channel_txn_id) {
                        (f.class, f.by_txn_id, f.near_midnight) = (Class::DuplicateLine, true, false);
                    } else {
                        rescue.wanted.insert(b.channel_txn_id.clone(), i);
                    }
                }
                (None, Some(l)) if l.kind == EntryKind::Payment => {
                    rescue.open.insert((l.merchant_id.clone(), l.number.clone()), i);
                }
                _ => {}
            }
        }
        (!rescue.wanted.is_empty()).then_some(rescue)
    }

    /// Offers one ledger entry of the day.
    pub fn offer(&mut self, held: &mut [Finding], e: &LedgerEntry) {
        if e.kind != EntryKind::Payment || self.wanted.is_empty() {
            return;
        }
        let Some(i) = self.wanted.remove(&channel_txn_id(&e.merchant_id, &e.out_trade_no)) else { return };
        let line = held[i].bill.take().expect("a wanted finding has its line");
        let class = match self.open.remove(&(e.merchant_id.clone(), e.number.clone())) {
            Some(j) => {
                self.paired.insert(j);
                compare(&line, e)
            }
            None if e.status != OrderStatus::Paid => Class::StatusMismatch,
            None => Class::DuplicateLine,
        };
        let ledger = (class != Class::DuplicateLine).then(|| e.clone());
        held[i] =
            Finding { class, bill: Some(line), ledger, near_midnight: false, by_txn_id: true, also_billed_on: None };
    }

    /// The held findings, less the missing-in-bill ones a line was paired with.
    pub fn finish(self, held: Vec<Finding>) -> Vec<Finding> {
        held.into_iter().enumerate().filter(|(i, _)| !self.paired.contains(i)).map(|(_, f)| f).collect()
    }
}

/// The first instant of `day` in China time.
pub fn day_start(day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    shanghai().from_local_datetime(&midnight).single().expect("China has no DST").with_timezone(&Utc)
}

/// True when `at` lies within the timing window of either midnight bounding `day`.
pub fn near_midnight(at: DateTime<Utc>, day: NaiveDate) -> bool {
    Midnights::of(day).near(at)
}

/// The two midnights bounding a day, worked out once for the many lines of its bill.
#[derive(Debug, Clone, Copy)]
pub struct Midnights {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Midnights {
    pub fn of(day: NaiveDate) -> Self {
        let start = day_start(day);
        Self { start, end: start + Duration::days(1) }
    }

    /// Within the timing window of either midnight.
    pub fn near(&self, at: DateTime<Utc>) -> bool {
        let window = Duration::seconds(RECON_TIMING_WINDOW_S);
        (at - self.start).abs() <= window || (self.end - at).abs() <= window
    }
}

/// Where the counterpart of a near-midnight finding was found: its day and amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counterpart {
    pub day: NaiveDate,
    pub amount_fen: i64,
}

/// Turns a near-midnight finding into a timing difference when its counterpart lies in an
/// adjacent day with the same amount; otherwise it stays the break it was.
pub fn settle_timing(f: &mut Finding, day: NaiveDate, other: Option<Counterpart>) {
    let Some(other) = other else { return };
    let amount = f.bill.as_ref().map(|b| b.amount_fen).or(f.ledger.as_ref().map(|l| l.amount_fen));
    let adjacent = (other.day - day).num_days().abs() == 1;
    if f.near_midnight && adjacent && amount == Some(other.amount_fen) {
        f.class = Class::TimingDifference;
    }
}

/// True when the finding has a bill line within the timing window of either of the day's
/// midnights: the lines the channel may have billed on the neighbouring day too.
pub fn billed_near_midnight(f: &Finding, midnights: &Midnights) -> bool {
    f.bill.as_ref().is_some_and(|b| midnights.near(b.trade_at))
}

/// Marks a finding whose bill line the channel billed in another day's bill too (`other`:
/// that day): the line matched this day's ledger, or the neighbouring day's across midnight,
/// but the money was taken twice. A finding that is already a break stays the break it is.
pub fn billed_twice(f: &mut Finding, other: Option<NaiveDate>) {
    let (Some(day), Some(_)) = (other, &f.bill) else { return };
    if matches!(f.class, Class::Matched | Class::TimingDifference) {
        f.class = Class::BilledTwice;
        f.also_billed_on = Some(day);
    }
}

/// Count and sums of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClassSums {
    pub count: u64,
    /// Sum of the bill's amounts of these findings, in fen.
    pub bill_fen: i64,
    /// Sum of the ledger's amounts of these findings, in fen.
    pub ledger_fen: i64,
}

impl ClassSums {
    fn add(&mut self, f: &Finding) {
        self.count += 1;
        self.bill_fen += f.bill.as_ref().map_or(0, |b| b.amount_fen);
        self.ledger_fen += f.ledger.as_ref().map_or(0, |l| l.amount_fen);
    }
}

/// A run's report for finance: counts and sums by class, per merchant and in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub bill_lines: u64,
    pub ledger_entries: u64,
    pub breaks: u64,
    pub totals: BTreeMap<Class, ClassSums>,
    pub merchants: BTreeMap<String, BTreeMap<Class, ClassSums>>,
    /// Findings whose line was paired by the channel's transaction id (any class).
    #[serde(default)]
    pub by_txn_id: u64,
}

impl Report {
    pub fn add(&mut self, f: &Finding) {
        self.bill_lines += u64::from(f.bill.is_some());
        self.ledger_entries += u64::from(f.ledger.is_some());
        self.breaks += u64::from(f.class.is_break());
        self.by_txn_id += u64::from(f.by_txn_id);
        self.totals.entry(f.class).or_default().add(f);
        // Looked up before it is inserted: no key allocated per line.
        let id = f.merchant_id();
        if !self.merchants.contains_key(id) {
            self.merchants.insert(id.to_string(), BTreeMap::new());
        }
        let merchant = self.merchants.get_mut(id).expect("inserted above");
        merchant.entry(f.class).or_default().add(f);
    }

    /// The count of one class (0 when none).
    pub fn count(&self, class: Class) -> u64 {
        self.totals.get(&class).map_or(0, |s| s.count)
    }
}
