//! The ledger over each store (SQLite and PostgreSQL, the same tests against both):
//! batches commit atomically and idempotently, the projections hold what the events say,
//! replay rebuilds them, the schema itself refuses to rewrite history or to post an
//! unbalanced transaction, and consumer offsets and outbox messages land with their batch.
//!
//! Each PostgreSQL test runs on a database of its own, created on the server named by
//! `FACEPAY_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and dropped
//! afterwards. When that server is unreachable the PostgreSQL variants say so and pass,
//! unless `FACEPAY_REQUIRE_POSTGRES=1` (as in CI), when they fail.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use facepay_domain::{DeclineReason, OrderStatus, OutcomeBody, PaymentResult};
use facepay_ledger::core::{apply, payment_result};
use facepay_ledger::service::history_row;
use facepay_ledger::store::{
    CommitBatch, ConsumerOffset, HistoryFilter, InboundRecord, Invariants, MembersPage, NewEvent, OutboxMessage,
    OutboxPayload, PendingMessage, StoredAnswer,
};
use facepay_ledger::{
    decide, Account, Command, CommandKind, Ledger, LedgerEvent, LedgerState, LedgerStore, PgStore, Policy, SqliteStore,
};
use proptest::prelude::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, PgPool, Row, SqlitePool};
use tempfile::TempDir;
use uuid::Uuid;

const ALL_GOOD: Invariants = Invariants { balanced: true, no_order_paid_twice: true, no_overdraft: true };

// ---- the two backends -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// What keeps a test's database alive.
#[allow(dead_code)]
enum Home {
    Dir(TempDir),
    Pg(Box<PgDatabase>),
}

/// A second, raw connection pool to the test's database, for what the store never does.
#[derive(Clone)]
enum Raw {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

impl Raw {
    async fn exec(&self, sql: &str) -> Result<u64, String> {
        let done = match self {
            Raw::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()),
            Raw::Pg(pool) => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()),
        };
        done.map_err(|e| e.to_string())
    }

    async fn count(&self, sql: &str) -> i64 {
        match self {
            Raw::Sqlite(pool) => sqlx::query(sql).fetch_one(pool).await.unwrap().get::<i64, _>(0),
            Raw::Pg(pool) => sqlx::query(sql).fetch_one(pool).await.unwrap().get::<i64, _>(0),
        }
    }

    /// Runs `stmts` in one database transaction and commits it. On failure, the step that
    /// failed (`stmts.len()` for the commit) and the error; the transaction is rolled back.
    async fn script(&self, stmts: &[String]) -> Result<(), (usize, String)> {
        macro_rules! run {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await.unwrap();
                for (step, sql) in stmts.iter().enumerate() {
                    sqlx::query(sql).execute(&mut *tx).await.map_err(|e| (step, e.to_string()))?;
                }
                tx.commit().await.map_err(|e| (stmts.len(), e.to_string()))
            }};
        }
        match self {
            Raw::Sqlite(pool) => run!(pool),
            Raw::Pg(pool) => run!(pool),
        }
    }

    /// A typed literal both databases read: PostgreSQL wants its type named.
    fn lit(&self, value: &str, pg_type: &str) -> String {
        match self {
            Raw::Sqlite(_) => format!("'{value}'"),
            Raw::Pg(_) => format!("CAST('{value}' AS {pg_type})"),
        }
    }
}

struct Db {
    raw: Raw,
    ledger: Ledger,
    store: Arc<dyn LedgerStore>,
    // Last: dropped after the pools above.
    _home: Home,
}

/// The store under test on `backend`, or `None` if that backend is unavailable here.
async fn open(backend: Backend, policy: Policy) -> Option<Db> {
    let (store, raw, home): (Arc<dyn LedgerStore>, Raw, Home) = match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
            let store = Arc::new(SqliteStore::open(&url).await.unwrap());
            let options =
                SqliteConnectOptions::from_str(&url).unwrap().foreign_keys(true).busy_timeout(Duration::from_secs(5));
            (store, Raw::Sqlite(SqlitePool::connect_with(options).await.unwrap()), Home::Dir(dir))
        }
        Backend::Postgres => {
            let (database, options) = fresh_pg_database().await?;
            let store = Arc::new(PgStore::open_with(options.clone()).await.unwrap());
            let raw = PgPoolOptions::new().max_connections(2).connect_with(options).await.unwrap();
            (store, Raw::Pg(raw), Home::Pg(Box::new(database)))
        }
    };
    Some(Db { raw, ledger: Ledger::new(store.clone(), policy), store, _home: home })
}

/// Runs each named `async fn(Backend)` as two tests, `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both_stores {
    ($test:meta; $($name:ident),+ $(,)?) => {$(
        mod $name {
            use super::Backend;
            #[$test]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
            #[$test]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    )+};
}

on_both_stores!(tokio::test;
    batches_commit_decide_and_project_what_the_events_say,
    the_schema_refuses_to_rewrite_history_or_post_unbalanced,
    the_invariant_checks_and_replay_notice_a_tampered_projection,
    a_redelivered_event_in_the_same_batch_is_answered_once,
    an_event_id_sent_again_by_another_device_is_refused_not_answered_with_the_first_outcome,
    offsets_and_outbox_land_with_their_batch_or_not_at_all,
    an_answers_outbox_message_is_the_stored_answer_written_once,
    two_writers_paying_one_merchant_lose_no_update,
    a_consumer_that_lost_its_partition_is_fenced_off,
    one_relay_holds_the_outbox_lease_until_it_lapses_and_published_messages_never_return,
    a_stages_leases_are_renewed_together_and_only_the_free_or_own_are_held,
    the_fleet_shows_each_devices_last_answer_and_its_refusals,
    an_orders_events_sent_again_by_their_own_device_are_counted_on_it,
    console_sessions_live_idle_out_show_a_token_once_and_are_bounded,
    the_last_visits_migration_0026_fills_in_are_what_replay_says,
);
on_both_stores!(tokio::test(flavor = "multi_thread", worker_threads = 4);
    concurrent_batches_of_one_payer_do_not_double_spend,
);

impl Db {
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

async fn batches_commit_decide_and_project_what_the_events_say(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };

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
    let retry_id = retry.event_id;
    let fund_p2_more = fund("p2", "100.00");
    // (Within the 45 s an unpaid order lives.)
    let pay_p2_again = pay("m1", "o2", "100.00", 4, "p2").at("2026-03-02T04:00:40Z");
    let other_amount = pay("m1", "o1", "101.00", 5, "p1").at("2026-03-02T04:00:41Z");
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
    let retried = db.store.order_retries(&merchant("m1"), &otn("o1")).await.unwrap();
    assert_eq!(retried.iter().map(|r| r.event_id).collect::<Vec<_>>(), [retry_id], "the retry, kept with its order");
    assert!(db.store.order_retries(&merchant("m1"), &otn("o2")).await.unwrap().is_empty());
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
    assert_eq!(o2.updated_at, at("2026-03-02T04:00:40Z"));
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
    // One order's whole life: its decided attempts, newest first.
    let of_order = HistoryFilter { out_trade_no: Some(otn("o1")), limit: 50, ..Default::default() };
    let o1: Vec<(OrderStatus, Option<String>)> =
        s.history(&merchant("m1"), &of_order).await.unwrap().into_iter().map(|h| (h.status, h.reason)).collect();
    assert_eq!(o1, vec![(OrderStatus::Declined, Some("OUT_TRADE_NO_USED".into())), (OrderStatus::Paid, None)]);
    let paid_only = HistoryFilter { status: Some(OrderStatus::Paid), limit: 50, ..Default::default() };
    assert_eq!(s.history(&merchant("m1"), &paid_only).await.unwrap().len(), 2);
    // By device: the rows of that device only, the same query with one more condition.
    let device = facepay_domain::DeviceId::parse(history[0].device_id.clone()).unwrap();
    let of_device = HistoryFilter { device_id: Some(device), limit: 50, ..Default::default() };
    let same_device = history.iter().filter(|h| h.device_id == history[0].device_id).count();
    assert_eq!(s.history(&merchant("m1"), &of_device).await.unwrap().len(), same_device);
    let nobody = HistoryFilter { device_id: Some(facepay_domain::DeviceId::parse("DEV-NONE").unwrap()), ..of_device };
    assert!(s.history(&merchant("m1"), &nobody).await.unwrap().is_empty());
    // The day at a glance counts the same rows by status, reason and member quick pay.
    let day = history[0].day;
    let mut glance: Vec<(OrderStatus, Option<String>, bool, i64, i64)> = s
        .day_glance(&merchant("m1"), None, day)
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.status, g.reason, g.member_quick_pay, g.attempts, g.amount_fen))
        .collect();
    glance.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    let paid_fen: Vec<i64> = history.iter().filter(|h| h.status == OrderStatus::Paid).map(|h| h.amount_fen).collect();
    let declined = |r: &str| history.iter().find(|h| h.reason.as_deref() == Some(r)).map(|h| h.amount_fen).unwrap();
    let reason = |r: &str| Some(r.to_string());
    assert_eq!(
        glance,
        vec![
            (OrderStatus::Declined, reason("IDENTITY_UNRESOLVED"), false, 1, declined("IDENTITY_UNRESOLVED")),
            (OrderStatus::Declined, reason("INSUFFICIENT_BALANCE"), false, 1, declined("INSUFFICIENT_BALANCE")),
            (OrderStatus::Declined, reason("OUT_TRADE_NO_USED"), false, 1, declined("OUT_TRADE_NO_USED")),
            (OrderStatus::Paid, None, false, 1, paid_fen[0]),
            (OrderStatus::Paid, None, true, 1, paid_fen[1]),
        ]
    );
    let elsewhere = facepay_domain::StoreId::parse("S-NONE").unwrap();
    assert!(s.day_glance(&merchant("m1"), Some(&elsewhere), day).await.unwrap().is_empty(), "a store's own only");
    assert!(s.day_glance(&merchant("m1"), None, day.succ_opt().unwrap()).await.unwrap().is_empty());

    let first_page = MembersPage { before_id: None, limit: 10 };
    let members = s.members(&merchant("m1"), first_page).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!((members[0].payer_id.as_str(), members[0].card_code.as_str()), ("p1", "c1"));
    assert_eq!(members[0].closed_at, None, "a wrong card code closes nothing");
    // The member's last visit is their accepted payment here (o1, quick pay), in platform time.
    let visit = history.iter().find(|h| h.out_trade_no.as_str() == "o1" && h.status == OrderStatus::Paid);
    assert_eq!(members[0].last_visit_at, visit.map(|h| h.occurred_at));
    let after_last = MembersPage { before_id: Some(members[0].id), ..first_page };
    assert!(s.members(&merchant("m1"), after_last).await.unwrap().is_empty(), "the page after the last is empty");
    assert_eq!(s.open_cards().await.unwrap(), vec![(merchant("m1"), payer("p1"))]);
    let rejected = s.rejected(10).await.unwrap();
    assert!(rejected.iter().any(|r| r.reason_code == "CARD_CODE_MISMATCH"), "{rejected:?}");

    let all = s.load_all().await.unwrap();
    assert_eq!(all.single_limit_fen(&merchant("m2")), 200_000);
    assert_eq!(all.balance_fen(&Account::Settlement(merchant("m1"))), 20_000);
    assert_eq!(all.balance_fen(&Account::Funding), -65_000);

    let raw = &db.raw;
    assert_eq!(raw.count("SELECT COUNT(*) FROM events WHERE type = 'account_funded'").await, 3);
    assert_eq!(raw.count("SELECT COUNT(*) FROM events WHERE type = 'payment_succeeded'").await, 2);
    assert_eq!(raw.count("SELECT COUNT(*) FROM ledger_transactions").await, 5);
    assert_eq!(raw.count("SELECT COUNT(*) FROM inbound").await, 13, "one answer per distinct inbound event");
    assert_eq!(db.ledger.replay().await.unwrap().events, 10);
}

