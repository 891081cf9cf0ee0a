//! Reconciliation against the real stores: a day of payments, refunds and declines decided by
//! the real ledger, a bill in each layout with every break class planted, imported (once, and
//! superseded by a corrected file), reconciled, and resolved; breaks and resolutions land in
//! the ledger's log with the audit chain intact. On SQLite (a file) and, when it answers, on
//! PostgreSQL (a throwaway database per test; skipped with a message unless
//! `FACEPAY_REQUIRE_POSTGRES=1`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::common::*;
use chrono::NaiveDate;
use facepay_domain::OrderStatus;
use facepay_ledger::reconcile::bill::{channel_txn_id, BillError, BillLine, BillWriter, Layout};
use facepay_ledger::reconcile::classify::{Class, LedgerEntry};
use facepay_ledger::reconcile::store::{
    import_and_reconcile, import_bill, resolve_break, run_reconciliation, Action, BreakFilter, ImportOutcome,
    ImportRequest, ReconError, ReconStore, RunOutcome,
};
use facepay_ledger::reconcile::EntryKind;
use facepay_ledger::{Command, CommandKind, Ledger, LedgerStore, Lifecycle, PgStore, Policy, SqliteStore, Stores};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

#[allow(dead_code)]
enum Home {
    Dir(tempfile::TempDir),
    Pg(Box<PgDatabase>),
}

struct Db {
    store: Arc<dyn LedgerStore>,
    recon: Arc<dyn ReconStore>,
    ledger: Ledger,
    /// How another process would open the same database.
    again: Again,
    _home: Home,
}

enum Again {
    Sqlite(String),
    Pg(Box<sqlx::postgres::PgConnectOptions>),
}

/// The same database opened again, as a second process would (its own connections).
async fn second_process(db: &Db) -> Arc<dyn ReconStore> {
    match &db.again {
        Again::Sqlite(url) => Stores::of(SqliteStore::open(url).await.unwrap()).recon,
        Again::Pg(options) => Stores::of(PgStore::open_with((**options).clone()).await.unwrap()).recon,
    }
}

async fn open(backend: Backend) -> Option<Db> {
    let (stores, again, home) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("recon.db").display());
            (Stores::of(SqliteStore::open(&url).await.unwrap()), Again::Sqlite(url), Home::Dir(dir))
        }
        Backend::Postgres => {
            let (database, options) = fresh_pg_database().await?;
            let store = PgStore::open_with(options.clone()).await.unwrap();
            (Stores::of(store), Again::Pg(Box::new(options)), Home::Pg(Box::new(database)))
        }
    };
    let Stores { ledger: store, recon } = stores;
    Some(Db { ledger: Ledger::new(store.clone(), Policy::default()), recon, store, again, _home: home })
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
}

fn next_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 3).unwrap()
}

fn refund(order: &str, refund_no: &str, amount: &str) -> Command {
    command(CommandKind::Lifecycle(Lifecycle::Refund {
        merchant_id: merchant("M1"),
        out_trade_no: otn(order),
        out_refund_no: facepay_domain::OutRefundNo::parse(refund_no).unwrap(),
        amount: cny(amount),
    }))
}

/// The day: five payments (one just before midnight), a decline, a refund; fee rate 0.54 %.
async fn trade(db: &Db) {
    let fee =
        command(CommandKind::Lifecycle(Lifecycle::SetFeeRate { merchant_id: merchant("M1"), fee_rate_ppm: 5_400 }));
    let cmds = vec![
        fund("p1", "900.00").at("2026-03-02T00:00:00Z"),
        fee.at("2026-03-02T00:00:01Z"),
        pay("M1", "O-1", "60.00", 1, "p1"),
        pay("M1", "O-2", "30.00", 2, "p1"),
        pay("M1", "O-3", "20.00", 3, "p1"),
        pay("M1", "O-4", "10.00", 4, "p1"),
        pay_unresolved("M1", "O-5", "15.00", 5),
        pay("M1", "O-7", "8.00", 7, "p1").at("2026-03-02T15:59:58Z"),
        refund("O-1", "RF-1", "20.00").at("2026-03-02T05:00:00Z"),
    ];
    for c in &cmds {
        db.ledger.handle_batch(std::slice::from_ref(c)).await.unwrap();
    }
}

/// The ledger's entries of `day`, as the matcher reads them.
async fn entries(db: &Db, day: NaiveDate) -> Vec<LedgerEntry> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let recon = db.recon.clone();
    let producer = tokio::spawn(async move { recon.send_ledger_entries(day, tx).await });
    let mut out = Vec::new();
    while let Some(page) = rx.recv().await {
        out.extend(page);
    }
    producer.await.unwrap().unwrap();
    out
}

