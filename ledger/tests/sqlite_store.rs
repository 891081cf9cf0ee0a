//! The ledger over the SQLite store: batches commit atomically and idempotently, the
//! projections hold what the events say, replay rebuilds them, and the schema itself refuses
//! to rewrite history or to post an unbalanced transaction.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use common::*;
use facepay_domain::{DeclineReason, OrderStatus, OutcomeBody, PaymentResult};
use facepay_ledger::core::{apply, payment_result};
use facepay_ledger::service::history_row;
use facepay_ledger::store::{HistoryFilter, Invariants, NewEvent};
use facepay_ledger::{decide, Account, Command, CommandKind, Ledger, LedgerState, LedgerStore, Policy, SqliteStore};
use proptest::prelude::*;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row, SqlitePool};
use tempfile::TempDir;
use uuid::Uuid;

const ALL_GOOD: Invariants = Invariants { balanced: true, no_order_paid_twice: true, no_overdraft: true };

struct Db {
    _dir: TempDir,
    url: String,
    ledger: Ledger,
    store: Arc<dyn LedgerStore>,
}

async fn open(policy: Policy) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let store: Arc<dyn LedgerStore> = Arc::new(SqliteStore::open(&url).await.unwrap());
    Db { _dir: dir, url, ledger: Ledger::new(store.clone(), policy), store }
}

impl Db {
    /// A second, raw connection pool to the same file.
    async fn raw(&self) -> SqlitePool {
        let options = SqliteConnectOptions::from_str(&self.url)
            .unwrap()
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        SqlitePool::connect_with(options).await.unwrap()
    }

    async fn batch(&self, commands: &[Command]) -> Vec<OutcomeBody> {
        let outcomes = self.ledger.handle_batch(commands).await.unwrap();
        assert_eq!(outcomes.len(), commands.len());
        for (o, c) in outcomes.iter().zip(commands) {
            assert_eq!(o.in_reply_to, c.event_id);
            assert_eq!(o.device, c.device);
        }
        outcomes.into_iter().map(|o| o.body).collect()
    }

    async fn assert_consistent(&self) {
        assert_eq!(self.store.check_invariants().await.unwrap(), ALL_GOOD);
        let report = self.ledger.replay().await.unwrap();
        assert!(report.matches, "replay differs: {:?}", report.differences);
    }
}

fn result(body: &OutcomeBody) -> &PaymentResult {
    match body {
        OutcomeBody::PaymentResult(r) => r,
        other => panic!("expected a payment result, got {other:?}"),
    }
}

async fn count(pool: &SqlitePool, sql: &str) -> i64 {
    sqlx::query(sql).fetch_one(pool).await.unwrap().get::<i64, _>(0)
}

