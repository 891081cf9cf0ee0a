//! The SQLite store: the embedded profile's database, through sqlx.
//!
//! One writer connection (the ledger stage is the only writer) and a small read pool; WAL
//! journal with `synchronous = FULL`, so a commit that returned is on disk.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use facepay_domain::limits::{
    SQLITE_BUSY_TIMEOUT_MS, SQLITE_CACHE_KIB, SQLITE_MMAP_BYTES, SQLITE_READ_CONNECTIONS_MAX,
};
use facepay_domain::{FaceCode, MerchantId, PayerId};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use crate::model::{Account, CaptureUse, DailyUsage, HoldKey, Keys, LedgerState, Member, Order};
use crate::rows::{self, corrupt, log_rows, Cells, PROJECTIONS};
use crate::store::{
    CommitBatch, ConsumerOffset, HistoryRow, InboundRecord, NewEvent, OutboxMessage, RejectedEvent, StoreError,
    StoredAnswer,
};

/// Most bound parameters per statement (SQLite allows 32 766).
const SQLITE_PARAMS_MAX: usize = 30_000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// The embedded store.
#[derive(Clone)]
pub struct SqliteStore {
    /// The one connection that writes: SQLite has a single writer anyway, and one
    /// connection keeps commits in the ledger's order.
    pub(crate) writer: SqlitePool,
    /// Readers for the API and replay; WAL lets them read while the writer commits.
    pub(crate) reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_millis(SQLITE_BUSY_TIMEOUT_MS))
            // A page cache that holds the hot B-tree pages (random-keyed indexes otherwise
            // re-read pages on every insert), statement journals in memory, and reads
            // through a memory map.
            .pragma("cache_size", format!("-{SQLITE_CACHE_KIB}"))
            .pragma("temp_store", "memory")
            .pragma("mmap_size", SQLITE_MMAP_BYTES.to_string());
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        MIGRATOR.run(&writer).await?;
        let reader = if url.contains(":memory:") {
            writer.clone()
        } else {
            SqlitePoolOptions::new().max_connections(SQLITE_READ_CONNECTIONS_MAX).connect_with(options).await?
        };
        Ok(Self { writer, reader })
    }

    /// A write transaction that takes the database's write lock when it begins (`BEGIN
    /// IMMEDIATE`): a writer of another process then waits its turn (the busy timeout)
    /// instead of failing "database is locked" when its reads turn into a write.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }
}

pub(crate) use crate::timestamp::ts;

/// Reads a stored timestamp: [`ts`]'s format directly, anything else RFC 3339 through chrono.
pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    match crate::timestamp::parse_canonical(s.as_bytes()) {
        Some(t) => Ok(t),
        None => DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|e| corrupt("timestamp", s, e)),
    }
}

fn parse_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| corrupt("uuid", s, e))
}

/// SQLite keeps timestamps as RFC 3339 text, days as `YYYY-MM-DD`, UUIDs as text and flags
/// as integers.
impl Cells for SqliteRow {
    crate::rows::cells_as_stored!();
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        Ok(self.try_get::<i64, _>(col)? != 0)
    }
    fn at(&self, col: &str) -> Result<DateTime<Utc>, StoreError> {
        parse_ts(&self.text(col)?)
    }
    fn opt_at(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.opt_text(col)?.map(|s| parse_ts(&s)).transpose()
    }
    fn day(&self, col: &str) -> Result<NaiveDate, StoreError> {
        let s = self.text(col)?;
        NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|e| corrupt("day", &s, e))
    }
    fn uuid(&self, col: &str) -> Result<Uuid, StoreError> {
        parse_uuid(&self.text(col)?)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError> {
        self.opt_text(col)?.map(|s| parse_uuid(&s)).transpose()
    }
}

/// Rows per multi-row statement for a table of `cols` columns.
fn chunk_rows(cols: usize) -> usize {
    (SQLITE_PARAMS_MAX / cols).max(1)
}

// ---- loading --------------------------------------------------------------------------

/// Fills `state` from rows selected by `sql` + an `IN (...)` list of single keys.
async fn load_by<'k, K: 'k>(
    pool: &SqlitePool,
    sql: &str,
    keys: impl ExactSizeIterator<Item = &'k K>,
    bind: impl Fn(&K) -> String,
    mut each: impl FnMut(&SqliteRow) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let keys: Vec<String> = keys.map(bind).collect();
    for chunk in keys.chunks(chunk_rows(1)) {
        let mut qb = QueryBuilder::<Sqlite>::new(sql);
        qb.push(" IN (");
        let mut sep = qb.separated(", ");
        for k in chunk {
            sep.push_bind(k.clone());
        }
        qb.push(")");
        for row in qb.build().fetch_all(pool).await? {
            each(&row)?;
        }
    }
    Ok(())
}