/// The day's bill with every break class planted, keeping only the kinds `layout` prints;
/// the classes expected.
fn planted_bill(entries: &[LedgerEntry], layout: Layout) -> (Vec<BillLine>, BTreeMap<Class, u64>) {
    let prints = |k: EntryKind| match layout {
        Layout::Success => k == EntryKind::Payment,
        Layout::Refund => k != EntryKind::Payment,
        _ => true,
    };
    let mut lines = Vec::new();
    let mut expected = BTreeMap::new();
    let mut expect = |c: Class| *expected.entry(c).or_insert(0) += 1;
    for e in entries.iter().filter(|e| prints(e.kind)) {
        let mut l = e.to_bill_line(0, Some(5_400));
        match (e.kind, e.number.as_str(), e.status) {
            (_, "O-5", _) => {
                l.fee_mfen = 0;
                expect(Class::StatusMismatch);
            }
            (_, "O-7", _) => continue, // booked by the channel after midnight: next day's bill
            (_, "O-2", _) => {
                l.amount_fen += 100;
                expect(Class::AmountMismatch);
            }
            (_, "O-3", _) => {
                l.fee_mfen += 1_000;
                expect(Class::FeeMismatch);
            }
            (_, "O-4", _) => {
                expect(Class::MissingInBill);
                continue;
            }
            (EntryKind::Refund, _, _) => {
                lines.push(l.clone());
                expect(Class::Matched);
                expect(Class::DuplicateLine);
            }
            (_, _, OrderStatus::Paid) => expect(Class::Matched),
            _ => continue,
        }
        lines.push(l);
    }
    if layout != Layout::Refund {
        let mut lost = entries[0].to_bill_line(0, Some(5_400));
        lost.out_trade_no = "O-LOST".into();
        lost.channel_txn_id = channel_txn_id("M1", "O-LOST");
        lines.push(lost);
        expect(Class::MissingInLedger);
    }
    (lines, expected)
}

fn bill_bytes(layout: Layout, lines: &[BillLine]) -> Vec<u8> {
    let mut w = BillWriter::new(Vec::new(), layout, "1900000001").unwrap();
    for l in lines {
        w.line(l).unwrap();
    }
    w.finish().unwrap()
}

async fn import(db: &Db, day: NaiveDate, bytes: Vec<u8>) -> Result<ImportOutcome, ReconError> {
    let req = ImportRequest { day, file_name: "bill.csv".into(), account: "default".into(), at: t0() };
    import_bill(db.recon.as_ref(), std::io::Cursor::new(bytes), None, req).await
}

async fn reconcile(db: &Db, import: &ImportOutcome) -> RunOutcome {
    run_reconciliation(db.recon.clone(), import.import.import_id, t0()).await.unwrap()
}

fn found(run: &RunOutcome) -> BTreeMap<Class, u64> {
    run.run.report.totals.iter().map(|(c, s)| (*c, s.count)).collect()
}

/// The next day's bill: the near-midnight payment, booked by the channel at 00:00:01.
async fn import_next_day(db: &Db, entries: &[LedgerEntry]) -> ImportOutcome {
    let e = entries.iter().find(|e| e.number == "O-7").expect("the late payment is in the ledger");
    let mut l = e.to_bill_line(2, Some(5_400));
    l.trade_at = "2026-03-02T16:00:01Z".parse().unwrap();
    import(db, next_day(), bill_bytes(Layout::All, &[l])).await.unwrap()
}

/// Issue 22, fault 1: a payment the channel billed on two days (matched in the day's bill,
/// again at 00:00:01 in the next day's) is a `billed_twice` break, whichever day is
/// reconciled first: the near-midnight line is a timing difference only once.
async fn a_payment_billed_on_two_days_is_a_break_whichever_day_comes_first(backend: Backend) {
    for day_first in [true, false] {
        let Some(db) = open(backend).await else { return };
        trade(&db).await;
        let entries = entries(&db, day()).await;
        let day_bill = || async { import(&db, day(), bill_bytes(Layout::All, &clean_bill(&entries))).await.unwrap() };
        let first = match day_first {
            true => day_bill().await,
            false => import_next_day(&db, &entries).await,
        };
        let before = reconcile(&db, &first).await;
        assert_eq!(found(&before).get(&Class::BilledTwice), None, "one bill alone shows nothing twice");
        let second = match day_first {
            true => import_next_day(&db, &entries).await,
            false => day_bill().await,
        };
        let after = reconcile(&db, &second).await;
        assert_eq!(found(&after).get(&Class::BilledTwice), Some(&1), "day first: {day_first}");
        let twice = after.breaks.iter().find(|b| b.class == Class::BilledTwice).unwrap();
        assert_eq!(twice.number, "O-7");
        let other = if day_first { day() } else { next_day() };
        assert!(twice.detail.contains(&format!("billed again in the bill of {other}")), "{}", twice.detail);
        assert_eq!(found(&after).get(&Class::TimingDifference), None, "not also a timing difference");
    }
}