async fn the_schema_refuses_to_rewrite_history_or_post_unbalanced(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    db.batch(&[fund("p1", "100.00"), pay("m1", "o1", "10.00", 1, "p1")]).await;
    db.assert_consistent().await;
    let raw = &db.raw;

    let refused = |sql: &'static str, why: &'static str| async move {
        let err = raw.exec(sql).await.expect_err(sql);
        assert!(err.contains(why), "{sql}: {err}");
    };
    refused("UPDATE events SET payload = '{}'", "append-only").await;
    refused("DELETE FROM events", "append-only").await;
    refused("UPDATE postings SET amount_fen = amount_fen * 2", "append-only").await;
    refused("DELETE FROM postings", "append-only").await;
    refused("DELETE FROM postings WHERE account = 'funding:external'", "append-only").await;
    refused("UPDATE ledger_transactions SET leg_count = 3", "append-only").await;
    refused("DELETE FROM ledger_transactions", "append-only").await;
    if backend == Backend::Postgres {
        refused("TRUNCATE events, ledger_transactions, postings", "append-only").await;
    }

    // An order paid twice: a second payment_succeeded event for (m1, o1).
    let paid_again = format!(
        "INSERT INTO events (event_id, cause_event_id, stream, type, schema_version, occurred_at, recorded_at, \
         payload) SELECT {}, cause_event_id, stream, type, schema_version, occurred_at, recorded_at, payload \
         FROM events WHERE type = 'payment_succeeded'",
        raw.lit(&Uuid::new_v4().to_string(), "uuid")
    );
    let err = raw.exec(&paid_again).await.unwrap_err();
    assert!(err.contains("events_order_paid_once"), "{err}");

    let txn = raw.lit(&Uuid::new_v4().to_string(), "uuid");
    let posting = |leg: i64, account: &str, fen: i64| {
        format!("INSERT INTO postings (txn_id, leg, account, amount_fen) VALUES ({txn}, {leg}, '{account}', {fen})")
    };
    let seal = format!(
        "INSERT INTO ledger_transactions (txn_id, event_id, leg_count, posted_at) SELECT {txn}, event_id, 2, {} \
         FROM events ORDER BY seq LIMIT 1",
        raw.lit("2026-03-02T04:00:00Z", "timestamptz")
    );
    // Both schemas refuse an unbalanced transaction when its row (the seal) is inserted.
    let unbalanced_at = 2;

    // Postings summing to -1 cannot be sealed by a transaction row.
    let err = raw.script(&[posting(0, "wallet:p1", 100), posting(1, "funding:external", -101), seal.clone()]).await;
    let (step, err) = err.unwrap_err();
    assert!(err.contains("sum to zero") && step == unbalanced_at, "step {step}: {err}");

    // Nor can postings be left without a transaction row: the commit fails.
    let (step, err) =
        raw.script(&[posting(0, "wallet:p1", 100), posting(1, "funding:external", -100)]).await.unwrap_err();
    assert!(err.to_lowercase().contains("foreign key") && step == 2, "step {step}: {err}");

    // Nor a transaction row without its postings.
    let (step, err) = raw.script(std::slice::from_ref(&seal)).await.unwrap_err();
    assert!(err.contains("sum to zero") && step == 0, "step {step}: {err}");

    // A balanced pair is sealed (the checks above refuse for their reason, not for any
    // insert), and a posting added after the seal is refused.
    let stmts =
        [posting(0, "wallet:p1", 100), posting(1, "funding:external", -100), seal.clone(), posting(2, "wallet:p1", 5)];
    let (step, err) = raw.script(&stmts).await.unwrap_err();
    assert!(err.contains("sealed") && step == 3, "step {step}: {err}");

    // Nor can a balanced pair be sealed by a transaction row that names no event of the log.
    let orphan_seal = format!(
        "INSERT INTO ledger_transactions (txn_id, event_id, leg_count, posted_at) VALUES ({txn}, {}, 2, {})",
        raw.lit(&Uuid::new_v4().to_string(), "uuid"),
        raw.lit("2026-03-02T04:00:00Z", "timestamptz")
    );
    let (_, err) = raw
        .script(&[posting(0, "wallet:p1", 100), posting(1, "funding:external", -100), orphan_seal])
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("foreign key") || err.contains("names no event"), "{err}");

    // A zero leg is refused by itself.
    let err = raw.exec(&posting(0, "wallet:p1", 0)).await.unwrap_err();
    assert!(err.to_lowercase().contains("check constraint"), "{err}");

    // None of it left a trace.
    assert_eq!(raw.count("SELECT COUNT(*) FROM postings").await, 4);
    db.assert_consistent().await;
}

async fn the_invariant_checks_and_replay_notice_a_tampered_projection(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    db.batch(&[fund("p1", "100.00"), pay("m1", "o1", "10.00", 1, "p1")]).await;
    db.assert_consistent().await;
    let raw = &db.raw;

    raw.exec("UPDATE balances SET balance_fen = balance_fen + 1 WHERE account = 'wallet:p1'").await.unwrap();
    assert!(!db.store.check_invariants().await.unwrap().balanced);
    let report = db.ledger.replay().await.unwrap();
    assert!(!report.matches);
    assert!(report.differences.iter().any(|d| d.contains("balances")), "{:?}", report.differences);

    raw.exec("UPDATE balances SET balance_fen = -1 WHERE account = 'wallet:p1'").await.unwrap();
    assert!(!db.store.check_invariants().await.unwrap().no_overdraft);

    raw.exec("UPDATE balances SET balance_fen = 9000 WHERE account = 'wallet:p1'").await.unwrap();
    db.assert_consistent().await;

    raw.exec("UPDATE orders SET status = 'DECLINED'").await.unwrap();
    let report = db.ledger.replay().await.unwrap();
    assert_eq!(report.differences[0], "projection orders differs from the log");
    // And names the order, with what each side says.
    assert!(report.differences[1].starts_with("order m1/"), "{:?}", report.differences);
    assert!(report.differences[1].contains("Paid") && report.differences[1].contains("Declined"));
}

async fn a_redelivered_event_in_the_same_batch_is_answered_once(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
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

async fn an_event_id_sent_again_by_another_device_is_refused_not_answered_with_the_first_outcome(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    let p = pay("m1", "o1", "10.00", 1, "p1");
    let id = p.event_id;
    db.batch(&[fund("p1", "100.00"), p.clone()]).await;
    // Another merchant's device sends an event under the same event id.
    let mut theirs = pay("m2", "o9", "1.00", 2, "p1");
    (theirs.event_id, theirs.device) = (p.event_id, Some(device_of("m2", 1)));
    let bodies = db.batch(&[theirs]).await;
    assert!(matches!(&bodies[0], OutcomeBody::Refused { code, .. } if code == "EVENT_ID_IN_USE"), "{bodies:?}");
    // The device that sent it is still answered from its stored outcome.
    let bodies = db.batch(&[p]).await;
    assert!(result(&bodies[0]).replayed);
    assert_eq!(result(&bodies[0]).out_trade_no.as_str(), "o1");
    let stored = db.store.answered(&[id]).await.unwrap();
    assert!(stored[&id].answered(Some(&device_of("m1", 1))) && !stored[&id].answered(Some(&device_of("m2", 1))));
    assert_eq!(db.store.wallet(&payer("p1")).await.unwrap(), Some((9_000, false)));
    db.assert_consistent().await;
}

/// Two ledgers over one store, as two processes of the scale-out profile (each with its own
/// payers and its own cache): their payments to one merchant all reach its settlement
/// account, because the store adds each batch's postings to the balances rather than
/// writing what each writer last saw.
async fn two_writers_paying_one_merchant_lose_no_update(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    let (a, b) = (&db.ledger, Ledger::new(db.store.clone(), Policy::default()));
    a.handle_batch(&[fund("p1", "500.00")]).await.unwrap();
    b.handle_batch(&[fund("p2", "500.00")]).await.unwrap();
    for i in 0..3u64 {
        let paid = a.handle_batch(&[pay("m1", &format!("a{i}"), "10.00", 2 * i, "p1")]).await.unwrap();
        assert_eq!(result(&paid[0].body).status, OrderStatus::Paid);
        let paid = b.handle_batch(&[pay("m1", &format!("b{i}"), "10.00", 2 * i + 1, "p2")]).await.unwrap();
        assert_eq!(result(&paid[0].body).status, OrderStatus::Paid);
    }
    let live = db.store.load_all().await.unwrap();
    assert_eq!(live.balance_fen(&Account::Settlement(merchant("m1"))), 6_000);
    assert_eq!(live.balance_fen(&Account::Funding), -100_000);
    db.assert_consistent().await;
}

/// Several processes starting at once on one PostgreSQL database: sqlx's advisory lock lets
/// one migrate while the others wait, and all of them open.
#[tokio::test]
async fn postgres_stores_opened_together_migrate_once() {
    let Some((_database, options)) = fresh_pg_database().await else { return };
    let opens = (0..4).map(|_| PgStore::open_with(options.clone()));
    for store in futures_join_all(opens).await {
        store.unwrap();
    }
    let raw = PgPoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
    let applied: i64 = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&raw).await.unwrap().get(0);
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/postgres")).unwrap().count();
    assert_eq!(applied, files as i64, "each migration applied once");
    raw.close().await;
}