#[tokio::test]
async fn batches_commit_decide_and_project_what_the_events_say() {
    let db = open(Policy::default()).await;

    // Batch 1: funding, a member card, a limit change.
    let fund_p1 = fund("p1", "500.00");
    let bodies = db
        .batch(&[fund_p1.clone(), fund("p2", "50.00"), open_card("m1", "p1", "c1"), set_limit("m2", "2000.00")])
        .await;
    assert!(bodies.iter().all(|b| matches!(b, OutcomeBody::Applied { .. })), "{bodies:?}");

    // Batch 2: a member pays, a payer without the money is declined, a capture that did not
    // resolve is declined.
    let pay_p1 = pay("m1", "o1", "100.00", 1, "p1").at("2026-03-02T04:00:00Z");
    let pay_p2 = pay("m1", "o2", "100.00", 2, "p2").at("2026-03-02T04:00:01Z");
    let pay_nobody = pay_unresolved("m1", "o3", "10.00", 3).at("2026-03-02T04:00:02Z");
    let bodies = db.batch(&[pay_p1.clone(), pay_p2.clone(), pay_nobody]).await;
    let r = result(&bodies[0]);
    assert_eq!((r.status, r.member_quick_pay, r.replayed), (OrderStatus::Paid, true, false));
    let r = result(&bodies[1]);
    assert_eq!((r.reason, r.channel_code.as_deref()), (Some(DeclineReason::InsufficientBalance), Some("NOTENOUGH")));
    assert_eq!(result(&bodies[2]).reason, Some(DeclineReason::IdentityUnresolved));

    // Batch 3: an exact retry (new event), the funding redelivered (same event id) twice, p2
    // funded and its order retried with a new capture, another amount under a used order
    // number, a card closed with the wrong code, and a query.
    let mut retry = pay_p1.clone();
    retry.event_id = event_id();
    let fund_p2_more = fund("p2", "100.00");
    let pay_p2_again = pay("m1", "o2", "100.00", 4, "p2").at("2026-03-02T04:01:00Z");
    let other_amount = pay("m1", "o1", "101.00", 5, "p1").at("2026-03-02T04:01:01Z");
    let bodies = db
        .batch(&[
            retry,
            fund_p1.clone(),
            fund_p2_more,
            pay_p2_again,
            other_amount,
            close_card("m1", "p1", "c9"),
            query("m1", "o2"),
            fund_p1.clone(),
        ])
        .await;
    let r = result(&bodies[0]);
    assert_eq!((r.status, r.replayed), (OrderStatus::Paid, true));
    assert_eq!(bodies[1], OutcomeBody::Applied { kind: "account_funded".into() });
    assert_eq!(result(&bodies[3]).status, OrderStatus::Paid);
    assert_eq!(result(&bodies[4]).reason, Some(DeclineReason::OutTradeNoUsed));
    match &bodies[5] {
        OutcomeBody::Refused { code, .. } => assert_eq!(code, "CARD_CODE_MISMATCH"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match &bodies[6] {
        OutcomeBody::QueryResult(Some(r)) => assert_eq!((r.status, r.replayed), (OrderStatus::Paid, false)),
        other => panic!("expected the order, got {other:?}"),
    }
    assert_eq!(bodies[7], bodies[1]);

    // Batch 4: a redelivered payment is answered from the stored outcome, marked replayed.
    let bodies = db.batch(std::slice::from_ref(&pay_p2)).await;
    let r = result(&bodies[0]);
    assert_eq!(
        (r.status, r.reason, r.replayed),
        (OrderStatus::Declined, Some(DeclineReason::InsufficientBalance), true)
    );

    db.assert_consistent().await;

    // The projections.
    let s = &db.store;
    assert_eq!(s.wallet(&payer("p1")).await.unwrap(), Some((40_000, false)), "funded once, paid once");
    assert_eq!(s.wallet(&payer("p2")).await.unwrap(), Some((5_000, false)));
    assert_eq!(s.wallet(&payer("p9")).await.unwrap(), None);
    let o1 = s.order(&merchant("m1"), &otn("o1")).await.unwrap().unwrap();
    assert_eq!(
        (o1.status, o1.amount_fen, o1.face_code, o1.member_quick_pay),
        (OrderStatus::Paid, 10_000, face(1), true)
    );
    let o2 = s.order(&merchant("m1"), &otn("o2")).await.unwrap().unwrap();
    assert_eq!((o2.status, o2.reason, o2.face_code), (OrderStatus::Paid, None, face(4)));
    assert_eq!(o2.created_at, at("2026-03-02T04:00:01Z"));
    assert_eq!(o2.updated_at, at("2026-03-02T04:01:00Z"));
    let o3 = s.order(&merchant("m1"), &otn("o3")).await.unwrap().unwrap();
    assert_eq!((o3.status, o3.payer_id), (OrderStatus::Declined, None));
    assert_eq!(s.order(&merchant("m2"), &otn("o1")).await.unwrap(), None);

    let history = s.history(&merchant("m1"), &HistoryFilter { limit: 50, ..Default::default() }).await.unwrap();
    let rows: Vec<(&str, OrderStatus, Option<&str>)> =
        history.iter().map(|h| (h.out_trade_no.as_str(), h.status, h.reason.as_deref())).collect();
    assert_eq!(
        rows,
        vec![
            ("o1", OrderStatus::Declined, Some("OUT_TRADE_NO_USED")),
            ("o2", OrderStatus::Paid, None),
            ("o3", OrderStatus::Declined, Some("IDENTITY_UNRESOLVED")),
            ("o2", OrderStatus::Declined, Some("INSUFFICIENT_BALANCE")),
            ("o1", OrderStatus::Paid, None),
        ],
        "newest first, one row per decided attempt, none for retries"
    );
    let paid_only = HistoryFilter { status: Some(OrderStatus::Paid), limit: 50, ..Default::default() };
    assert_eq!(s.history(&merchant("m1"), &paid_only).await.unwrap().len(), 2);

    let members = s.members(&merchant("m1")).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!((members[0].payer_id.as_str(), members[0].card_code.as_str()), ("p1", "c1"));
    assert_eq!(members[0].closed_at, None, "a wrong card code closes nothing");
    let rejected = s.rejected(10).await.unwrap();
    assert!(rejected.iter().any(|r| r.reason_code == "CARD_CODE_MISMATCH"), "{rejected:?}");

    let all = s.load_all().await.unwrap();
    assert_eq!(all.single_limit_fen(&merchant("m2")), 200_000);
    assert_eq!(all.balance_fen(&Account::Settlement(merchant("m1"))), 20_000);
    assert_eq!(all.balance_fen(&Account::Funding), -65_000);

    let raw = db.raw().await;
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM events WHERE type = 'account_funded'").await, 3);
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM events WHERE type = 'payment_succeeded'").await, 2);
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM ledger_transactions").await, 5);
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM inbound").await, 13, "one answer per distinct inbound event");
    assert_eq!(db.ledger.replay().await.unwrap().events, 10);
}

#[tokio::test]
async fn the_schema_refuses_to_rewrite_history_or_post_unbalanced() {
    let db = open(Policy::default()).await;
    db.batch(&[fund("p1", "100.00"), pay("m1", "o1", "10.00", 1, "p1")]).await;
    db.assert_consistent().await;
    let raw = db.raw().await;

    let refused = |sql: &'static str, why: &'static str| {
        let raw = raw.clone();
        async move {
            let err = sqlx::query(sql).execute(&raw).await.expect_err(sql).to_string();
            assert!(err.contains(why), "{sql}: {err}");
        }
    };
    refused("UPDATE events SET payload = '{}'", "append-only").await;
    refused("DELETE FROM events", "append-only").await;
    refused("UPDATE postings SET amount_fen = amount_fen * 2", "append-only").await;
    refused("DELETE FROM postings", "append-only").await;
    refused("DELETE FROM postings WHERE account = 'funding:external'", "append-only").await;
    refused("UPDATE ledger_transactions SET leg_count = 3", "append-only").await;
    refused("DELETE FROM ledger_transactions", "append-only").await;

    let event_id: String =
        sqlx::query("SELECT event_id FROM events ORDER BY seq LIMIT 1").fetch_one(&raw).await.unwrap().get(0);
    let txn = Uuid::new_v4().to_string();
    let posting = "INSERT INTO postings (txn_id, leg, account, amount_fen) VALUES (?, ?, ?, ?)";
    let seal = "INSERT INTO ledger_transactions (txn_id, event_id, leg_count, posted_at) VALUES (?, ?, 2, '2026-03-02T04:00:00Z')";

    // Postings summing to -1 cannot be sealed by a transaction row.
    let mut tx = raw.begin().await.unwrap();
    sqlx::query(posting).bind(&txn).bind(0).bind("wallet:p1").bind(100).execute(&mut *tx).await.unwrap();
    sqlx::query(posting).bind(&txn).bind(1).bind("funding:external").bind(-101).execute(&mut *tx).await.unwrap();
    let err = sqlx::query(seal).bind(&txn).bind(&event_id).execute(&mut *tx).await.unwrap_err().to_string();
    assert!(err.contains("sum to zero"), "{err}");
    drop(tx);

    // Nor can postings be left without a transaction row: the commit fails.
    let mut tx = raw.begin().await.unwrap();
    sqlx::query(posting).bind(&txn).bind(0).bind("wallet:p1").bind(100).execute(&mut *tx).await.unwrap();
    sqlx::query(posting).bind(&txn).bind(1).bind("funding:external").bind(-100).execute(&mut *tx).await.unwrap();
    let err = tx.commit().await.unwrap_err().to_string();
    assert!(err.contains("FOREIGN KEY"), "{err}");

    // A balanced pair is sealed (the checks above refuse for their reason, not for any
    // insert), and a posting added after the seal is refused.
    let mut tx = raw.begin().await.unwrap();
    sqlx::query(posting).bind(&txn).bind(0).bind("wallet:p1").bind(100).execute(&mut *tx).await.unwrap();
    sqlx::query(posting).bind(&txn).bind(1).bind("funding:external").bind(-100).execute(&mut *tx).await.unwrap();
    sqlx::query(seal).bind(&txn).bind(&event_id).execute(&mut *tx).await.unwrap();
    let err = sqlx::query(posting).bind(&txn).bind(2).bind("wallet:p1").bind(5).execute(&mut *tx).await.unwrap_err();
    assert!(err.to_string().contains("sealed"), "{err}");
    tx.rollback().await.unwrap();

    // A zero leg is refused by itself.
    let err = sqlx::query(posting).bind(&txn).bind(0).bind("wallet:p1").bind(0).execute(&raw).await.unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");

    // None of it left a trace.
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM postings").await, 4);
    db.assert_consistent().await;
}

#[tokio::test]
async fn the_invariant_checks_and_replay_notice_a_tampered_projection() {
    let db = open(Policy::default()).await;
    db.batch(&[fund("p1", "100.00"), pay("m1", "o1", "10.00", 1, "p1")]).await;
    db.assert_consistent().await;
    let raw = db.raw().await;

    sqlx::query("UPDATE balances SET balance_fen = balance_fen + 1 WHERE account = 'wallet:p1'")
        .execute(&raw)
        .await
        .unwrap();
    assert!(!db.store.check_invariants().await.unwrap().balanced);
    let report = db.ledger.replay().await.unwrap();
    assert!(!report.matches);
    assert!(report.differences.iter().any(|d| d.contains("balances")), "{:?}", report.differences);

    sqlx::query("UPDATE balances SET balance_fen = -1 WHERE account = 'wallet:p1'").execute(&raw).await.unwrap();
    assert!(!db.store.check_invariants().await.unwrap().no_overdraft);

    sqlx::query("UPDATE balances SET balance_fen = 9000 WHERE account = 'wallet:p1'").execute(&raw).await.unwrap();
    db.assert_consistent().await;

    sqlx::query("UPDATE orders SET status = 'DECLINED'").execute(&raw).await.unwrap();
    let report = db.ledger.replay().await.unwrap();
    assert_eq!(report.differences, vec!["projection orders differs from the log".to_string()]);
}

#[tokio::test]
async fn a_redelivered_event_in_the_same_batch_is_answered_once() {
    let db = open(Policy::default()).await;
    let f = fund("p1", "100.00");
    let p = pay("m1", "o1", "10.00", 1, "p1");
    let bodies = db.batch(&[f.clone(), f.clone(), p.clone(), p.clone()]).await;
    assert_eq!(bodies[0], bodies[1]);
    assert!(!result(&bodies[2]).replayed);
    assert!(result(&bodies[3]).replayed);
    assert_eq!((result(&bodies[3]).status, result(&bodies[3]).amount), (OrderStatus::Paid, cny("10.00")));
    assert_eq!(db.store.wallet(&payer("p1")).await.unwrap(), Some((9_000, false)));
    db.assert_consistent().await;
}

// ---- the store against the pure fold --------------------------------------------------------

/// What the service should answer for `cmd`, from the pure core.
fn expected_body(state: &mut LedgerState, cmd: &Command, policy: &Policy) -> (OutcomeBody, Vec<NewEvent>) {
    let events = match decide(state, cmd, policy) {
        Ok(events) => events,
        Err(e) => {
            let body =
                OutcomeBody::Refused { kind: cmd.kind.name().into(), code: e.code().into(), message: e.to_string() };
            return (body, vec![]);
        }
    };
    for e in &events {
        apply(state, e, cmd.occurred_at);
    }
    let body = match &cmd.kind {
        CommandKind::Pay { .. } => OutcomeBody::PaymentResult(payment_result(state, cmd, &events).unwrap()),
        CommandKind::Query { .. } => OutcomeBody::QueryResult(payment_result(state, cmd, &events)),
        kind => OutcomeBody::Applied { kind: kind.name().into() },
    };
    let news = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| NewEvent {
            event_id: Uuid::new_v5(&cmd.event_id, format!("event:{i}").as_bytes()),
            cause_event_id: cmd.event_id,
            occurred_at: cmd.occurred_at,
            event,
        })
        .collect();
    (body, news)
}

fn nonzero(balances: &BTreeMap<Account, i64>) -> BTreeMap<Account, i64> {
    balances.iter().filter(|(_, v)| **v != 0).map(|(k, v)| (k.clone(), *v)).collect()
}

async fn run_through_store(policy: Policy, ops: Vec<Op>, cuts: Vec<usize>) -> Result<(), TestCaseError> {
    let db = open(policy).await;
    let steps = steps_from(&ops, true);
    let mut model = LedgerState::default();
    let mut log: Vec<NewEvent> = Vec::new();
    let mut answers: HashMap<Uuid, OutcomeBody> = HashMap::new();
    let mut cuts = cuts.into_iter().cycle();
    let mut rest = steps.as_slice();
    while !rest.is_empty() {
        let n = cuts.next().unwrap().min(rest.len());
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        let cmds: Vec<Command> = batch.iter().map(|s| s.cmd.clone()).collect();
        let bodies = db.batch(&cmds).await;
        for (step, body) in batch.iter().zip(bodies) {
            let expected = match answers.get(&step.cmd.event_id) {
                Some(first) => {
                    let redelivered = matches!(step.kind, StepKind::Redelivery { .. });
                    prop_assert!(redelivered, "an event id answered twice");
                    let mut again = first.clone();
                    if let OutcomeBody::PaymentResult(r) = &mut again {
                        r.replayed = true;
                    }
                    again
                }
                None => {
                    let (body, news) = expected_body(&mut model, &step.cmd, &policy);
                    log.extend(news);
                    answers.insert(step.cmd.event_id, body.clone());
                    body
                }
            };
            prop_assert_eq!(body, expected, "{:?}", step);
        }
    }
    prop_assert_eq!(db.store.check_invariants().await.unwrap(), ALL_GOOD);
    let report = db.ledger.replay().await.unwrap();
    prop_assert!(report.matches, "replay differs: {:?}", report.differences);
    prop_assert_eq!(report.events, log.len() as u64);
    let stored: Vec<NewEvent> = db.store.events_after(0, u32::MAX).await.unwrap().into_iter().map(|s| s.new).collect();
    prop_assert_eq!(&stored, &log, "the log is what the core decided, in order");

    let mut live = db.store.load_all().await.unwrap();
    prop_assert_eq!(nonzero(&live.balances_fen), nonzero(&model.balances_fen));
    live.balances_fen = model.balances_fen.clone();
    prop_assert_eq!(&live, &model, "batched decisions equal the one-by-one fold");
    let history: Vec<_> = log.iter().filter_map(history_row).collect();
    let mut live_history = db.store.history_all().await.unwrap();
    live_history.iter_mut().for_each(|h| h.id = 0);
    prop_assert_eq!(live_history, history);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn the_store_decides_like_the_core_in_any_batching(
        policy in prop_oneof![Just(Policy::default()), Just(Policy { daily_amount_cap_fen: 300_000, daily_count_cap: 2 })],
        ops in prop::collection::vec(op_strategy(), 20..120),
        cuts in prop::collection::vec(1..16usize, 1..8),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_through_store(policy, ops, cuts))?;
    }
}

/// Same-payer payments from devices of different merchants, in batches handled at once by
/// clones of one ledger: the balance is spent once, and the books stay consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_of_one_payer_do_not_double_spend() {
    let db = open(Policy::default()).await;
    db.batch(&[fund("p1", "500.00")]).await;
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let ledger = db.ledger.clone();
            let m = MERCHANTS[(i % 3) as usize];
            let cmd = pay(m, &format!("o{i}"), "100.00", 10 + i, "p1").on_device(device_of(m, 1 + (i % 2) as u32));
            tokio::spawn(async move { ledger.handle_batch(&[cmd]).await.unwrap() })
        })
        .collect();
    let mut paid = 0;
    for t in tasks {
        for o in t.await.unwrap() {
            match &o.body {
                OutcomeBody::PaymentResult(r) if r.status == OrderStatus::Paid => paid += 1,
                OutcomeBody::PaymentResult(r) => assert_eq!(r.reason, Some(DeclineReason::InsufficientBalance)),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(paid, 5, "500.00 pays five payments of 100.00, no more");
    assert_eq!(db.store.wallet(&payer("p1")).await.unwrap(), Some((0, false)));
    db.assert_consistent().await;
}