async fn every_class_in_each_layout(backend: Backend) {
    for layout in [Layout::All, Layout::Legacy, Layout::Success, Layout::Refund] {
        let Some(db) = open(backend).await else { return };
        trade(&db).await;
        let entries = entries(&db, day()).await;
        import_next_day(&db, &entries).await;
        let (lines, mut expected) = planted_bill(&entries, layout);
        let run = reconcile(&db, &import(&db, day(), bill_bytes(layout, &lines)).await.unwrap()).await;
        if layout != Layout::Refund {
            // The payment before midnight is in the next day's bill: matched across days.
            expected.insert(Class::TimingDifference, 1);
        }
        assert_eq!(found(&run), expected, "{layout:?}");
        assert_eq!(run.run.breaks as usize, run.breaks.len());
    }
}

async fn breaks_and_resolutions_are_ledger_events(backend: Backend) {
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let (lines, _) = planted_bill(&entries, Layout::All);
    let run = reconcile(&db, &import(&db, day(), bill_bytes(Layout::All, &lines)).await.unwrap()).await;
    // Without the next day's bill, the late payment is missing from this one.
    assert_eq!(found(&run)[&Class::MissingInBill], 2);
    let logged = |kind: &'static str| {
        let store = db.store.clone();
        async move {
            let events = store.events_after(0, 10_000).await.unwrap();
            events.iter().filter(|e| e.new.event.kind() == kind).count()
        }
    };
    assert_eq!(logged("recon_break_recorded").await, run.breaks.len());
    let status = run.breaks.iter().find(|b| b.class == Class::StatusMismatch).unwrap();
    assert_eq!(status.number, "O-5");
    let r = resolve_break(
        db.recon.as_ref(),
        status.break_id,
        Action::ConfirmedPaid,
        "cashier 7",
        "confirmed by the cashier",
        t0(),
    )
    .await
    .unwrap();
    assert_eq!(r.action, Action::ConfirmedPaid);
    let again = resolve_break(db.recon.as_ref(), status.break_id, Action::Accepted, "someone", "again", t0()).await;
    assert!(matches!(again, Err(ReconError::AlreadyResolved(_))), "{again:?}");
    let nobody = resolve_break(db.recon.as_ref(), Uuid::nil(), Action::Accepted, "x", "y", t0()).await;
    assert!(matches!(nobody, Err(ReconError::BreakNotFound(_))));
    let blank = resolve_break(db.recon.as_ref(), run.breaks[0].break_id, Action::Accepted, " ", "y", t0()).await;
    assert!(matches!(blank, Err(ReconError::Invalid(_))));
    assert_eq!(logged("recon_break_resolved").await, 1);
    assert_eq!(db.recon.resolutions(10).await.unwrap().len(), 1);
    // The log is still one intact chain, and the breaks changed no projection.
    assert!(db.ledger.verify().await.unwrap().ok);
    assert!(db.ledger.replay().await.unwrap().matches);
    // Filtered and paginated.
    let page = |class, unresolved, after, limit| BreakFilter {
        run_id: Some(run.run.run_id),
        class,
        unresolved,
        after,
        limit,
        ..Default::default()
    };
    let one = db.recon.breaks(&page(Some(Class::AmountMismatch), false, None, 10)).await.unwrap();
    assert_eq!(one.len(), 1);
    let open_ones = db.recon.breaks(&page(None, true, None, 100)).await.unwrap();
    assert_eq!(open_ones.len(), run.breaks.len() - 1);
    let first = db.recon.breaks(&page(None, false, None, 2)).await.unwrap();
    let rest = db.recon.breaks(&page(None, false, Some(first[1].break_id), 100)).await.unwrap();
    assert_eq!(first.len() + rest.len(), run.breaks.len());
    assert_eq!(db.recon.runs(10).await.unwrap()[0].run_id, run.run.run_id);
}