/// Given a fresh database (empty tables: the statistics a new deployment starts with), when
/// PostgreSQL settles on the plan it keeps for each of the ledger's lookups by key (sqlx
/// prepares a statement once per connection; after a few calls PostgreSQL may reuse a generic
/// plan), then every lookup still descends its index per key: none scans its table. (The
/// batch's answered-already lookup, `event_id = ANY($1)`, was kept as a scan of `inbound` made
/// while it was nearly empty, and grew to 11–15 ms a batch as the table filled.)
#[tokio::test]
async fn the_ledgers_lookups_by_key_never_scan_their_table() {
    let Some((_database, options)) = fresh_pg_database().await else { return };
    let store = PgStore::open_with(options).await.unwrap();
    let plans = store.explain_lookups().await.unwrap();
    assert_eq!(plans.len(), 12, "every lookup of a batch");
    for (table, plan) in plans {
        assert!(plan.iter().any(|l| l.contains("Index")), "{table}: {plan:#?}");
        assert!(!plan.iter().any(|l| l.contains("Seq Scan")), "{table} scanned: {plan:#?}");
    }
}

/// Two ledger processes (two stores, each with its own pool, as two `facepay serve` have)
/// decide declines for one merchant at once, and both chain them on the merchant's audit
/// stream. A collision of their appends is a write conflict, decided again: every payment is
/// answered declined (none `STORE_REFUSED`), every order is recorded, the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ledger_processes_appending_to_one_stream_refuse_nothing() {
    const ROUNDS: usize = 60;
    const BATCH: usize = 4;
    let Some((_database, options)) = fresh_pg_database().await else { return };
    let writer = |w: usize| {
        let options = options.clone();
        async move {
            let ledger = ledger_process(options).await;
            let mut bodies = Vec::new();
            for r in 0..ROUNDS {
                let face_n = |i: usize| (w * 100_000 + r * 10 + i) as u64;
                let batch: Vec<Command> =
                    (0..BATCH).map(|i| pay_unresolved("m1", &format!("w{w}-{r}-{i}"), "1.00", face_n(i))).collect();
                let outcomes = ledger.handle_batch(&batch).await.expect("a conflict is retried, not returned");
                bodies.extend(outcomes.into_iter().map(|o| o.body));
            }
            bodies
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(writer(0)), tokio::spawn(writer(1)));
    let bodies: Vec<OutcomeBody> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    assert_eq!(bodies.len(), 2 * ROUNDS * BATCH);
    for body in &bodies {
        assert_eq!(result(body).reason, Some(DeclineReason::IdentityUnresolved), "{body:?}");
    }
    let store: Arc<dyn LedgerStore> = Arc::new(PgStore::open_with(options).await.unwrap());
    for (w, r, i) in (0..2).flat_map(|w| (0..ROUNDS).flat_map(move |r| (0..BATCH).map(move |i| (w, r, i)))) {
        let order = store.order(&merchant("m1"), &otn(&format!("w{w}-{r}-{i}"))).await.unwrap();
        assert_eq!(order.map(|o| o.status), Some(OrderStatus::Declined), "order w{w}-{r}-{i} recorded");
    }
    let verified = Ledger::new(store, Policy::default()).verify().await.unwrap();
    assert!(verified.ok, "{verified:?}");
}

/// An at-least-once matcher can route one event twice, to two partitions (its identity known
/// to one process and not yet to another): two ledger processes then decide the same events
/// at once. Each event is decided once; the slower process meets the first one's answer (a
/// write conflict, decided again) and answers from it: no refusal, each payment posted once,
/// and both processes answer each event alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ledger_processes_deciding_the_same_events_decide_each_once() {
    const ROUNDS: usize = 10; // 30 payments: under the payer's daily count cap
    let Some((_database, options)) = fresh_pg_database().await else { return };
    let first: Arc<dyn LedgerStore> = Arc::new(PgStore::open_with(options.clone()).await.unwrap());
    Ledger::new(first.clone(), Policy::default()).handle_batch(&[fund("p1", "1000.00")]).await.unwrap();
    let batches: Vec<Vec<Command>> = (0..ROUNDS)
        .map(|r| (0..3).map(|i| pay("m1", &format!("o-{r}-{i}"), "1.00", (r * 10 + i) as u64, "p1")).collect())
        .collect();
    let writer = |batches: Vec<Vec<Command>>| {
        let options = options.clone();
        async move {
            let ledger = ledger_process(options).await;
            let mut bodies = Vec::new();
            for batch in &batches {
                let outcomes = ledger.handle_batch(batch).await.expect("a race is decided again, not refused");
                bodies.extend(outcomes.into_iter().map(|o| o.body));
            }
            bodies
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(writer(batches.clone())), tokio::spawn(writer(batches)));
    let (a, b) = (a.unwrap(), b.unwrap());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(result(x).status, OrderStatus::Paid, "{x:?}");
        assert_eq!((result(x).status, &result(x).payer_id), (result(y).status, &result(y).payer_id), "{x:?} {y:?}");
    }
    let (balance_fen, _) = first.wallet(&payer("p1")).await.unwrap().unwrap();
    assert_eq!(balance_fen, 100_000 - 100 * (ROUNDS as i64) * 3, "each payment posted once");
    let verified = Ledger::new(first, Policy::default()).verify().await.unwrap();
    assert!(verified.ok, "{verified:?}");
}

/// Two ledger processes retry one declined order at once (a payer's partition and an order's
/// both reach it, or the sweeper does): each commit locks the orders it decided on and is a
/// write conflict if one changed since it was read, so the projection is the last decision
/// in the log's order, never an older decision committed last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ledger_processes_deciding_one_order_leave_the_projection_as_the_log_says() {
    const RETRIES: usize = 30;
    let Some((_database, options)) = fresh_pg_database().await else { return };
    let writer = |w: usize| {
        let options = options.clone();
        async move {
            let ledger = ledger_process(options).await;
            for r in 0..RETRIES {
                // The payer has no money: every attempt is declined, each one a new decision.
                let when = format!("2026-03-02T04:{:02}:{:02}Z", r, w * 10 + 1);
                let retry = pay("m1", "o1", "5.00", (w * 1_000 + r) as u64, "p1").at(&when);
                ledger.handle_batch(&[retry]).await.expect("a race is decided again");
            }
        }
    };
    let (a, b) = tokio::join!(tokio::spawn(writer(0)), tokio::spawn(writer(1)));
    a.unwrap();
    b.unwrap();
    let store: Arc<dyn LedgerStore> = Arc::new(PgStore::open_with(options).await.unwrap());
    let report = Ledger::new(store, Policy::default()).replay().await.unwrap();
    assert!(report.matches, "{:?}", report.differences);
}

/// A ledger as a process of its own has it: its own pool on `options`' database, no cache.
async fn ledger_process(options: PgConnectOptions) -> Ledger {
    let store: Arc<dyn LedgerStore> = Arc::new(PgStore::open_with(options).await.unwrap());
    Ledger::new(store, Policy::default()).uncached()
}

/// Runs futures concurrently on tasks of this runtime, in order of their results.
async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for t in tasks {
        outputs.push(t.await.unwrap());
    }
    outputs
}

// ---- the transport's state: consumer offsets and the outbox -------------------------------

/// The events a funding of `payer` appends, as the service would stamp them.
fn funding_events(payer: &str) -> Vec<NewEvent> {
    let cmd = fund(payer, "100.00");
    let events = decide(&LedgerState::default(), &cmd, &Policy::default()).unwrap();
    let stamp = |(i, event)| NewEvent {
        event_id: Uuid::new_v5(&cmd.event_id, format!("event:{i}").as_bytes()),
        cause_event_id: cmd.event_id,
        occurred_at: cmd.accepted_at,
        event,
    };
    events.into_iter().enumerate().map(stamp).collect()
}

fn offset(partition: i32, next_offset: i64) -> ConsumerOffset {
    fenced_offset(partition, None, next_offset)
}

fn fenced_offset(partition: i32, expected: Option<i64>, next_offset: i64) -> ConsumerOffset {
    ConsumerOffset {
        group_id: "ledger".into(),
        topic: "facepay.ledger-commands".into(),
        partition,
        expected,
        next_offset,
    }
}

async fn one_relay_holds_the_outbox_lease_until_it_lapses_and_published_messages_never_return(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    let s = &db.store;
    let outbox = (0..5).map(|i| message(&format!("k{i}"))).collect();
    s.commit(&CommitBatch { outbox, ..Default::default() }).await.unwrap();
    let keys = |pending: Vec<(i64, PendingMessage)>| pending.into_iter().map(|(_, m)| m.key).collect::<Vec<_>>();

    // One holder at a time; the holder renews; another waits.
    assert!(s.lease("relay", "a", 60_000).await.unwrap());
    assert!(!s.lease("relay", "b", 60_000).await.unwrap(), "a holds it");
    assert!(s.lease("relay", "a", 60_000).await.unwrap(), "a renews");
    assert!(s.lease("other-duty", "b", 60_000).await.unwrap(), "leases are per name");

    // a publishes the oldest three and dies; its lease lapses and b takes over the rest.
    let pending = s.outbox_pending(3).await.unwrap();
    assert_eq!(keys(pending.clone()), ["k0", "k1", "k2"]);
    s.outbox_published(&pending.iter().map(|(id, _)| *id).collect::<Vec<_>>()).await.unwrap();
    db.raw.exec("UPDATE leases SET expires_ms = 0 WHERE name = 'relay'").await.unwrap();
    assert!(s.lease("relay", "b", 60_000).await.unwrap(), "a's lease lapsed");
    assert!(!s.lease("relay", "a", 60_000).await.unwrap(), "a, back, waits for b's");
    assert_eq!(keys(s.outbox_pending(10).await.unwrap()), ["k3", "k4"]);
}