/// Fills `state` from rows selected by `sql` + `IN (VALUES ...)` of two-part keys.
async fn load_by_pair(
    pool: &SqlitePool,
    sql: &str,
    pairs: Vec<(String, String)>,
    mut each: impl FnMut(&SqliteRow) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for chunk in pairs.chunks(chunk_rows(2)) {
        let mut qb = QueryBuilder::<Sqlite>::new(sql);
        qb.push(" IN (VALUES ");
        let mut first = true;
        for (a, b) in chunk {
            qb.push(if first { "(" } else { ", (" });
            first = false;
            qb.push_bind(a.clone()).push(", ").push_bind(b.clone()).push(")");
        }
        qb.push(")");
        for row in qb.build().fetch_all(pool).await? {
            each(&row)?;
        }
    }
    Ok(())
}

async fn load_keys(pool: &SqlitePool, keys: &Keys) -> Result<LedgerState, StoreError> {
    let mut st = LedgerState::default();
    let sql = "SELECT account, balance_fen FROM balances WHERE account";
    load_by(pool, sql, keys.accounts.iter(), Account::key, |r| rows::fill_balance(&mut st, r)).await?;
    let sql = "SELECT payer_id, frozen FROM payers WHERE payer_id";
    load_by(pool, sql, keys.frozen.iter(), |p| p.to_string(), |r| rows::fill_payer(&mut st, r)).await?;
    let sql = "SELECT merchant_id, single_limit_fen FROM merchant_limits WHERE merchant_id";
    load_by(pool, sql, keys.limits.iter(), |m| m.to_string(), |r| rows::fill_limit(&mut st, r)).await?;
    let sql = "SELECT face_code, merchant_id, used_by FROM captures WHERE face_code";
    load_by(pool, sql, keys.captures.iter(), |f| f.to_string(), |r| rows::fill_capture(&mut st, r)).await?;
    let pairs = keys.orders.iter().map(|(m, o)| (m.to_string(), o.to_string())).collect();
    let sql = "SELECT * FROM orders WHERE (merchant_id, out_trade_no)";
    load_by_pair(pool, sql, pairs, |r| rows::fill_order(&mut st, r)).await?;
    let pairs = keys.members.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let sql = "SELECT * FROM members WHERE (merchant_id, payer_id)";
    load_by_pair(pool, sql, pairs, |r| rows::fill_member(&mut st, r)).await?;
    let pairs = keys.daily.iter().map(|(p, d)| (p.to_string(), d.to_string())).collect();
    let sql = "SELECT * FROM daily_usage WHERE (payer_id, day)";
    load_by_pair(pool, sql, pairs, |r| rows::fill_daily(&mut st, r)).await?;
    let pairs = keys.pay_score.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let sql = "SELECT merchant_id, payer_id, authorised_at FROM pay_score_authorisations WHERE (merchant_id, payer_id)";
    load_by_pair(pool, sql, pairs, |r| rows::fill_pay_score(&mut st, r)).await?;
    load_lifecycle(pool, keys, &mut st).await?;
    Ok(st)
}

async fn load_lifecycle(pool: &SqlitePool, keys: &Keys, st: &mut LedgerState) -> Result<(), StoreError> {
    let sql = "SELECT merchant_id, fee_rate_ppm FROM merchant_fee_rates WHERE merchant_id";
    load_by(pool, sql, keys.fee_rates.iter(), |m| m.to_string(), |r| rows::fill_fee_rate(st, r)).await?;
    let pairs = keys.refunds.iter().map(|(m, r)| (m.to_string(), r.to_string())).collect();
    let sql = "SELECT * FROM refunds WHERE (merchant_id, out_refund_no)";
    load_by_pair(pool, sql, pairs, |r| rows::fill_refund(st, r)).await?;
    let pairs = keys.holds.iter().map(|(m, o)| (m.to_string(), o.to_string())).collect();
    let sql = "SELECT * FROM holds WHERE (merchant_id, out_order_no)";
    load_by_pair(pool, sql, pairs, |r| rows::fill_hold(st, r)).await
}

// ---- writing --------------------------------------------------------------------------