async fn imports_are_idempotent_superseded_and_all_or_nothing(backend: Backend) {
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let (lines, _) = planted_bill(&entries, Layout::All);
    let bytes = bill_bytes(Layout::All, &lines);
    let first = import(&db, day(), bytes.clone()).await.unwrap();
    assert!(!first.already_imported);
    assert_eq!((first.import.version, first.import.account.as_str()), (1, "1900000001"));
    let again = import(&db, day(), bytes.clone()).await.unwrap();
    assert!(again.already_imported, "the same file is not imported twice");
    assert_eq!(again.import.import_id, first.import.import_id);
    let resaved = format!("\u{feff}{}", String::from_utf8(bytes).unwrap().replace('\n', "\r\n"));
    let resaved = import(&db, day(), resaved.into_bytes()).await.unwrap();
    assert!(resaved.already_imported, "a re-saved copy (BOM, CRLF) is the same bill");
    let mut corrected_lines = lines.clone();
    corrected_lines.retain(|l| l.out_trade_no != "O-LOST");
    let corrected = import(&db, day(), bill_bytes(Layout::All, &corrected_lines)).await.unwrap();
    assert_eq!(corrected.import.version, 2);
    assert_eq!(corrected.supersedes, Some(first.import.import_id));
    let current = db.recon.imports(10).await.unwrap();
    assert_eq!(current.len(), 1, "one current bill per account and day");
    assert_eq!(current[0].import_id, corrected.import.import_id);
    assert!(db.recon.import_row(first.import.import_id).await.unwrap().is_some(), "the old one is kept");
    // A bad line near the end: nothing of the file is kept.
    let mut broken = bill_bytes(Layout::All, &corrected_lines);
    let text = String::from_utf8(broken.clone()).unwrap().replacen("`20.00,", "`20.0x,", 1);
    broken = text.into_bytes();
    let before = db.recon.imports(10).await.unwrap();
    let e = import(&db, day(), broken).await.unwrap_err();
    assert!(matches!(e, ReconError::Bill(_)), "{e}");
    assert_eq!(db.recon.imports(10).await.unwrap(), before);
    let run = reconcile(&db, &corrected).await;
    assert_eq!(found(&run).get(&Class::MissingInLedger), None, "the corrected bill lost its lost line");
}

/// Issue 22, fault 2: a bill is checked against its day. A bill of another day, or one line
/// of another day inside the day's bill, refuses the whole import naming the line; a file
/// imported for one day is not taken for another.
async fn a_bill_is_refused_whole_when_a_line_is_not_of_its_day(backend: Backend) {
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let lines = clean_bill(&entries);
    let e = import(&db, day() + chrono::Duration::days(7), bill_bytes(Layout::All, &lines)).await.unwrap_err();
    assert!(matches!(&e, ReconError::Bill(BillError::OffDay { line: 2, .. })), "{e}");
    assert!(e.to_string().contains("line 2:"), "the message names the line: {e}");
    let mut stray = lines.clone();
    stray[3].trade_at += chrono::Duration::days(7);
    let e = import(&db, day(), bill_bytes(Layout::All, &stray)).await.unwrap_err();
    assert!(matches!(&e, ReconError::Bill(BillError::OffDay { line: 5, .. })), "{e}");
    assert_eq!(db.recon.imports(10).await.unwrap(), vec![], "nothing of a refused bill is kept");
    // The cross-midnight window at the day's edges is the bill's.
    import_next_day(&db, &entries).await;
    // An empty bill of the day, then the same file for another day.
    import(&db, day(), bill_bytes(Layout::All, &[])).await.unwrap();
    let e = import(&db, day() + chrono::Duration::days(1), bill_bytes(Layout::All, &[])).await.unwrap_err();
    assert!(matches!(&e, ReconError::Invalid(m) if m.contains(&format!("the bill of {}", day()))), "{e}");
    assert_eq!(db.recon.imports(10).await.unwrap().len(), 2, "the next day's bill and the empty one");
}

/// Issue 22, fault 8: two processes resolving the same break at once: one resolves it, the
/// other hears that it is resolved already (never "database is locked").
async fn concurrent_resolutions_get_the_domain_answer(backend: Backend) {
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let (lines, _) = planted_bill(&entries, Layout::All);
    let run = reconcile(&db, &import(&db, day(), bill_bytes(Layout::All, &lines)).await.unwrap()).await;
    let other = second_process(&db).await;
    let open_breaks = run.breaks.iter().filter(|b| b.class != Class::StatusMismatch).collect::<Vec<_>>();
    assert!(open_breaks.len() >= 4, "{}", open_breaks.len());
    for b in open_breaks {
        let resolve = |store: Arc<dyn ReconStore>, who: &'static str| {
            let id = b.break_id;
            tokio::spawn(async move { resolve_break(store.as_ref(), id, Action::Accepted, who, "checked", t0()).await })
        };
        let (a, z) = (resolve(db.recon.clone(), "a"), resolve(other.clone(), "z"));
        let answers = [a.await.unwrap(), z.await.unwrap()];
        let done = answers.iter().filter(|r| r.is_ok()).count();
        let already = answers.iter().filter(|r| matches!(r, Err(ReconError::AlreadyResolved(_)))).count();
        assert_eq!((done, already), (1, 1), "{answers:?}");
    }
    assert!(db.ledger.verify().await.unwrap().ok, "one intact chain");
}