async fn a_stages_leases_are_renewed_together_and_only_the_free_or_own_are_held(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    let s = &db.store;
    let names = |ns: &[&str]| ns.iter().map(|n| n.to_string()).collect::<Vec<_>>();

    // Given b holds part 1, and part 2's lease (a's) lapsed.
    assert!(s.lease("part:1", "b", 60_000).await.unwrap());
    assert!(s.lease("part:2", "a", 60_000).await.unwrap());
    db.raw.exec("UPDATE leases SET expires_ms = 0 WHERE name = 'part:2'").await.unwrap();
    // When c takes its membership and parts 0-3 at once (named out of order, one twice),
    let held = s.leases(&names(&["part:3", "member:c", "part:0", "part:1", "part:2", "part:0"]), "c", 60_000).await;
    // then it holds the free and the lapsed, in name order, not b's;
    assert_eq!(held.unwrap(), names(&["member:c", "part:0", "part:2", "part:3"]));
    // and renewing them all again keeps exactly those, b's still b's.
    let again = s.leases(&names(&["member:c", "part:0", "part:1", "part:2", "part:3"]), "c", 60_000).await.unwrap();
    assert_eq!(again, names(&["member:c", "part:0", "part:2", "part:3"]));
    let live = s.leases_live("part:").await.unwrap();
    assert_eq!(live.iter().filter(|(_, h)| h == "b").map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["part:1"]);
    assert!(s.leases(&[], "c", 60_000).await.unwrap().is_empty());

    // The matcher's position: every partition moved in one statement, never backwards.
    let stored = || async { s.offsets("match", "facepay.device-events").await.unwrap() };
    s.offsets_advance("match", "facepay.device-events", &[(0, 10), (1, 5), (0, 12)]).await.unwrap();
    assert_eq!(stored().await, [(0, 12), (1, 5)].into_iter().collect());
    s.offsets_advance("match", "facepay.device-events", &[(0, 11), (1, 7), (2, 1)]).await.unwrap();
    assert_eq!(stored().await, [(0, 12), (1, 7), (2, 1)].into_iter().collect());
}

async fn a_consumer_that_lost_its_partition_is_fenced_off(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    let s = &db.store;
    let stored = || async { s.offsets("ledger", "facepay.ledger-commands").await.unwrap() };
    let batch = |events, offsets| CommitBatch { events, offsets, ..Default::default() };
    s.commit(&batch(funding_events("p1"), vec![fenced_offset(0, None, 5)])).await.unwrap();

    // A consumer that read "nothing stored" before the first commit, and one that read a
    // stale offset: both refused whole; nothing of their batches lands.
    for expected in [None, Some(4)] {
        let err = s.commit(&batch(funding_events("p2"), vec![fenced_offset(0, expected, 9)])).await.unwrap_err();
        assert!(matches!(err, facepay_ledger::StoreError::Fenced(_)), "{err}");
    }
    assert_eq!(stored().await, HashMap::from([(0, 5)]));
    assert_eq!(s.events_after(0, 100).await.unwrap().len(), funding_events("p1").len(), "no event of a fenced batch");
    s.commit(&batch(funding_events("p2"), vec![fenced_offset(0, Some(5), 9)])).await.unwrap();
    assert_eq!(stored().await, HashMap::from([(0, 9)]));

    // A batch across two partitions, one of which another writer moved: refused whole, and
    // the other partition (stored for the first time) is not stored either.
    let both = vec![fenced_offset(1, None, 3), fenced_offset(0, Some(7), 12)];
    let err = s.commit(&batch(funding_events("p3"), both)).await.unwrap_err();
    assert!(matches!(err, facepay_ledger::StoreError::Fenced(ref why) if why.contains("[0]")), "{err}");
    assert_eq!(stored().await, HashMap::from([(0, 9)]));

    // Two ledgers (two processes in a rebalance) decide the same payer's partition from the
    // same offset: one commits, the other is fenced, and the wallet is not overdrawn.
    let a = Ledger::new(s.clone(), Policy::default()).uncached();
    let b = Ledger::new(s.clone(), Policy::default()).uncached();
    let at = |next| facepay_ledger::Delivery { offsets: vec![fenced_offset(0, Some(9), next)], ..Default::default() };
    a.handle_delivery(&[pay("m1", "o-a", "80.00", 901, "p1")], &at(10)).await.unwrap();
    let err = b.handle_delivery(&[pay("m1", "o-b", "80.00", 902, "p1")], &at(10)).await.unwrap_err();
    assert!(matches!(err, facepay_ledger::StoreError::Fenced(_)), "{err}");
    assert_eq!(s.wallet(&payer("p1")).await.unwrap().unwrap().0, 2_000);
    db.assert_consistent().await;
}

fn message(key: &str) -> OutboxMessage {
    let payload = OutboxPayload::Bytes(key.as_bytes().to_vec());
    OutboxMessage { topic: "facepay.ledger-outcomes".into(), key: key.into(), payload }
}

/// [`message`] as the relay reads it back.
fn pending(key: &str) -> PendingMessage {
    PendingMessage { topic: "facepay.ledger-outcomes".into(), key: key.into(), payload: key.as_bytes().to_vec() }
}

async fn an_answers_outbox_message_is_the_stored_answer_written_once(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    let s = &db.store;
    // Given an answer stored with the commit that leaves its message in the outbox,
    let event_id = Uuid::new_v4();
    let body = serde_json::to_value(OutcomeBody::Applied { kind: "face_captured".into() }).unwrap();
    let answer = StoredAnswer {
        outcome_json: body.to_string(),
        device: Some("1900000101/S01/DEV-0042".into()),
        processed_at: "2026-03-02T01:15:08.123456Z".parse().unwrap(),
    };
    let inbound = vec![InboundRecord { event_id, kind: "capture".into(), answer: answer.clone(), retry_of: None }];
    let outbox = vec![
        OutboxMessage {
            topic: "facepay.ledger-outcomes".into(),
            key: "DEV-0042".into(),
            payload: OutboxPayload::Answer(event_id),
        },
        message("d1"),
    ];
    s.commit(&CommitBatch { inbound, outbox, ..Default::default() }).await.unwrap();

    // when the relay reads the outbox, the answer is published as a device's query reads it,
    let read = s.outbox_pending(10).await.unwrap();
    let published = serde_json::to_vec(&answer.outcome(event_id).unwrap()).unwrap();
    assert_eq!(read.iter().map(|(_, m)| m.payload.clone()).collect::<Vec<_>>(), [published, b"d1".to_vec()]);
    assert_eq!(read[0].1.key, "DEV-0042");
    let outcome: serde_json::Value = serde_json::from_slice(&read[0].1.payload).unwrap();
    assert_eq!(outcome["in_reply_to"], event_id.to_string());
    assert_eq!(outcome["device"]["device_id"], "DEV-0042");
    assert_eq!(
        (outcome["type"].as_str(), outcome["payload"]["kind"].as_str()),
        (Some("applied"), Some("face_captured"))
    );
    assert_eq!(outcome["decided_at"], "2026-03-02T01:15:08.123456Z", "{outcome}");
    // and its JSON is stored once: in the answers, not again in the outbox.
    assert_eq!(db.raw.count("SELECT COUNT(*) FROM outbox WHERE payload IS NULL").await, 1);
    // A message is bytes or a stored answer, never both or neither.
    let both = "INSERT INTO outbox (topic, key, payload, answer_of, created_at) \
                VALUES ('t', 'k', NULL, NULL, '2026-03-02T01:15:08Z')";
    assert!(db.raw.exec(both).await.is_err(), "neither bytes nor an answer");
}