/// Pushes `rows` into `INSERT INTO <head> VALUES ...` statements of bounded size.
async fn insert_rows<'a, T>(
    tx: &mut Transaction<'static, Sqlite>,
    head: &str,
    tail: &str,
    cols: usize,
    rows: &'a [T],
    push: impl Fn(sqlx::query_builder::Separated<'_, 'a, Sqlite, &'static str>, &'a T),
) -> Result<(), StoreError> {
    for chunk in rows.chunks(chunk_rows(cols)) {
        let mut qb = QueryBuilder::<Sqlite>::new(head);
        qb.push_values(chunk, &push);
        qb.push(tail);
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Each stream's latest hash (its newest event's), for the streams `events` extend.
async fn last_hashes(
    tx: &mut Transaction<'static, Sqlite>,
    events: &[NewEvent],
) -> Result<HashMap<String, String>, StoreError> {
    let mut last = HashMap::new();
    for chunk in rows::streams(events).chunks(chunk_rows(1)) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT stream, hash FROM events WHERE hash IS NOT NULL AND seq IN \
             (SELECT MAX(seq) FROM events WHERE stream IN (",
        );
        let mut sep = qb.separated(", ");
        for stream in chunk {
            sep.push_bind(stream.clone());
        }
        qb.push(") GROUP BY stream)");
        for r in qb.build().fetch_all(&mut **tx).await? {
            last.insert(r.text("stream")?, r.text("hash")?);
        }
    }
    Ok(last)
}

pub(crate) async fn write_log(tx: &mut Transaction<'static, Sqlite>, events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut last = last_hashes(tx, events).await?;
    let rows = log_rows(events, &mut last)?;
    let head = "INSERT INTO events (event_id, cause_event_id, stream, type, schema_version, occurred_at, recorded_at, \
                payload, prev_hash, hash) ";
    insert_rows(tx, head, "", 10, &rows.events, |mut s, e| {
        s.push_bind(e.event_id.to_string())
            .push_bind(e.cause_event_id.to_string())
            .push_bind(e.stream.as_str())
            .push_bind(e.kind)
            .push_bind(e.schema_version)
            .push_bind(ts(&e.occurred_at))
            .push_bind(ts(&e.recorded_at))
            .push_bind(e.payload.as_str())
            .push_bind(e.prev_hash.as_str())
            .push_bind(e.hash.as_str());
    })
    .await?;
    insert_rows(tx, "INSERT INTO postings (txn_id, leg, account, amount_fen) ", "", 4, &rows.postings, |mut s, p| {
        s.push_bind(p.txn_id.to_string()).push_bind(p.leg).push_bind(p.account.as_str()).push_bind(p.amount_fen);
    })
    .await?;
    let head = "INSERT INTO ledger_transactions (txn_id, event_id, leg_count, posted_at) ";
    insert_rows(tx, head, "", 4, &rows.txns, |mut s, t| {
        s.push_bind(t.txn_id.to_string())
            .push_bind(t.event_id.to_string())
            .push_bind(t.leg_count)
            .push_bind(ts(&t.posted_at));
    })
    .await
}

/// The projections the batch touched, with their new values; balances move by the batch's
/// postings.
async fn write_projections(tx: &mut Transaction<'static, Sqlite>, batch: &CommitBatch) -> Result<(), StoreError> {
    let keys = &batch.projections.keys;
    let st = &batch.projections.state;
    let balances = rows::balance_deltas(&batch.events);
    let tail = " ON CONFLICT (account) DO UPDATE SET balance_fen = balance_fen + excluded.balance_fen";
    insert_rows(tx, "INSERT INTO balances (account, balance_fen) ", tail, 2, &balances, |mut s, r| {
        s.push_bind(r.0.as_str()).push_bind(r.1);
    })
    .await?;
    let frozen: Vec<(String, bool)> = keys.frozen.iter().map(|p| (p.to_string(), st.is_frozen(p))).collect();
    let tail = " ON CONFLICT (payer_id) DO UPDATE SET frozen = excluded.frozen";
    insert_rows(tx, "INSERT INTO payers (payer_id, frozen) ", tail, 2, &frozen, |mut s, r| {
        s.push_bind(r.0.as_str()).push_bind(r.1);
    })
    .await?;
    let limits: Vec<(String, i64)> = keys.limits.iter().map(|m| (m.to_string(), st.single_limit_fen(m))).collect();
    let tail = " ON CONFLICT (merchant_id) DO UPDATE SET single_limit_fen = excluded.single_limit_fen";
    insert_rows(tx, "INSERT INTO merchant_limits (merchant_id, single_limit_fen) ", tail, 2, &limits, |mut s, r| {
        s.push_bind(r.0.as_str()).push_bind(r.1);
    })
    .await?;
    let captures: Vec<(&FaceCode, &CaptureUse)> =
        keys.captures.iter().filter_map(|f| st.captures.get(f).map(|c| (f, c))).collect();
    let head = "INSERT INTO captures (face_code, merchant_id, used_by) ";
    insert_rows(tx, head, " ON CONFLICT (face_code) DO NOTHING", 3, &captures, |mut s, (f, c)| {
        s.push_bind(f.as_str()).push_bind(c.merchant_id.as_str()).push_bind(c.used_by.as_str());
    })
    .await?;
    let authorised: Vec<_> = keys.pay_score.iter().filter_map(|k| st.pay_score.get(k).map(|at| (k, at))).collect();
    let head = "INSERT INTO pay_score_authorisations (merchant_id, payer_id, authorised_at) ";
    insert_rows(tx, head, " ON CONFLICT (merchant_id, payer_id) DO NOTHING", 3, &authorised, |mut s, ((m, p), at)| {
        s.push_bind(m.as_str()).push_bind(p.as_str()).push_bind(ts(at));
    })
    .await?;
    write_orders(tx, keys, st).await?;
    write_members_daily(tx, keys, st).await?;
    write_lifecycle(tx, batch).await
}

/// Fee rates, refunds (inserted once), holds, and the settlement moved by the batch's events.
async fn write_lifecycle(tx: &mut Transaction<'static, Sqlite>, batch: &CommitBatch) -> Result<(), StoreError> {
    let (keys, st) = (&batch.projections.keys, &batch.projections.state);
    let rates: Vec<(String, i64)> = keys.fee_rates.iter().map(|m| (m.to_string(), st.fee_rate_ppm(m))).collect();
    let tail = " ON CONFLICT (merchant_id) DO UPDATE SET fee_rate_ppm = excluded.fee_rate_ppm";
    insert_rows(tx, "INSERT INTO merchant_fee_rates (merchant_id, fee_rate_ppm) ", tail, 2, &rates, |mut s, r| {
        s.push_bind(r.0.as_str()).push_bind(r.1);
    })
    .await?;
    let refunds: Vec<_> = keys.refunds.iter().filter_map(|k| st.refunds.get(k).map(|r| (k, r))).collect();
    let head = "INSERT INTO refunds (merchant_id, out_refund_no, out_trade_no, payer_id, amount_fen, fee_refund_fen,                 refunded_at) ";
    insert_rows(tx, head, "", 7, &refunds, |mut s, ((m, no), r)| {
        s.push_bind(m.as_str())
            .push_bind(no.as_str())
            .push_bind(r.out_trade_no.as_str())
            .push_bind(r.payer_id.as_str())
            .push_bind(r.amount_fen)
            .push_bind(r.fee_refund_fen)
            .push_bind(ts(&r.refunded_at));
    })
    .await?;
    let holds: Vec<_> = keys.holds.iter().filter_map(|k| st.holds.get(k).map(|h| (k, h))).collect();
    let head = "INSERT INTO holds (merchant_id, out_order_no, payer_id, hold_fen, status, total_fen, created_at,                 updated_at) ";
    let tail = " ON CONFLICT (merchant_id, out_order_no) DO UPDATE SET status = excluded.status,                 total_fen = excluded.total_fen, updated_at = excluded.updated_at";
    insert_rows(tx, head, tail, 8, &holds, |mut s, ((m, no), h)| {
        s.push_bind(m.as_str())
            .push_bind(no.as_str())
            .push_bind(h.payer_id.as_str())
            .push_bind(h.hold_fen)
            .push_bind(h.status.as_str())
            .push_bind(h.total_fen)
            .push_bind(ts(&h.created_at))
            .push_bind(ts(&h.updated_at));
    })
    .await?;
    let deltas = rows::settlement_deltas(&batch.events);
    let head = "INSERT INTO settlement (merchant_id, day, gross_fen, refunds_fen, fees_fen, net_fen) ";
    let tail = " ON CONFLICT (merchant_id, day) DO UPDATE SET gross_fen = gross_fen + excluded.gross_fen,                 refunds_fen = refunds_fen + excluded.refunds_fen, fees_fen = fees_fen + excluded.fees_fen,                 net_fen = net_fen + excluded.net_fen";
    insert_rows(tx, head, tail, 6, &deltas, |mut s, ((m, day), d)| {
        s.push_bind(m.as_str())
            .push_bind(day.to_string())
            .push_bind(d.gross_fen)
            .push_bind(d.refunds_fen)
            .push_bind(d.fees_fen)
            .push_bind(d.net_fen());
    })
    .await
}

async fn write_orders(tx: &mut Transaction<'static, Sqlite>, keys: &Keys, st: &LedgerState) -> Result<(), StoreError> {
    let orders: Vec<&Order> = keys.orders.iter().filter_map(|k| st.orders.get(k)).collect();
    let head = "INSERT INTO orders (merchant_id, out_trade_no, amount_fen, status, reason, payer_id, face_code, \
                member_quick_pay, store_id, device_id, created_at, updated_at, fee_fen, refunded_fen, \
                fee_refunded_fen) ";
    let tail = " ON CONFLICT (merchant_id, out_trade_no) DO UPDATE SET amount_fen = excluded.amount_fen, \
                status = excluded.status, reason = excluded.reason, payer_id = excluded.payer_id, \
                face_code = excluded.face_code, member_quick_pay = excluded.member_quick_pay, \
                store_id = excluded.store_id, device_id = excluded.device_id, updated_at = excluded.updated_at, \
                fee_fen = excluded.fee_fen, refunded_fen = excluded.refunded_fen, \
                fee_refunded_fen = excluded.fee_refunded_fen";
    insert_rows(tx, head, tail, 15, &orders, |mut s, o| {
        s.push_bind(o.merchant_id.as_str())
            .push_bind(o.out_trade_no.as_str())
            .push_bind(o.amount_fen)
            .push_bind(o.status.as_str())
            .push_bind(o.reason.map(|r| r.code()))
            .push_bind(o.payer_id.as_ref().map(|p| p.as_str()))
            .push_bind(o.face_code.as_str())
            .push_bind(o.member_quick_pay)
            .push_bind(o.store_id.as_str())
            .push_bind(o.device_id.as_str())
            .push_bind(ts(&o.created_at))
            .push_bind(ts(&o.updated_at))
            .push_bind(o.fee_fen)
            .push_bind(o.refunded_fen)
            .push_bind(o.fee_refunded_fen);
    })
    .await
}

async fn write_members_daily(
    tx: &mut Transaction<'static, Sqlite>,
    keys: &Keys,
    st: &LedgerState,
) -> Result<(), StoreError> {
    let members: Vec<(&(MerchantId, PayerId), &Member)> =
        keys.members.iter().filter_map(|k| st.members.get(k).map(|m| (k, m))).collect();
    let head = "INSERT INTO members (merchant_id, payer_id, card_code, channel, opened_at, closed_at, last_visit_at) ";
    let tail = " ON CONFLICT (merchant_id, payer_id) DO UPDATE SET card_code = excluded.card_code, \
                channel = excluded.channel, opened_at = excluded.opened_at, closed_at = excluded.closed_at, \
                last_visit_at = excluded.last_visit_at";
    insert_rows(tx, head, tail, 7, &members, |mut s, ((merchant, payer), m)| {
        s.push_bind(merchant.as_str())
            .push_bind(payer.as_str())
            .push_bind(m.card_code.as_str())
            .push_bind(m.channel.as_str())
            .push_bind(ts(&m.opened_at))
            .push_bind(m.closed_at.as_ref().map(ts))
            .push_bind(m.last_visit_at.as_ref().map(ts));
    })
    .await?;
    let daily: Vec<(&(PayerId, NaiveDate), DailyUsage)> = keys.daily.iter().map(|k| (k, st.daily(&k.0, k.1))).collect();
    let tail = " ON CONFLICT (payer_id, day) DO UPDATE SET amount_fen = excluded.amount_fen, count = excluded.count";
    insert_rows(tx, "INSERT INTO daily_usage (payer_id, day, amount_fen, count) ", tail, 4, &daily, |mut s, (k, u)| {
        s.push_bind(k.0.as_str()).push_bind(k.1.to_string()).push_bind(u.amount_fen).push_bind(i64::from(u.count));
    })
    .await
}

async fn write_history(tx: &mut Transaction<'static, Sqlite>, rows: &[HistoryRow]) -> Result<(), StoreError> {
    let head = "INSERT INTO history (event_id, merchant_id, out_trade_no, amount_fen, status, reason, payer_id, \
                member_quick_pay, store_id, device_id, occurred_at, day) ";
    insert_rows(tx, head, "", 12, rows, |mut s, h| {
        s.push_bind(h.event_id.to_string())
            .push_bind(h.merchant_id.as_str())
            .push_bind(h.out_trade_no.as_str())
            .push_bind(h.amount_fen)
            .push_bind(h.status.as_str())
            .push_bind(h.reason.as_deref())
            .push_bind(h.payer_id.as_ref().map(|p| p.as_str()))
            .push_bind(h.member_quick_pay)
            .push_bind(h.store_id.as_str())
            .push_bind(h.device_id.as_str())
            .push_bind(ts(&h.occurred_at))
            .push_bind(h.day.to_string());
    })
    .await
}

async fn write_inbound(tx: &mut Transaction<'static, Sqlite>, rows: &[InboundRecord]) -> Result<(), StoreError> {
    let head = "INSERT INTO inbound (event_id, type, outcome, processed_at, device, retry_of) ";
    insert_rows(tx, head, "", 6, rows, |mut s, r| {
        s.push_bind(r.event_id.to_string())
            .push_bind(r.kind.as_str())
            .push_bind(r.answer.outcome_json.as_str())
            .push_bind(ts(&r.answer.processed_at))
            .push_bind(r.answer.device.as_deref())
            .push_bind(r.retry_of.as_deref());
    })
    .await
}

async fn write_rejected(tx: &mut Transaction<'static, Sqlite>, rows: &[RejectedEvent]) -> Result<(), StoreError> {
    let head = "INSERT INTO rejected_events (received_at, source, event_id, type, reason_code, field, message, raw, \
                raw_truncated) ";
    insert_rows(tx, head, "", 9, rows, |mut s, r| {
        s.push_bind(ts(&r.received_at))
            .push_bind(r.source.as_str())
            .push_bind(r.event_id.map(|e| e.to_string()))
            .push_bind(r.kind.as_deref())
            .push_bind(r.reason_code.as_str())
            .push_bind(r.field.as_deref())
            .push_bind(r.message.as_str())
            .push_bind(r.raw.as_slice())
            .push_bind(r.raw_truncated);
    })
    .await
}

/// Advances the consumer offsets a batch reached: one compare-and-set per partition
/// (a batch spans few); a partition another writer moved since the batch was read
/// fences the batch ([`StoreError::Fenced`]).
async fn write_offsets(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    offsets: &[ConsumerOffset],
) -> Result<(), StoreError> {
    for o in rows::last_offsets(offsets) {
        let sql = if o.expected.is_some() { rows::OFFSET_ADVANCE_SQL } else { rows::OFFSET_FIRST_SQL };
        let q = sqlx::query(sql).bind(o.group_id.as_str()).bind(o.topic.as_str()).bind(o.partition).bind(o.next_offset);
        let q = match o.expected {
            Some(expected) => q.bind(expected),
            None => q,
        };
        let done = q.execute(&mut **tx).await?;
        if done.rows_affected() != 1 {
            return Err(rows::fenced(o));
        }
    }
    Ok(())
}

/// The consumer offsets a batch reached and the messages it leaves for the transport.
async fn write_transport(
    tx: &mut Transaction<'static, Sqlite>,
    offsets: &[ConsumerOffset],
    outbox: &[OutboxMessage],
) -> Result<(), StoreError> {
    write_offsets(tx, offsets).await?;
    let now = ts(&Utc::now());
    let head = "INSERT INTO outbox (topic, key, payload, answer_of, created_at) ";
    insert_rows(tx, head, "", 5, outbox, |mut s, m| {
        s.push_bind(m.topic.as_str()).push_bind(m.key.as_str()).push_bind(m.payload.bytes());
        s.push_bind(m.payload.answer_of().map(|a| a.to_string())).push_bind(now.clone());
    })
    .await
}

// ---- reading --------------------------------------------------------------------------

async fn load_everything(pool: &SqlitePool) -> Result<LedgerState, StoreError> {
    let mut st = LedgerState::default();
    for (sql, fill) in PROJECTIONS {
        for r in sqlx::query(sql).fetch_all(pool).await? {
            fill(&mut st, &r)?;
        }
    }
    Ok(st)
}

const INVARIANTS_SQL: &str = "SELECT \
    (SELECT COUNT(*) FROM (SELECT txn_id FROM postings GROUP BY txn_id HAVING SUM(amount_fen) <> 0)) AS unbalanced_txns, \
    (SELECT COALESCE(SUM(amount_fen), 0) FROM postings) AS postings_total, \
    (SELECT COUNT(*) FROM postings p WHERE NOT EXISTS \
        (SELECT 1 FROM ledger_transactions t WHERE t.txn_id = p.txn_id)) AS orphan_postings, \
    (SELECT COUNT(*) FROM (SELECT account, SUM(amount_fen) AS s FROM postings GROUP BY account) p \
        LEFT JOIN balances b ON b.account = p.account WHERE b.balance_fen IS NOT p.s) AS drifted_balances, \
    (SELECT COUNT(*) FROM balances b WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.account = b.account) \
        AND b.balance_fen <> 0) AS phantom_balances, \
    (SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE type = 'payment_succeeded' \
        GROUP BY json_extract(payload, '$.attempt.merchant_id'), json_extract(payload, '$.attempt.out_trade_no') \
        HAVING COUNT(*) > 1)) AS orders_paid_twice, \
    (SELECT COUNT(*) FROM balances WHERE account LIKE 'wallet:%' AND balance_fen < 0) AS overdrawn";

// ---- what SQLite does its own way (the rest: crate::store_sql) -------------------------

/// An instant as SQLite stores it: canonical RFC 3339 text.
pub(crate) fn bind_at(at: &DateTime<Utc>) -> String {
    ts(at)
}

/// A UUID as SQLite stores it: its hyphenated text.
pub(crate) fn bind_id(id: &Uuid) -> String {
    id.to_string()
}

/// The stored answers of those of `event_ids` already processed (a list read in chunks).
async fn answered_rows(pool: &SqlitePool, event_ids: &[Uuid]) -> Result<HashMap<Uuid, StoredAnswer>, StoreError> {
    let mut found = HashMap::new();
    let sql = "SELECT event_id, outcome, device, processed_at FROM inbound WHERE event_id";
    load_by(
        pool,
        sql,
        event_ids.iter(),
        |e| e.to_string(),
        |r| {
            found.insert(r.uuid("event_id")?, rows::stored_answer_from(r)?);
            Ok(())
        },
    )
    .await?;
    Ok(found)
}

/// SQLite tells no other process: one process decides there, and tells its own waiters.
async fn listen_decided(_: &SqlitePool) -> Result<Option<crate::decided::DecidedListener>, StoreError> {
    Ok(None)
}

/// A day as SQLite stores it: `YYYY-MM-DD` text.
pub(crate) fn bind_day(day: &NaiveDate) -> String {
    day.to_string()
}

/// The keys of `payers`' holds still open and created at or before `created_before`.
async fn hold_keys_due(
    pool: &SqlitePool,
    payers: &[PayerId],
    created_before: DateTime<Utc>,
) -> Result<Vec<HoldKey>, StoreError> {
    let mut due = Vec::new();
    // One parameter is the time; the rest are payers.
    for chunk in payers.chunks(chunk_rows(1) - 1) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT merchant_id, out_order_no FROM holds WHERE status = 'CREATED' AND created_at <= ",
        );
        qb.push_bind(ts(&created_before)).push(" AND payer_id IN (");
        let mut sep = qb.separated(", ");
        for p in chunk {
            sep.push_bind(p.to_string());
        }
        qb.push(")");
        for row in qb.build().fetch_all(pool).await? {
            due.push(rows::hold_key_from(&row)?);
        }
    }
    Ok(due)
}