/// Issue 22, faults 6 and 8: a bill whose summary's 订单总金额 does not add up, or with a
/// value `1,000.00`, is refused naming line and column, and nothing of it is kept.
async fn a_bill_with_a_bad_total_or_a_comma_in_a_value_is_refused_naming_it(backend: Backend) {
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let text = String::from_utf8(bill_bytes(Layout::All, &clean_bill(&entries))).unwrap();
    let summary = text.lines().last().unwrap().to_string();
    let mut totals: Vec<String> = summary.split(',').map(String::from).collect();
    totals[5] = "`999999.99".into();
    let bad_total = text.replace(&summary, &totals.join(","));
    let e = import(&db, day(), bad_total.into_bytes()).await.unwrap_err();
    assert!(matches!(&e, ReconError::Bill(BillError::SummaryMismatch { column: 6, .. })), "{e}");
    let line2 = text.lines().nth(1).unwrap().to_string();
    let comma = line2.replacen(",`", ",`1,000.00,`", 1);
    let e = import(&db, day(), text.replace(&line2, &comma).into_bytes()).await.unwrap_err();
    assert!(matches!(&e, ReconError::Bill(BillError::BadValue { line: 2, column: 2, .. })), "{e}");
    assert!(db.recon.imports(10).await.unwrap().is_empty(), "nothing kept");
}

/// Issue 22, fault 3: the ALL, SUCCESS and REFUND bills of a day are documents of their own
/// kinds: a REFUND bill does not supersede the ALL bill (whose near-midnight line still makes
/// the day's late payment a timing difference); a corrected ALL bill supersedes the ALL bill.
async fn a_bill_supersedes_only_a_bill_of_its_own_kind(backend: Backend) {
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let all = import_next_day(&db, &entries).await;
    let refund = import(&db, next_day(), bill_bytes(Layout::Refund, &[])).await.unwrap();
    assert_eq!(refund.supersedes, None, "a REFUND bill supersedes no ALL bill");
    let current: Vec<Uuid> = db.recon.imports(10).await.unwrap().iter().map(|i| i.import_id).collect();
    assert!(current.contains(&all.import.import_id) && current.contains(&refund.import.import_id), "{current:?}");
    let (lines, _) = planted_bill(&entries, Layout::All);
    let run = reconcile(&db, &import(&db, day(), bill_bytes(Layout::All, &lines)).await.unwrap()).await;
    assert_eq!(found(&run).get(&Class::TimingDifference), Some(&1), "O-7 is in the next day's ALL bill");
    let late = entries.iter().find(|e| e.number == "O-7").unwrap();
    let mut corrected = late.to_bill_line(2, Some(5_400));
    corrected.trade_at = "2026-03-02T16:00:02Z".parse().unwrap();
    let again = import(&db, next_day(), bill_bytes(Layout::All, &[corrected])).await.unwrap();
    assert_eq!(again.supersedes, Some(all.import.import_id), "a corrected ALL bill supersedes the ALL bill");
}

/// Issue 22, fault 5: a corrected bill's run closes the open breaks of the version it
/// supersedes (as `superseded`, with a ledger event each): an order is open once, not once
/// per version; a break finance resolved stays as resolved.
async fn a_corrected_bill_closes_the_breaks_of_the_version_it_supersedes(backend: Backend) {
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let (lines, _) = planted_bill(&entries, Layout::All);
    let first = reconcile(&db, &import(&db, day(), bill_bytes(Layout::All, &lines)).await.unwrap()).await;
    let accepted = first.breaks.iter().find(|b| b.class == Class::AmountMismatch).unwrap().break_id;
    resolve_break(db.recon.as_ref(), accepted, Action::Accepted, "finance", "checked", t0()).await.unwrap();
    let refused = resolve_break(db.recon.as_ref(), first.breaks[0].break_id, Action::Superseded, "x", "y", t0()).await;
    assert!(matches!(refused, Err(ReconError::Invalid(_))), "superseded is facepay's: {refused:?}");
    let mut corrected = lines.clone();
    corrected.retain(|l| l.out_trade_no != "O-LOST");
    let second = reconcile(&db, &import(&db, day(), bill_bytes(Layout::All, &corrected)).await.unwrap()).await;
    let open = db.recon.breaks(&BreakFilter { unresolved: true, limit: 500, ..Default::default() }).await.unwrap();
    let mut open_ids: Vec<Uuid> = open.iter().map(|b| b.break_id).collect();
    let mut second_ids: Vec<Uuid> = second.breaks.iter().map(|b| b.break_id).collect();
    open_ids.sort();
    second_ids.sort();
    assert_eq!(open_ids, second_ids, "only the corrected bill's breaks are open");
    let timeouts = open.iter().filter(|b| b.number == "O-5").count();
    assert_eq!(timeouts, 1, "the timeout order is open once");
    let resolutions = db.recon.resolutions(100).await.unwrap();
    let superseded = resolutions.iter().filter(|r| r.action == Action::Superseded).count();
    assert_eq!(superseded, first.breaks.len() - 1, "every open break of the first version, once");
    assert!(resolutions.iter().any(|r| r.break_id == accepted && r.action == Action::Accepted));
    assert_eq!(logged(&db, "recon_break_resolved").await, first.breaks.len());
    assert!(db.ledger.verify().await.unwrap().ok);
}