async fn offsets_and_outbox_land_with_their_batch_or_not_at_all(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    let s = &db.store;
    let offsets = || s.offsets("ledger", "facepay.ledger-commands");
    let pending_keys = |limit| async move {
        let pending = s.outbox_pending(limit).await.unwrap();
        assert!(pending.windows(2).all(|w| w[0].0 < w[1].0), "oldest first");
        pending.into_iter().map(|(_, m)| m.key).collect::<Vec<_>>()
    };

    // A batch with its event, its offsets (partition 0 twice: the furthest counts) and two
    // messages.
    let first = funding_events("p1");
    let outbox = vec![message("d1"), message("d2")];
    let batch = CommitBatch {
        events: first.clone(),
        offsets: vec![offset(0, 10), offset(1, 5), offset(0, 12)],
        outbox,
        ..Default::default()
    };
    s.commit(&batch).await.unwrap();
    assert_eq!(offsets().await.unwrap(), HashMap::from([(0, 12), (1, 5)]));
    assert!(s.offsets("other-group", "facepay.ledger-commands").await.unwrap().is_empty());
    assert!(s.offsets("ledger", "facepay.device-events").await.unwrap().is_empty());

    // A batch the schema refuses (its event is in the log already) moves no offset and
    // leaves no message.
    let refused = CommitBatch {
        events: first.clone(),
        offsets: vec![offset(0, 20)],
        outbox: vec![message("d3")],
        ..Default::default()
    };
    let err = s.commit(&refused).await.unwrap_err().to_string();
    assert!(
        err.contains("UNIQUE constraint failed: events.event_id") || err.contains("events_event_id_unique"),
        "{err}"
    );
    assert_eq!(offsets().await.unwrap(), HashMap::from([(0, 12), (1, 5)]));
    assert_eq!(pending_keys(10).await, ["d1", "d2"]);

    // Nor do events land without their offsets: an offset the schema refuses refuses the
    // batch. Fixed, the same batch lands whole.
    let second = funding_events("p2");
    let mut batch = CommitBatch {
        events: second.clone(),
        offsets: vec![offset(2, -1)],
        outbox: vec![message("d4")],
        ..Default::default()
    };
    let err = s.commit(&batch).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("check constraint"), "{err}");
    assert_eq!(s.events_after(0, 100).await.unwrap().len(), first.len());
    batch.offsets = vec![offset(2, 7)];
    s.commit(&batch).await.unwrap();
    assert_eq!(offsets().await.unwrap(), HashMap::from([(0, 12), (1, 5), (2, 7)]));
    assert_eq!(s.events_after(0, 100).await.unwrap().len(), first.len() + second.len());

    // The outbox: unpublished messages oldest first; marking one published deletes it, and
    // marking it again changes nothing.
    assert_eq!(pending_keys(10).await, ["d1", "d2", "d4"]);
    let oldest = s.outbox_pending(1).await.unwrap();
    assert_eq!(oldest.len(), 1);
    assert_eq!(oldest[0].1, pending("d1"));
    s.outbox_published(&[oldest[0].0]).await.unwrap();
    s.outbox_published(&[oldest[0].0]).await.unwrap();
    assert_eq!(pending_keys(10).await, ["d2", "d4"]);
    assert_eq!(pending_keys(1).await, ["d2"]);
    let ids: Vec<i64> = s.outbox_pending(10).await.unwrap().into_iter().map(|(id, _)| id).collect();
    s.outbox_published(&ids).await.unwrap();
    s.outbox_published(&[]).await.unwrap();
    assert!(s.outbox_pending(10).await.unwrap().is_empty());
    assert_eq!(db.raw.count("SELECT COUNT(*) FROM outbox").await, 0, "published messages leave the outbox");
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
        apply(state, e, cmd.accepted_at);
    }
    let body = match (&cmd.kind, facepay_ledger::lifecycle::refusal_after(cmd, &events)) {
        (_, Some(e)) => {
            OutcomeBody::Refused { kind: cmd.kind.name().into(), code: e.code().into(), message: e.to_string() }
        }
        (kind, None) => body_of(state, cmd, kind, &events),
    };
    let news = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| NewEvent {
            event_id: Uuid::new_v5(&cmd.event_id, format!("event:{i}").as_bytes()),
            cause_event_id: cmd.event_id,
            occurred_at: cmd.accepted_at,
            event,
        })
        .collect();
    (body, news)
}

fn body_of(state: &LedgerState, cmd: &Command, kind: &CommandKind, events: &[LedgerEvent]) -> OutcomeBody {
    match kind {
        CommandKind::Pay { .. } => OutcomeBody::PaymentResult(payment_result(state, cmd, events).unwrap()),
        CommandKind::Query { .. } => OutcomeBody::QueryResult(payment_result(state, cmd, events)),
        kind => OutcomeBody::Applied { kind: kind.name().into() },
    }
}

fn nonzero(balances: &BTreeMap<Account, i64>) -> BTreeMap<Account, i64> {
    balances.iter().filter(|(_, v)| **v != 0).map(|(k, v)| (k.clone(), *v)).collect()
}

async fn run_through_store(
    backend: Backend,
    policy: Policy,
    ops: Vec<Op>,
    cuts: Vec<usize>,
) -> Result<(), TestCaseError> {
    let Some(db) = open(backend, policy).await else { return Ok(()) };
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

fn policies() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::default()), Just(Policy { daily_amount_cap_fen: 300_000, daily_count_cap: 2 })]
}

fn on(backend: Backend, policy: Policy, ops: Vec<Op>, cuts: Vec<usize>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(run_through_store(backend, policy, ops, cuts))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn the_sqlite_store_decides_like_the_core_in_any_batching(
        policy in policies(),
        ops in prop::collection::vec(op_strategy(), 20..120),
        cuts in prop::collection::vec(1..16usize, 1..8),
    ) {
        on(Backend::Sqlite, policy, ops, cuts)?;
    }

    #[test]
    fn the_postgres_store_decides_like_the_core_in_any_batching(
        policy in policies(),
        ops in prop::collection::vec(op_strategy(), 20..120),
        cuts in prop::collection::vec(1..16usize, 1..8),
    ) {
        on(Backend::Postgres, policy, ops, cuts)?;
    }
}