/// Everything a batch writes, in its transaction.
async fn write_batch(tx: &mut Transaction<'static, Sqlite>, batch: &CommitBatch) -> Result<(), StoreError> {
    write_log(tx, &batch.events).await?;
    write_projections(tx, batch).await?;
    write_history(tx, &batch.history).await?;
    write_inbound(tx, &batch.inbound).await?;
    write_rejected(tx, &batch.rejected).await?;
    write_repeats(tx, &batch.repeats).await?;
    write_transport(tx, &batch.offsets, &batch.outbox).await
}

/// Deletes these published outbox messages, a chunk of ids per statement.
async fn forget_published(pool: &SqlitePool, ids: &[i64]) -> Result<(), StoreError> {
    for chunk in ids.chunks(chunk_rows(1)) {
        let mut qb = QueryBuilder::<Sqlite>::new("DELETE FROM outbox WHERE id IN (");
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        qb.push(")");
        qb.build().execute(pool).await?;
    }
    Ok(())
}

/// Upserts what `captures` resolved to (a face code seen again is overwritten).
async fn remember_captures(
    tx: &mut Transaction<'static, Sqlite>,
    captures: &[crate::store::CaptureMemo],
) -> Result<(), StoreError> {
    let head = "INSERT INTO capture_memos (face_code, payer_id, rule, captured_at) ";
    let tail = " ON CONFLICT (face_code) DO UPDATE SET payer_id = excluded.payer_id, rule = excluded.rule, \
                captured_at = excluded.captured_at";
    insert_rows(tx, head, tail, 4, captures, |mut b, c| {
        b.push_bind(c.face_code.as_str())
            .push_bind(c.payer_id.as_ref().map(|p| p.as_str()))
            .push_bind(c.rule.as_str())
            .push_bind(ts(&c.captured_at));
    })
    .await
}