/// Issue 22, fault 4: a bill whose run is refused (more breaks than a run may record) does
/// not become its day's bill: the bill before it stays current, no run and no break is
/// recorded, and the refusal is kept.
async fn a_bill_refused_for_too_many_breaks_is_not_the_days_bill(backend: Backend) {
    use facepay_domain::limits::RECON_BREAKS_MAX;
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let run = |bytes: Vec<u8>| {
        let req = ImportRequest { day: day(), file_name: "bill.csv".into(), account: "default".into(), at: t0() };
        import_and_reconcile(db.recon.clone(), std::io::Cursor::new(bytes), None, req)
    };
    let good = run(bill_bytes(Layout::All, &clean_bill(&entries))).await.unwrap();
    let template = entries[0].to_bill_line(0, Some(5_400));
    let unknown = (0..=RECON_BREAKS_MAX).map(|i| {
        let mut l = template.clone();
        l.out_trade_no = format!("GHOST-{i}");
        l.channel_txn_id = channel_txn_id("M1", &l.out_trade_no);
        l
    });
    let e = run(bill_bytes(Layout::All, &unknown.collect::<Vec<_>>())).await.unwrap_err();
    assert!(matches!(e, ReconError::TooManyBreaks { .. }), "{e}");
    let current = db.recon.imports(10).await.unwrap();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].import_id, good.import.import.import_id, "the earlier bill stays the day's");
    assert_eq!(db.recon.runs(10).await.unwrap().len(), 1, "no run of the refused bill");
    let breaks = db.recon.breaks(&BreakFilter { limit: 500, ..Default::default() }).await.unwrap();
    assert_eq!(breaks.len(), good.breaks.len(), "no break of the refused bill");
}

/// The day's bill as the channel prints it, every line agreeing with the ledger except the
/// timeout: O-5, declined in the ledger, paid on the channel (15.00, fee 0.08 at 0.54 %).
fn clean_bill(entries: &[LedgerEntry]) -> Vec<BillLine> {
    let line = |e: &LedgerEntry| {
        let mut l = e.to_bill_line(0, Some(5_400));
        if e.number == "O-5" {
            l.fee_mfen = 8_000;
        }
        l
    };
    entries.iter().map(line).collect()
}

fn logged(db: &Db, kind: &'static str) -> impl std::future::Future<Output = usize> {
    let store = db.store.clone();
    async move { store.events_after(0, 10_000).await.unwrap().iter().filter(|e| e.new.event.kind() == kind).count() }
}

async fn m1_day(db: &Db) -> (i64, i64) {
    let views = db.store.settlement(&merchant("M1"), 10).await.unwrap();
    views.iter().find(|v| v.day == day()).map_or((0, 0), |v| (v.gross_fen, v.fees_fen))
}