/// Same-payer payments from devices of different merchants, in batches handled at once by
/// clones of one ledger: the balance is spent once, and the books stay consistent.
async fn concurrent_batches_of_one_payer_do_not_double_spend(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
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

// ---- the rest of a payment's life ---------------------------------------------------------

on_both_stores!(tokio::test;
    refunds_reversals_fees_and_holds_are_projected_with_their_events,
    tampering_with_a_stored_event_breaks_the_audit_chain,
);
on_both_stores!(tokio::test(flavor = "multi_thread", worker_threads = 4);
    complete_and_cancel_of_one_hold_race_to_exactly_one_outcome,
);
on_both_stores!(tokio::test;
    the_clock_revokes_unpaid_orders_and_expires_open_holds_once,
    a_cached_ledger_notices_another_writer_and_does_not_spend_twice,
    a_payment_a_month_after_a_hold_releases_it_without_the_clock,
);
on_both_stores!(tokio::test(flavor = "multi_thread", worker_threads = 4);
    batched_order_lookups_answer_each_caller_its_own_order,
);

fn life(l: facepay_ledger::Lifecycle) -> Command {
    command(CommandKind::Lifecycle(l))
}

fn ono(s: &str) -> facepay_domain::OutOrderNo {
    facepay_domain::OutOrderNo::parse(s).unwrap()
}

fn refund_cmd(m: &str, o: &str, no: &str, amount: &str) -> Command {
    life(facepay_ledger::Lifecycle::Refund {
        merchant_id: merchant(m),
        out_trade_no: otn(o),
        out_refund_no: facepay_domain::OutRefundNo::parse(no).unwrap(),
        amount: cny(amount),
    })
}

fn hold_cmd(m: &str, no: &str, p: &str, amount: &str) -> Command {
    life(facepay_ledger::Lifecycle::HoldCreate {
        merchant_id: merchant(m),
        out_order_no: ono(no),
        face_code: fresh_face(),
        identity: resolved(p),
        amount: cny(amount),
    })
}

fn complete_cmd(m: &str, no: &str, total: &str) -> Command {
    life(facepay_ledger::Lifecycle::HoldComplete { merchant_id: merchant(m), out_order_no: ono(no), total: cny(total) })
}

fn cancel_cmd(m: &str, no: &str) -> Command {
    life(facepay_ledger::Lifecycle::HoldCancel { merchant_id: merchant(m), out_order_no: ono(no) })
}

fn refused_code(body: &OutcomeBody) -> Option<&str> {
    match body {
        OutcomeBody::Refused { code, .. } => Some(code),
        _ => None,
    }
}

async fn refunds_reversals_fees_and_holds_are_projected_with_their_events(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    let rate = life(facepay_ledger::Lifecycle::SetFeeRate { merchant_id: merchant("m1"), fee_rate_ppm: 5_400 });
    db.batch(&[fund("p1", "500.00"), rate, pay("m1", "o1", "60.00", 1, "p1"), pay("m1", "o2", "10.00", 2, "p1")]).await;
    db.batch(&[authorise_pay_score("m1", "p1")]).await;
    let bodies = db
        .batch(&[
            refund_cmd("m1", "o1", "r1", "20.00"),
            refund_cmd("m1", "o1", "r1", "20.00"),
            refund_cmd("m1", "o1", "r2", "40.01"),
            life(facepay_ledger::Lifecycle::Reverse { merchant_id: merchant("m1"), out_trade_no: otn("o2") }),
            hold_cmd("m1", "h1", "p1", "200.00"),
            complete_cmd("m1", "h1", "50.00"),
            complete_cmd("m1", "h1", "50.00"),
            hold_cmd("m1", "h2", "p1", "100.00"),
            cancel_cmd("m1", "h2"),
        ])
        .await;
    let codes: Vec<Option<&str>> = bodies.iter().map(refused_code).collect();
    assert_eq!(
        codes,
        vec![None, None, Some("REFUND_EXCEEDS_PAID"), None, None, None, Some("HOLD_COMPLETED"), None, None]
    );
    let raw = &db.raw;
    assert_eq!(raw.count("SELECT COUNT(*) FROM refunds").await, 1);
    assert_eq!(raw.count("SELECT fee_refund_fen FROM refunds").await, 11);
    assert_eq!(raw.count("SELECT refunded_fen FROM orders WHERE out_trade_no = 'o1'").await, 2_000);
    assert_eq!(raw.count("SELECT COUNT(*) FROM orders WHERE out_trade_no = 'o2' AND status = 'REVERSED'").await, 1);
    assert_eq!(raw.count("SELECT COUNT(*) FROM holds WHERE status = 'DONE' AND total_fen = 5000").await, 1);
    assert_eq!(raw.count("SELECT COUNT(*) FROM holds WHERE status = 'REVOKED'").await, 1);
    // The day's settlement: 60 + 10 + 50 gross; 20 + 10 back; fees 32 + 5 + 27 less 11 + 5.
    let row = "SELECT gross_fen * 1000000000 + refunds_fen * 10000 + fees_fen FROM settlement";
    assert_eq!(raw.count(row).await, 12_000 * 1_000_000_000 + 3_000 * 10_000 + (32 + 5 + 27 - 11 - 5));
    assert_eq!(
        raw.count("SELECT COUNT(*) FROM settlement WHERE net_fen = gross_fen - refunds_fen - fees_fen").await,
        1
    );
    let live = db.store.load_all().await.unwrap();
    assert_eq!(live.balance_fen(&Account::Hold(payer("p1"))), 0);
    assert_eq!(live.balance_fen(&Account::PlatformFees), 32 + 5 + 27 - 11 - 5);
    assert_eq!(live.balance_fen(&Account::Wallet(payer("p1"))), 50_000 - 6_000 - 1_000 + 2_000 + 1_000 - 5_000);
    // Refusals are kept with their codes.
    let kept: Vec<String> = db.store.rejected(50).await.unwrap().into_iter().map(|r| r.reason_code).collect();
    assert!(kept.contains(&"REFUND_EXCEEDS_PAID".to_string()) && kept.contains(&"HOLD_COMPLETED".to_string()));
    db.assert_consistent().await;
    assert!(db.ledger.verify().await.unwrap().ok);
}

/// Complete and cancel of one hold, fired at once through two ledgers that share nothing but
/// the database (as two processes would), many times: each hold ends exactly once, the
/// loser is refused, and the money adds up.
async fn complete_and_cancel_of_one_hold_race_to_exactly_one_outcome(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    const HOLDS: usize = 24;
    db.batch(&[fund("p1", "1000.00"), authorise_pay_score("m1", "p1")]).await;
    let creates: Vec<Command> = (0..HOLDS).map(|i| hold_cmd("m1", &format!("h{i}"), "p1", "10.00")).collect();
    db.batch(&creates).await;
    let (a, b) = (
        Ledger::new(db.store.clone(), Policy::default()).uncached(),
        Ledger::new(db.store.clone(), Policy::default()).uncached(),
    );
    let mut completed = 0;
    for i in 0..HOLDS {
        let no = format!("h{i}");
        let (a, b) = (a.clone(), b.clone());
        let (done, cancel) = (complete_cmd("m1", &no, "4.00"), cancel_cmd("m1", &no));
        let done = tokio::spawn(async move { a.handle_batch(&[done]).await.unwrap() });
        let cancelled = tokio::spawn(async move { b.handle_batch(&[cancel]).await.unwrap() });
        let bodies = [done.await.unwrap().remove(0).body, cancelled.await.unwrap().remove(0).body];
        let refused: Vec<_> = bodies.iter().filter_map(refused_code).collect();
        assert_eq!(refused.len(), 1, "exactly one of complete and cancel wins: {bodies:?}");
        assert!(["HOLD_COMPLETED", "HOLD_CANCELLED", "STORE_REFUSED"].contains(&refused[0]), "{refused:?}");
        completed += usize::from(refused_code(&bodies[0]).is_none());
    }
    let raw = &db.raw;
    let ends = "SELECT COUNT(*) FROM events WHERE type IN ('hold_completed', 'hold_cancelled', 'hold_expired')";
    assert_eq!(raw.count(ends).await, HOLDS as i64);
    assert_eq!(raw.count("SELECT COUNT(*) FROM holds WHERE status = 'CREATED'").await, 0);
    let live = db.store.load_all().await.unwrap();
    assert_eq!(live.balance_fen(&Account::Hold(payer("p1"))), 0);
    assert_eq!(live.balance_fen(&Account::Wallet(payer("p1"))), 100_000 - 400 * completed as i64);
    db.assert_consistent().await;
}

async fn tampering_with_a_stored_event_breaks_the_audit_chain(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    db.batch(&[fund("p1", "100.00"), fund("p2", "100.00")]).await;
    db.batch(&[pay("m1", "o1", "10.00", 1, "p1"), fund("p1", "5.00")]).await;
    let report = db.ledger.verify().await.unwrap();
    assert!(report.ok && report.first_break.is_none());
    assert_eq!(report.events, 4);
    let raw = &db.raw;
    // Someone with the power to bypass the append-only triggers edits p1's first top-up.
    let (bypass, edit, restore) = match raw {
        Raw::Sqlite(_) => (
            "DROP TRIGGER events_no_update",
            "UPDATE events SET payload = json_set(payload, '$.amount', '1000.00') WHERE seq = 1",
            "SELECT 1",
        ),
        Raw::Pg(_) => (
            "ALTER TABLE events DISABLE TRIGGER events_append_only",
            "UPDATE events SET payload = jsonb_set(payload, '{amount}', '\"1000.00\"') WHERE seq = 1",
            "ALTER TABLE events ENABLE TRIGGER events_append_only",
        ),
    };
    raw.exec(bypass).await.unwrap();
    assert_eq!(raw.exec(edit).await.unwrap(), 1);
    raw.exec(restore).await.unwrap();
    let report = db.ledger.verify().await.unwrap();
    let b = report.first_break.expect("the edit is found");
    assert_eq!((b.seq, b.stream.as_str(), b.reason, report.ok), (1, "payer:p1", "hash_mismatch", false));
}

/// The database going away is no fault of the command: the batch fails with an error the
/// caller retries (see `StoreError::is_refusal`), nothing is refused or kept as rejected, and
/// once the database is back the same command is decided as if nothing had happened. (A lost
/// connection used to be answered as `STORE_REFUSED`, and a delivery that carried no command,
/// answers only, panicked: found by the PostgreSQL-restart test.)
#[tokio::test]
async fn a_database_outage_is_retried_not_refused() {
    let Some(db) = open(Backend::Postgres, Policy::default()).await else { return };
    let Home::Pg(pg) = &db._home else { unreachable!("a PostgreSQL home") };
    db.batch(&[fund("p1", "100.00")]).await;
    let mut admin = sqlx::PgConnection::connect_with(&pg.admin).await.unwrap();
    let name = &pg.name;
    let cut_off = [
        format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    ];
    for sql in &cut_off {
        sqlx::query(sql).execute(&mut admin).await.unwrap();
    }
    let payment = pay("m1", "o1", "10.00", 1, "p1");
    let err = db.ledger.handle_batch(std::slice::from_ref(&payment)).await.unwrap_err();
    assert!(!err.is_refusal(), "an outage is not a refusal: {err}");
    let err = db.ledger.handle_delivery(&[], &Default::default()).await.unwrap_err();
    assert!(!err.is_refusal(), "{err}");

    let back = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true");
    sqlx::query(&back).execute(&mut admin).await.unwrap();
    let outcomes = db.ledger.handle_batch(&[payment]).await.unwrap();
    let answer = serde_json::to_string(&outcomes[0].body).unwrap();
    assert!(!answer.contains("STORE_REFUSED"), "{answer}");
    assert!(answer.contains(r#""status":"PAID""#), "decided as if nothing had happened: {answer}");
    assert!(db.store.rejected(10).await.unwrap().is_empty(), "nothing kept as rejected");
    assert_eq!(db.store.check_invariants().await.unwrap(), ALL_GOOD);
}

async fn keys_and_the_audit_log_round_trip(backend: Backend) {
    use chrono::TimeZone;
    use facepay_domain::auth::{KeyId, Role};
    use facepay_ledger::credentials::{AuditEntry, Credential};
    let Some(db) = open(backend, Policy::default()).await else { return };
    let store = &db.store;
    let now = chrono::Utc.timestamp_millis_opt(chrono::Utc::now().timestamp_millis()).unwrap();
    let device = facepay_domain::DeviceRef {
        merchant_id: facepay_domain::MerchantId::parse("m1").unwrap(),
        store_id: facepay_domain::StoreId::parse("S01").unwrap(),
        device_id: facepay_domain::DeviceId::parse("D1").unwrap(),
    };
    store.register_merchant(&device.merchant_id, "M").await.unwrap();
    store.register_device(&device).await.unwrap();
    let key = Credential {
        key_id: KeyId::from_bytes([5; 12]),
        role: Role::Device,
        merchant_id: Some(device.merchant_id.clone()),
        store_id: Some(device.store_id.clone()),
        device_id: Some(device.device_id.clone()),
        secret_hash: "ab".repeat(32),
        label: "till 1".into(),
        created_by: "cli".into(),
        created_at: now,
        expires_at: now + chrono::Duration::days(1),
        revoked_at: None,
    };
    let entry = |action: &str| AuditEntry {
        seq: 0,
        at: now,
        principal: "cli".into(),
        role: "operator".into(),
        action: action.into(),
        subject: key.key_id.to_string(),
        detail: serde_json::json!({ "n": 1 }),
    };
    store.key_insert(&key, &entry("key_created")).await.unwrap();
    assert_eq!(store.key_get(&key.key_id).await.unwrap(), Some(key.clone()));
    assert_eq!(store.key_list(None, 10).await.unwrap(), vec![key.clone()]);
    assert!(store.registry().await.unwrap().device_keys.contains_key(&key.key_id), "the registry holds device keys");
    assert!(store.key_revoke(&key.key_id, now, &entry("key_revoked")).await.unwrap());
    assert!(!store.key_revoke(&key.key_id, now, &entry("key_revoked")).await.unwrap(), "revoked once");
    assert!(store.device_keys().await.unwrap().is_empty());
    assert_eq!(store.key_get(&key.key_id).await.unwrap().unwrap().revoked_at, Some(now));
    let audit = store.audit_list(None, 10).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["key_revoked", "key_created"], "newest first, one revocation");
    assert_eq!(audit[0].detail, serde_json::json!({ "n": 1 }));
    assert_eq!(store.audit_list(Some(audit[0].seq), 10).await.unwrap().len(), 1);
    // Pages: newest first, then by id; two keys made at one instant, and an older one.
    let twin = Credential { key_id: KeyId::from_bytes([6; 12]), ..key.clone() };
    let older =
        Credential { key_id: KeyId::from_bytes([1; 12]), created_at: now - chrono::Duration::days(1), ..key.clone() };
    for k in [&twin, &older] {
        store.key_insert(k, &entry("key_created")).await.unwrap();
    }
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.key_list(after.as_ref(), 1).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(facepay_ledger::credentials::KeyPosition::of(last));
        listed.extend(page.into_iter().map(|k| k.key_id));
    }
    assert_eq!(listed, vec![key.key_id.clone(), twin.key_id.clone(), older.key_id.clone()]);
}

on_both_stores!(tokio::test; keys_and_the_audit_log_round_trip);

/// `cmd` accepted `after_ms` after t0 (the platform's time).
fn later(after_ms: i64, cmd: Command) -> Command {
    Command { accepted_at: t0() + chrono::Duration::milliseconds(after_ms), ..cmd }
}

/// The ledger's clock: the sweeper revokes an order left unpaid 45 s and expires a hold
/// left open 30 days, each once and stamped with its deadline, as the platform's clock
/// passes them (whether or not anything is written meanwhile); paid orders and ended holds
/// are left alone.
async fn the_clock_revokes_unpaid_orders_and_expires_open_holds_once(backend: Backend) {
    use facepay_domain::time::ManualClock;
    use facepay_ledger::sweep::{tick, Sweeper};
    let Some(db) = open(backend, Policy::default()).await else { return };
    let clock = ManualClock::starting_at(t0());
    let sweeper = Sweeper::new(db.ledger.clone(), facepay_ledger::Delivery::default(), clock.shared());
    // Given an unpaid order, a paid one, an open hold and a cancelled one, all at t0.
    db.batch(&[fund("p1", "100.00"), pay_unresolved("m1", "o1", "5.00", 1), pay("m1", "o2", "6.00", 2, "p1")]).await;
    db.batch(&[authorise_pay_score("m1", "p1")]).await;
    db.batch(&[hold_cmd("m1", "h1", "p1", "50.00"), hold_cmd("m1", "h2", "p1", "20.00"), cancel_cmd("m1", "h2")]).await;
    let raw = &db.raw;
    let status = "SELECT COUNT(*) FROM orders WHERE out_trade_no = 'o1' AND status = 'REVOKED'";
    // When the platform's clock reads 50 s past t0 (less the sweep's 15 s slack: 35 s),
    // nothing is due.
    clock.advance_to(t0() + chrono::Duration::seconds(50));
    assert_eq!(sweeper.sweep_all().await.unwrap().ticks, 0);
    assert_eq!(raw.count(status).await, 0);
    // When it reads 61 s past (the sweep at 46 s), the unpaid order is revoked, at 45 s
    // exactly, though nothing was written since t0.
    clock.advance_to(t0() + chrono::Duration::seconds(61));
    let report = sweeper.sweep_all().await.unwrap();
    assert_eq!((report.orders_revoked, report.holds_expired, report.ticks), (1, 0, 1));
    assert_eq!(raw.count(status).await, 1);
    assert_eq!(raw.count("SELECT COUNT(*) FROM orders WHERE status = 'PAID'").await, 1);
    let revoked = db.store.order(&merchant("m1"), &otn("o1")).await.unwrap().unwrap();
    assert_eq!(revoked.updated_at, t0() + chrono::Duration::seconds(45));
    assert_eq!(live_hold_fen(&db).await, 5_000);
    // When a month has passed, the open hold expires and its money is back in the wallet.
    clock.advance_to(t0() + chrono::Duration::days(31));
    let report = sweeper.sweep_all().await.unwrap();
    assert_eq!((report.orders_revoked, report.holds_expired, report.ticks), (0, 1, 1));
    assert_eq!(raw.count("SELECT COUNT(*) FROM holds WHERE status = 'EXPIRED' AND out_order_no = 'h1'").await, 1);
    assert_eq!(live_hold_fen(&db).await, 0);
    let wallet = db.store.wallet(&payer("p1")).await.unwrap().unwrap().0;
    assert_eq!(wallet, 10_000 - 600);
    // Then sweeping again, or sending the same ticks again, decides nothing more.
    assert_eq!(sweeper.sweep_all().await.unwrap().ticks, 0);
    let due =
        facepay_ledger::sweep::Due::Hold { merchant_id: merchant("m1"), out_order_no: ono("h1"), created_at: t0() };
    db.batch(&[tick(&due), tick(&due)]).await;
    let ends = "SELECT COUNT(*) FROM events WHERE type IN ('hold_expired', 'order_revoked')";
    assert_eq!(raw.count(ends).await, 2);
    db.assert_consistent().await;
    assert!(db.ledger.verify().await.unwrap().ok);
}

/// A payment a month after a hold does not wait for the clock: the batch loads the payer's
/// holds past their 30 days (however the cache stands) and releases them first, once.
async fn a_payment_a_month_after_a_hold_releases_it_without_the_clock(backend: Backend) {
    use facepay_ledger::sweep::Sweeper;
    let Some(db) = open(backend, Policy::default()).await else { return };
    // Given p1 holds 80.00 of 100.00 since t0, and a hold of 10.00 of p2's ...
    db.batch(&[fund("p1", "100.00"), fund("p2", "10.00"), authorise_pay_score("m1", "p1")]).await;
    db.batch(&[authorise_pay_score("m1", "p2"), hold_cmd("m1", "h1", "p1", "80.00")]).await;
    db.batch(&[hold_cmd("m1", "h2", "p2", "10.00")]).await;
    // ... when a ledger that never read the hold takes p1's payment of 90.00 a month later,
    let fresh = Ledger::new(db.store.clone(), Policy::default());
    let month = 31 * 86_400_000;
    let paid = fresh.handle_batch(&[later(month, pay("m1", "o1", "90.00", 1, "p1"))]).await.unwrap();
    // then the hold is released first and the payment succeeds; p2's hold is not touched.
    assert_eq!(result(&paid[0].body).status, OrderStatus::Paid);
    let expired = "SELECT COUNT(*) FROM holds WHERE status = 'EXPIRED'";
    assert_eq!(db.raw.count(expired).await, 1);
    assert_eq!(db.store.wallet(&payer("p1")).await.unwrap().unwrap().0, 1_000);
    assert_eq!(live_hold_fen(&db).await, 0);
    // And the clock, when it runs, expires only p2's hold: p1's was released once.
    let clock = facepay_domain::time::ManualClock::starting_at(t0() + chrono::Duration::milliseconds(month));
    let sweeper = Sweeper::new(db.ledger.clone(), facepay_ledger::Delivery::default(), clock.shared());
    assert_eq!(sweeper.sweep_all().await.unwrap().holds_expired, 1);
    assert_eq!(db.raw.count(expired).await, 2);
    assert_eq!(db.raw.count("SELECT COUNT(*) FROM events WHERE type = 'hold_expired'").await, 2);
    db.assert_consistent().await;
}

/// Order lookups read together answer each caller exactly what the store holds for its own
/// key (missing ones, keys asked twice, many callers at once) and never an older state than
/// the one committed before the lookup was asked.
async fn batched_order_lookups_answer_each_caller_its_own_order(backend: Backend) {
    use facepay_ledger::lookup::OrderLookup;
    let Some(db) = open(backend, Policy::default()).await else { return };
    let mut cmds = vec![fund("p1", "1000.00")];
    cmds.extend((0..40).map(|i| pay("m1", &format!("o{i}"), "1.00", i + 1, "p1")));
    db.batch(&cmds).await;
    let lookup = OrderLookup::spawn(db.store.clone());
    let asks = (0..600).map(|i| {
        let (lookup, no) = (lookup.clone(), format!("o{}", i % 50));
        async move { (no.clone(), lookup.order((merchant("m1"), otn(&no))).await.unwrap()) }
    });
    for (no, order) in futures_join_all(asks).await {
        let expected = db.store.order(&merchant("m1"), &otn(&no)).await.unwrap();
        assert_eq!(order, expected, "{no}");
        let n: u64 = no[1..].parse().unwrap();
        assert_eq!(order.is_some(), n < 40, "{no}");
    }
    // A lookup asked after a commit sees it.
    db.batch(&[pay("m1", "o45", "2.00", 99, "p1")]).await;
    let seen = lookup.order((merchant("m1"), otn("o45"))).await.unwrap().expect("committed before the lookup");
    assert_eq!((seen.status, seen.amount_fen), (OrderStatus::Paid, 200));
}

async fn live_hold_fen(db: &Db) -> i64 {
    db.store.load_all().await.unwrap().balance_fen(&Account::Hold(payer("p1")))
}

/// The embedded ledger caches what it read; another writer of the same store (a
/// reconciliation resolution, a CLI, a second process) must not leave it deciding on stale
/// balances: a payer's 100.00 spent elsewhere is not spent again.
async fn a_cached_ledger_notices_another_writer_and_does_not_spend_twice(backend: Backend) {
    let Some(db) = open(backend, Policy::default()).await else { return };
    // Given the cached ledger has read the payer's wallet (100.00) ...
    db.batch(&[fund("p1", "100.00")]).await;
    assert_eq!(result(&db.batch(&[pay("m1", "o1", "0.01", 1, "p1")]).await[0]).status, OrderStatus::Paid);
    // ... when another writer spends the rest of it ...
    let other = Ledger::new(db.store.clone(), Policy::default()).uncached();
    let spent = other.handle_batch(&[pay("m1", "o2", "99.99", 2, "p1")]).await.unwrap();
    assert_eq!(result(&spent[0].body).status, OrderStatus::Paid);
    // ... then the cached ledger sees the wallet empty, not its cached 99.99.
    let again = db.batch(&[pay("m1", "o3", "50.00", 3, "p1")]).await;
    assert_eq!(result(&again[0]).reason, Some(DeclineReason::InsufficientBalance));
    assert_eq!(db.store.wallet(&payer("p1")).await.unwrap().unwrap().0, 0);
    db.assert_consistent().await;
}

async fn the_fleet_shows_each_devices_last_answer_and_its_refusals(backend: Backend) {
    use facepay_domain::limits::{FEE_RATE_DEFAULT_PPM, SINGLE_PAYMENT_LIMIT_DEFAULT_FEN};
    // Given a merchant with two devices, one of which sent a payment and an unaffordable one.
    let Some(db) = open(backend, Policy::default()).await else { return };
    let (heard, silent) = (device_of("m1", 1), device_of("m1", 2));
    db.store.register_merchant(&heard.merchant_id, "M").await.unwrap();
    for d in [&heard, &silent] {
        db.store.register_device(d).await.unwrap();
    }
    let from = |mut c: Command| {
        c.device = Some(heard.clone());
        c
    };
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    db.batch(&[fund("p1", "10.00"), from(pay("m1", "o1", "5.00", 1, "p1")), from(pay("m1", "o2", "50.00", 2, "p1"))])
        .await;
    // When the fleet is read: the device heard of, with its one decline; the other never.
    let all = facepay_ledger::store::DevicesPage { store_id: None, after: None, limit: 50 };
    let devices = db.store.devices(&merchant("m1"), &all, before).await.unwrap();
    let keys = facepay_ledger::model::Keys {
        limits: [merchant("m1")].into(),
        fee_rates: [merchant("m1")].into(),
        ..Default::default()
    };
    let terms = db.store.load(&keys).await.unwrap();
    let m1 = merchant("m1");
    assert_eq!(
        (terms.single_limit_fen(&m1), terms.fee_rate_ppm(&m1)),
        (SINGLE_PAYMENT_LIMIT_DEFAULT_FEN, FEE_RATE_DEFAULT_PPM)
    );
    let seen: Vec<(&str, &str, bool, i64)> = devices
        .iter()
        .map(|d| (d.store_id.as_str(), d.device_id.as_str(), d.last_event_at.is_some(), d.refused_last_hour))
        .collect();
    assert_eq!(seen, vec![("s1", "m1-d1", true, 1), ("s2", "m1-d2", false, 0)]);
    assert!(devices[0].last_event_at.unwrap() >= before);
    // Then a window that starts after them counts nothing; another merchant has no devices.
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(db.store.devices(&merchant("m1"), &all, after).await.unwrap()[0].refused_last_hour, 0);
    assert!(db.store.devices(&merchant("m9"), &all, before).await.unwrap().is_empty());
    // By page, and a store's only.
    let first = facepay_ledger::store::DevicesPage { limit: 1, ..all.clone() };
    assert_eq!(db.store.devices(&merchant("m1"), &first, before).await.unwrap()[0].device_id, "m1-d1");
    let next =
        facepay_ledger::store::DevicesPage { after: Some((heard.store_id.clone(), heard.device_id.clone())), ..first };
    assert_eq!(db.store.devices(&merchant("m1"), &next, before).await.unwrap()[0].device_id, "m1-d2");
    let s2 = facepay_ledger::store::DevicesPage { store_id: Some(silent.store_id.clone()), ..all };
    let only: Vec<String> =
        db.store.devices(&merchant("m1"), &s2, before).await.unwrap().into_iter().map(|d| d.device_id).collect();
    assert_eq!(only, vec!["m1-d2".to_string()]);
}

async fn an_orders_events_sent_again_by_their_own_device_are_counted_on_it(backend: Backend) {
    use facepay_ledger::store::device_key;
    // Given a paid order and an answered event of another order.
    let Some(db) = open(backend, Policy::default()).await else { return };
    let (p, other) = (pay("m1", "o1", "10.00", 1, "p1"), pay("m1", "o2", "10.00", 2, "p1"));
    db.batch(&[fund("p1", "100.00"), p.clone(), other.clone()]).await;
    let (mine, theirs) = (device_key(p.device.as_ref().unwrap()), device_key(&device_of("m2", 1)));
    let at = |s: i64| chrono::Utc::now() + chrono::Duration::seconds(s);
    // When its device sends the payment again twice (at the door), and another device a copy.
    assert!(db.store.note_repeat(p.event_id, &mine, at(-3)).await.unwrap());
    assert!(db.store.note_repeat(p.event_id, &mine, at(-2)).await.unwrap());
    assert!(!db.store.note_repeat(p.event_id, &theirs, at(-1)).await.unwrap(), "not that device's event");
    assert!(!db.store.note_repeat(Uuid::new_v4(), &mine, at(-1)).await.unwrap(), "an event never answered");
    // And a third copy refused as a replay on the bus, kept with the ledger's batch.
    let event = facepay_ledger::store::RejectedEvent {
        received_at: at(0),
        source: "kafka".into(),
        event_id: Some(p.event_id),
        kind: Some("payment_requested".into()),
        reason_code: "replayed".into(),
        field: Some("event_id".into()),
        message: "this event id was already received".into(),
        raw: Vec::new(),
        raw_truncated: false,
    };
    let rejection = facepay_ledger::Rejection { key: Uuid::new_v4(), event, answer_to: p.device.clone() };
    let delivery = facepay_ledger::Delivery { rejected: vec![rejection], ..Default::default() };
    let before_batch = at(0);
    db.ledger.handle_delivery(&[], &delivery).await.unwrap();
    // Then the order shows one event sent again three times; the other order none.
    let repeats = db.store.order_repeats(&merchant("m1"), &otn("o1")).await.unwrap();
    assert_eq!(repeats.iter().map(|r| (r.event_id, r.repeats)).collect::<Vec<_>>(), vec![(p.event_id, 3)]);
    assert!(repeats[0].last_at >= before_batch, "the last copy's time");
    assert!(db.store.order_repeats(&merchant("m1"), &otn("o2")).await.unwrap().is_empty());
    db.assert_consistent().await;
}

async fn console_sessions_live_idle_out_show_a_token_once_and_are_bounded(backend: Backend) {
    use facepay_ledger::console_sessions::{Bounds, Live, SessionRow};
    let Some(db) = open(backend, Policy::default()).await else { return };
    let s = &db.store;
    let row = |n: u8, at_ms: i64| SessionRow {
        id_hash: format!("{n:064x}"),
        key_id: facepay_domain::auth::KeyId::from_bytes([n; 12]),
        started_at_ms: at_ms,
        seen_at_ms: at_ms,
        once_sealed: None,
    };
    // Live: seen in the last 100 ms and started in the last 1 000 (times in ms).
    let live_at = |now: i64| Live { seen_after_ms: now - 100, started_after_ms: now - 1_000 };
    let roomy = Bounds { per_key: 10, total: 10 };
    // Given one session started at 1 000.
    s.session_start(&row(1, 1_000), live_at(1_000), roomy).await.unwrap();
    let found = s.session_get(&row(1, 0).id_hash, live_at(1_050)).await.unwrap().expect("live");
    assert_eq!((found.key_id, found.seen_at_ms), (row(1, 0).key_id, 1_000));
    // Idle past its timeout it is gone; touched, it lives on (never past its lifetime).
    assert!(s.session_get(&found.id_hash, live_at(1_150)).await.unwrap().is_none());
    s.session_touch(&found.id_hash, 1_090).await.unwrap();
    assert!(s.session_get(&found.id_hash, live_at(1_150)).await.unwrap().is_some());
    s.session_touch(&found.id_hash, 1_980).await.unwrap();
    assert!(s.session_get(&found.id_hash, live_at(2_010)).await.unwrap().is_none(), "past its lifetime");
    // A token kept for it is taken once.
    s.session_start(&row(2, 3_000), live_at(3_000), roomy).await.unwrap();
    let id2 = row(2, 0).id_hash;
    s.session_keep_once(&id2, "sealed").await.unwrap();
    assert_eq!(s.session_take_once(&id2).await.unwrap().as_deref(), Some("sealed"));
    assert_eq!(s.session_take_once(&id2).await.unwrap(), None);
    // Bounded: at the bound a new session ends the least recently seen; the dead are swept.
    let two = Bounds { per_key: 10, total: 2 };
    s.session_start(&row(3, 3_010), live_at(3_010), two).await.unwrap();
    s.session_start(&row(4, 3_020), live_at(3_020), two).await.unwrap();
    let now = live_at(3_030);
    let mut held = Vec::new();
    for n in 1..=4 {
        held.push(s.session_get(&row(n, 0).id_hash, now).await.unwrap().is_some());
    }
    assert_eq!(held, vec![false, false, true, true]);
    assert_eq!(db.raw.count("SELECT COUNT(*) FROM console_sessions").await, 2, "the dead one swept too");
    // Ended, it is gone.
    s.session_end(&row(4, 0).id_hash).await.unwrap();
    assert!(s.session_get(&row(4, 0).id_hash, now).await.unwrap().is_none());
    // One key's holder signing in again and again ends its own oldest sessions, not others'.
    let one_each = Bounds { per_key: 1, total: 10 };
    s.session_start(&row(5, 3_030), live_at(3_030), one_each).await.unwrap();
    let again = SessionRow { id_hash: format!("{:064x}", 30), ..row(3, 3_040) };
    s.session_start(&again, live_at(3_040), one_each).await.unwrap();
    assert!(s.session_get(&row(3, 0).id_hash, live_at(3_050)).await.unwrap().is_none(), "its own older one");
    assert!(s.session_get(&again.id_hash, live_at(3_050)).await.unwrap().is_some());
    assert!(s.session_get(&row(5, 0).id_hash, live_at(3_050)).await.unwrap().is_some(), "another key's, older, stays");
}

/// Migration 0026 fills each open card's last visit from the log for databases from before
/// it: on a store whose members lost theirs, its backfill statement gives back what replay
/// says (a payment elsewhere, or after the card closed, is no visit).
async fn the_last_visits_migration_0026_fills_in_are_what_replay_says(backend: Backend) {
    // Given two members' payments and a card closed between two of them.
    let Some(db) = open(backend, Policy::default()).await else { return };
    let steps = [
        fund("p1", "100.00"),
        fund("p2", "100.00"),
        open_card("m1", "p1", "c1"),
        open_card("m1", "p2", "c2"),
        pay("m1", "o1", "1.00", 1, "p1"),
        pay("m2", "o2", "1.00", 2, "p1"),
        pay("m1", "o3", "1.00", 3, "p2"),
        close_card("m1", "p2", "c2"),
        pay("m1", "o4", "1.00", 4, "p2"),
    ];
    for (i, cmd) in steps.into_iter().enumerate() {
        db.batch(&[later(i64::try_from(i).unwrap() * 1_000, cmd)]).await;
    }
    let visits = |members: Vec<facepay_ledger::store::MemberView>| {
        members.into_iter().map(|m| (m.payer_id.to_string(), m.last_visit_at)).collect::<BTreeMap<_, _>>()
    };
    let page = MembersPage { before_id: None, limit: 10 };
    let kept = visits(db.store.members(&merchant("m1"), page).await.unwrap());
    let at = |ms: i64| Some(t0() + chrono::Duration::milliseconds(ms));
    assert_eq!(kept, BTreeMap::from([("p1".to_string(), at(4_000)), ("p2".to_string(), at(6_000))]));
    // When they are lost (as before the migration), replay tells; the backfill restores them.
    db.raw.exec("UPDATE members SET last_visit_at = NULL").await.unwrap();
    assert!(!db.ledger.replay().await.unwrap().matches, "replay compares the last visits");
    let dir = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let path = format!("{}/../migrations/{dir}/0026_members_last_visit.sql", env!("CARGO_MANIFEST_DIR"));
    let migration = std::fs::read_to_string(path).unwrap();
    let backfill = &migration[migration.find("WITH visits AS").expect("the backfill")..];
    db.raw.exec(backfill).await.unwrap();
    assert_eq!(visits(db.store.members(&merchant("m1"), page).await.unwrap()), kept);
    db.assert_consistent().await;
}