crate::store_sql::store_sql!(SqliteStore, db: Sqlite, read: reader, write: writer, byte_order: "",
    now_ms: "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)", lock_payer: "SELECT $1");

crate::console_sessions::session_store!(SqliteStore, writer);
crate::credentials::credential_store!(SqliteStore, sqlx::Sqlite, sqlx::sqlite::SqliteRow, writer, |_: usize| "?"
    .to_string());

/// A database in `dir` migrated up to, not including, migration `before` (e.g. `"0026"`): for
/// tests that a later migration keeps the rows written before it. Its URL and a pool on it.
#[cfg(test)]
pub(crate) async fn migrated_before(dir: &std::path::Path, before: &str) -> (String, SqlitePool) {
    let old = dir.join("migrations");
    std::fs::create_dir(&old).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < before {
            std::fs::copy(&path, old.join(&name)).unwrap();
        }
    }
    let url = format!("sqlite://{}?mode=rwc", dir.join("old.db").display());
    let pool = SqlitePool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&pool).await.unwrap();
    (url, pool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Migration 0026 rebuilds SQLite's `members` (a `WITHOUT ROWID` table cannot gain an id):
    /// every card from before it is kept, in the order it opened, and its last visit is filled.
    #[tokio::test]
    async fn members_survive_the_0026_rebuild_with_their_last_visit() {
        let dir = tempfile::tempdir().unwrap();
        let (url, pool) = migrated_before(dir.path(), "0026").await;
        for (payer, opened) in [("p2", "2026-03-02T01:00:00.000000Z"), ("p1", "2026-03-01T01:00:00.000000Z")] {
            let card = "INSERT INTO members VALUES ('m1', ?, 'c', 'card_package', ?, NULL)";
            sqlx::query(card).bind(payer).bind(opened).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let store = SqliteStore::open(&url).await.unwrap();
        let m1 = MerchantId::parse("m1").unwrap();
        let page = crate::store::MembersPage { before_id: None, limit: 10 };
        let members = crate::store::ProjectionReader::members(&store, &m1, page).await.unwrap();
        let kept: Vec<(&str, Option<chrono::DateTime<chrono::Utc>>)> =
            members.iter().map(|m| (m.payer_id.as_str(), m.last_visit_at)).collect();
        assert_eq!(kept, vec![("p2", None), ("p1", None)], "newest card first; no payment, no visit");
        assert!(members[0].id > members[1].id);
    }

    proptest! {
        /// The hand-written format is chrono's, byte for byte, and reads back to the microsecond.
        #[test]
        fn timestamps_format_as_chrono_does_and_read_back(secs in -62_135_596_800_i64..253_402_300_799, nanos in 0_u32..1_000_000_000) {
            let at = DateTime::from_timestamp(secs, nanos).expect("in range");
            let text = ts(&at);
            prop_assert_eq!(&text, &at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            let micros = DateTime::from_timestamp(secs, nanos / 1_000 * 1_000).expect("in range");
            prop_assert_eq!(parse_ts(&text).expect("reads back"), micros);
            prop_assert_eq!(crate::timestamp::parse_canonical(text.as_bytes()), Some(micros));
        }
    }

    #[test]
    fn other_rfc3339_forms_still_read_and_bad_text_is_corrupt() {
        let at = parse_ts("2026-03-03T08:00:00+08:00").expect("an offset");
        assert_eq!(ts(&at), "2026-03-03T00:00:00.000000Z");
        assert_eq!(parse_ts("2026-03-03T00:00:00Z").expect("no fraction"), at);
        for bad in ["2026-02-30T00:00:00.000000Z", "2026-03-03T24:00:00.000000Z", "2026-03-03T00:00:00.00000xZ", ""] {
            assert!(crate::timestamp::parse_canonical(bad.as_bytes()).is_none(), "{bad}");
            assert!(matches!(parse_ts(bad), Err(StoreError::Corrupt(_))), "{bad}");
        }
        let far = DateTime::from_timestamp(253_402_300_800, 0).expect("year 10000");
        assert_eq!(ts(&far), far.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    }
}