async fn a_timeout_success_confirmed_paid_is_settled_once_and_then_matches(backend: Backend) {
    // Given a day whose bill agrees with the ledger except O-5 (declined here, paid there),
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let lines = clean_bill(&entries);
    let bytes = bill_bytes(Layout::All, &lines);
    let first = import(&db, day(), bytes.clone()).await.unwrap();
    let run = reconcile(&db, &first).await;
    assert_eq!(run.breaks.len(), 1, "{:?}", run.breaks);
    let b = run.breaks[0].clone();
    assert_eq!((b.class, b.number.as_str()), (Class::StatusMismatch, "O-5"));
    // and the day's SUCCESS bill (another kind of document: it supersedes nothing), with one
    // more line, that finds the same mismatch again,
    let mut more: Vec<BillLine> = lines.iter().filter(|l| l.kind == EntryKind::Payment).cloned().collect();
    let mut lost = lines[0].clone();
    (lost.out_trade_no, lost.channel_txn_id) = ("O-LOST".into(), channel_txn_id("M1", "O-LOST"));
    more.push(lost);
    let second = reconcile(&db, &import(&db, day(), bill_bytes(Layout::Success, &more)).await.unwrap()).await;
    let b2 = second.breaks.iter().find(|b| b.class == Class::StatusMismatch).unwrap().clone();
    let before = m1_day(&db).await;
    // when finance resolves the first as confirmed_paid,
    resolve_break(db.recon.as_ref(), b.break_id, Action::ConfirmedPaid, "cashier 7", "receipt seen", t0())
        .await
        .unwrap();
    // then the order is paid through one ledger event: 15.00 gross, 0.08 fee, on the bill's day,
    assert_eq!(logged(&db, "payment_confirmed").await, 1);
    assert_eq!(m1_day(&db).await, (before.0 + 1_500, before.1 + 8));
    let o5 = entries_of(&db, "O-5").await;
    assert_eq!((o5.status, o5.fee_fen), (OrderStatus::Paid, 8));
    // resolving again, or another break of the same order as paid, posts nothing more,
    let again = resolve_break(db.recon.as_ref(), b.break_id, Action::ConfirmedPaid, "x", "y", t0()).await;
    assert!(matches!(again, Err(ReconError::AlreadyResolved(_))), "{again:?}");
    let other = resolve_break(db.recon.as_ref(), b2.break_id, Action::ConfirmedPaid, "x", "y", t0()).await;
    assert!(matches!(&other, Err(ReconError::Refused { code, .. }) if code == "ORDER_PAID"), "{other:?}");
    assert!(db.recon.break_row(b2.break_id).await.unwrap().is_some_and(|b| !b.resolved), "a refusal resolves nothing");
    let lost_break = second.breaks.iter().find(|b| b.class == Class::MissingInLedger).unwrap().break_id;
    let wrong = resolve_break(db.recon.as_ref(), lost_break, Action::ConfirmedPaid, "x", "y", t0());
    assert!(matches!(wrong.await, Err(ReconError::Invalid(_))), "only a status mismatch is confirmed paid");
    assert_eq!(logged(&db, "payment_confirmed").await, 1);
    assert_eq!(m1_day(&db).await, (before.0 + 1_500, before.1 + 8));
    // and the same bill run again matches the order, with no new break.
    let rerun = reconcile(&db, &import(&db, day(), bytes).await.unwrap()).await;
    assert_eq!((rerun.run.breaks, rerun.new_breaks), (0, 0), "{:?}", rerun.breaks);
    assert_eq!(rerun.run.report.count(Class::Matched), lines.len() as u64);
    assert!(db.ledger.verify().await.unwrap().ok);
    let replay = db.ledger.replay().await.unwrap();
    assert!(replay.matches, "{:?}", replay.differences);
}

/// The ledger's entry of order `number` of the day.
async fn entries_of(db: &Db, number: &str) -> LedgerEntry {
    entries(db, day()).await.into_iter().find(|e| e.number == number && e.kind == EntryKind::Payment).unwrap()
}

async fn running_the_same_bill_again_records_no_new_break(backend: Backend) {
    // Given a bill with every class planted, reconciled once,
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let (lines, _) = planted_bill(&entries, Layout::All);
    let bytes = bill_bytes(Layout::All, &lines);
    let first = reconcile(&db, &import(&db, day(), bytes.clone()).await.unwrap()).await;
    assert_eq!(first.new_breaks, first.breaks.len());
    let recorded = logged(&db, "recon_break_recorded").await;
    assert_eq!(recorded, first.breaks.len());
    resolve_break(db.recon.as_ref(), first.breaks[0].break_id, Action::Accepted, "finance", "known", t0())
        .await
        .unwrap();
    // when the same file is imported and reconciled again,
    let again = import(&db, day(), bytes).await.unwrap();
    assert!(again.already_imported);
    let second = reconcile(&db, &again).await;
    // then it is a second run with the same findings, and no break is recorded twice.
    assert_ne!(second.run.run_id, first.run.run_id);
    assert_eq!(second.run.report, first.run.report);
    assert_eq!(second.new_breaks, 0);
    let ids = |r: &RunOutcome| {
        let mut v: Vec<Uuid> = r.breaks.iter().map(|b| b.break_id).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&second), ids(&first));
    assert_eq!(logged(&db, "recon_break_recorded").await, recorded);
    let served = second.breaks.iter().find(|b| b.break_id == first.breaks[0].break_id).unwrap();
    assert!(served.resolved && served.run_id == first.run.run_id, "served as first recorded, resolved");
    assert_eq!(db.recon.runs(10).await.unwrap().len(), 2);
    assert!(db.ledger.verify().await.unwrap().ok);
}

async fn lines_are_paired_by_channel_transaction_id_when_their_order_number_is_not_the_ledgers(backend: Backend) {
    // Given the clean bill with order numbers mangled on the channel's side:
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let mut lines = clean_bill(&entries);
    let by_no = |lines: &[BillLine], no: &str| {
        lines.iter().position(|l| l.out_trade_no == no && l.kind == EntryKind::Payment).unwrap()
    };
    let i = by_no(&lines, "O-2");
    lines[i].out_trade_no = "O-2X".into(); // same money: matched by transaction id
    let i = by_no(&lines, "O-4");
    lines[i].out_trade_no = "O-4Z".into();
    lines[i].amount_fen += 100; // paired by transaction id, then compared: an amount mismatch
    let mut dup = lines[by_no(&lines, "O-3")].clone();
    dup.out_trade_no = "O-3-AGAIN".into(); // O-3's transaction id twice: a duplicate line
    lines.push(dup);
    let mut lost = lines[0].clone();
    (lost.out_trade_no, lost.channel_txn_id) = ("O-LOST".into(), channel_txn_id("M1", "O-LOST"));
    lines.push(lost); // an id the ledger has no order for: missing in the ledger
                      // when it is reconciled,
    let run = reconcile(&db, &import(&db, day(), bill_bytes(Layout::All, &lines)).await.unwrap()).await;
    // then no ledger entry is left missing in the bill, and each pairing says so.
    let expected = BTreeMap::from([
        (Class::Matched, 5),
        (Class::AmountMismatch, 1),
        (Class::StatusMismatch, 1),
        (Class::DuplicateLine, 1),
        (Class::MissingInLedger, 1),
    ]);
    assert_eq!(found(&run), expected);
    assert_eq!(run.run.report.by_txn_id, 3);
    let amount = run.breaks.iter().find(|b| b.class == Class::AmountMismatch).unwrap();
    assert!(amount.detail.contains("channel transaction id"), "{}", amount.detail);
    let dup = run.breaks.iter().find(|b| b.class == Class::DuplicateLine).unwrap();
    assert_eq!(dup.number, "O-3-AGAIN");
    assert_eq!(run.run.report.ledger_entries, entries.len() as u64, "every entry classified once");
}

/// A timeout success whose bill line names the order by another number (paired by the
/// channel's transaction id) is settled on the ledger's own order when confirmed paid.
async fn a_status_mismatch_paired_by_transaction_id_is_confirmed_paid_on_the_ledgers_order(backend: Backend) {
    // Given O-5 declined in the ledger, and the channel's line of it under the number O-5X,
    let Some(db) = open(backend).await else { return };
    trade(&db).await;
    let entries = entries(&db, day()).await;
    let mut lines = clean_bill(&entries);
    let i = lines.iter().position(|l| l.out_trade_no == "O-5").unwrap();
    lines[i].out_trade_no = "O-5X".into();
    let run = reconcile(&db, &import(&db, day(), bill_bytes(Layout::All, &lines)).await.unwrap()).await;
    assert_eq!(run.breaks.len(), 1, "{:?}", run.breaks);
    let b = run.breaks[0].clone();
    assert_eq!((b.class, b.number.as_str(), b.ledger_number.as_deref()), (Class::StatusMismatch, "O-5X", Some("O-5")));
    assert_eq!(db.recon.break_row(b.break_id).await.unwrap().unwrap().ledger_number.as_deref(), Some("O-5"));
    // when finance resolves it as confirmed_paid,
    resolve_break(db.recon.as_ref(), b.break_id, Action::ConfirmedPaid, "cashier 7", "receipt seen", t0())
        .await
        .unwrap();
    // then the ledger's O-5 is paid, once.
    assert_eq!(entries_of(&db, "O-5").await.status, OrderStatus::Paid);
    assert_eq!(logged(&db, "payment_confirmed").await, 1);
    let replay = db.ledger.replay().await.unwrap();
    assert!(replay.matches, "{:?}", replay.differences);
}

macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use super::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    )+};
}

on_both_stores!(
    a_bill_is_refused_whole_when_a_line_is_not_of_its_day,
    a_bill_with_a_bad_total_or_a_comma_in_a_value_is_refused_naming_it,
    a_corrected_bill_closes_the_breaks_of_the_version_it_supersedes,
    a_bill_supersedes_only_a_bill_of_its_own_kind,
    a_bill_refused_for_too_many_breaks_is_not_the_days_bill,
    a_payment_billed_on_two_days_is_a_break_whichever_day_comes_first,
    concurrent_resolutions_get_the_domain_answer,
    every_class_in_each_layout,
    breaks_and_resolutions_are_ledger_events,
    imports_are_idempotent_superseded_and_all_or_nothing,
    a_timeout_success_confirmed_paid_is_settled_once_and_then_matches,
    a_status_mismatch_paired_by_transaction_id_is_confirmed_paid_on_the_ledgers_order,
    running_the_same_bill_again_records_no_new_break,
    lines_are_paired_by_channel_transaction_id_when_their_order_number_is_not_the_ledgers,
);
