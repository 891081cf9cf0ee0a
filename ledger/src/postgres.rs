//! The PostgreSQL store: the production profile's database, through sqlx, with the same
//! semantics as the SQLite store.
//!
//! One pool serves the ledger (its loads and its commits, one database transaction per
//! batch) and the readers. Writes bind whole columns as arrays and `INSERT ... SELECT FROM
//! UNNEST(...)`: one statement per table per batch, whatever the batch size (no bind-parameter
//! limit to chunk under), and a constant statement text the connection prepares once.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use facepay_domain::limits::{LEDGER_LOOKUPS_IN_FLIGHT_MAX, PG_ACQUIRE_TIMEOUT_MS, PG_POOL_CONNECTIONS_MAX};
use facepay_domain::{MerchantId, PayerId};
use futures_util::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::model::{Account, Keys, LedgerState};
use crate::rows::{self, log_rows, Cells, Fill, PROJECTIONS};
use crate::store::{
    CommitBatch, ConsumerOffset, HistoryFilter, HistoryRow, InboundRecord, NewEvent, OutboxMessage, RejectedEvent,
    StoreError, StoredAnswer,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;
type PgTx = Transaction<'static, Postgres>;

/// The production store.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://` or `postgresql://`) and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(PgConnectOptions::from_str(url)?).await
    }

    pub async fn open_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(PG_POOL_CONNECTIONS_MAX)
            .acquire_timeout(Duration::from_millis(PG_ACQUIRE_TIMEOUT_MS))
            .connect_with(options)
            .await?;
        // sqlx holds a PostgreSQL advisory lock (keyed by the database) while it migrates, so
        // several processes may start at once: one applies the migrations, the others wait
        // for the lock and find the schema current. Keep that default (`Migrator::locking`).
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// A write transaction (PostgreSQL's row locks and unique keys order concurrent writers).
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }
}

/// PostgreSQL's columns have their own types: `TIMESTAMPTZ`, `DATE`, `UUID`, `BOOLEAN`,
/// `BYTEA`; every integer the stores read is a `BIGINT`.
impl Cells for PgRow {
    crate::rows::cells_as_stored!();
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn at(&self, col: &str) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_at(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn day(&self, col: &str) -> Result<NaiveDate, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn uuid(&self, col: &str) -> Result<Uuid, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError> {
        Ok(self.try_get(col)?)
    }
}

/// One column of `rows`, for binding as an array.
fn col<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

// ---- loading --------------------------------------------------------------------------

async fn fill_from(pool: &PgPool, st: &mut LedgerState, q: PgQuery<'_>, fill: Fill) -> Result<(), StoreError> {
    for r in q.fetch_all(pool).await? {
        fill(st, &r)?;
    }
    Ok(())
}

// Every lookup by key is one descent of the key's index per key asked (`LATERAL … LIMIT 1`
// over the array): a plan that cannot turn into a scan of the table. `= ANY($1)` and
// `IN (SELECT … UNNEST)` could: sqlx prepares each statement once per connection, and
// PostgreSQL's generic plan for it, made while a fresh table was nearly empty, scanned the
// whole table per lookup from then on (seen in `facepay-bench pipeline`: the batch's answered
// lookup grew to 11–15 ms as `inbound` filled).
#[rustfmt::skip]
macro_rules! by_key {
    ($cols:literal, $table:literal, $a:literal: $a_type:literal) => {
        concat!("SELECT r.* FROM UNNEST($1::", $a_type, "[]) AS k(a) CROSS JOIN LATERAL (SELECT ", $cols,
            " FROM ", $table, " t WHERE t.", $a, " = k.a LIMIT 1) r")
    };
    ($cols:literal, $table:literal, $a:literal: $a_type:literal, $b:literal: $b_type:literal) => {
        concat!("SELECT r.* FROM UNNEST($1::", $a_type, "[], $2::", $b_type, "[]) AS k(a, b) CROSS JOIN LATERAL ",
            "(SELECT ", $cols, " FROM ", $table, " t WHERE t.", $a, " = k.a AND t.", $b, " = k.b LIMIT 1) r")
    };
}
const BY_ACCOUNT: &str = by_key!("account, balance_fen", "balances", "account": "text");
const BY_PAYER: &str = by_key!("payer_id, frozen", "payers", "payer_id": "text");
const BY_LIMIT: &str = by_key!("merchant_id, single_limit_fen", "merchant_limits", "merchant_id": "text");
const BY_FACE: &str = by_key!("face_code, merchant_id, used_by", "captures", "face_code": "text");
const BY_ORDER: &str = by_key!("*", "orders", "merchant_id": "text", "out_trade_no": "text");
const BY_MEMBER: &str = by_key!("*", "members", "merchant_id": "text", "payer_id": "text");
const BY_PAY_SCORE: &str = by_key!(
    "merchant_id, payer_id, authorised_at", "pay_score_authorisations", "merchant_id": "text", "payer_id": "text");
const BY_DAILY: &str = by_key!("*", "daily_usage", "payer_id": "text", "day": "date");
const BY_ANSWER: &str = by_key!("event_id, outcome, device, processed_at", "inbound", "event_id": "uuid");
const BY_FEE_RATE: &str = by_key!("merchant_id, fee_rate_ppm", "merchant_fee_rates", "merchant_id": "text");
const BY_REFUND: &str = by_key!("*", "refunds", "merchant_id": "text", "out_refund_no": "text");
const BY_HOLD: &str = by_key!("*", "holds", "merchant_id": "text", "out_order_no": "text");

/// Every lookup by key a batch runs, by name ([`PgStore::explain_lookups`]).
const LOOKUPS: [(&str, &str); 12] = [
    ("balances", BY_ACCOUNT),
    ("payers", BY_PAYER),
    ("merchant_limits", BY_LIMIT),
    ("captures", BY_FACE),
    ("orders", BY_ORDER),
    ("members", BY_MEMBER),
    ("pay_score_authorisations", BY_PAY_SCORE),
    ("daily_usage", BY_DAILY),
    ("inbound", BY_ANSWER),
    ("merchant_fee_rates", BY_FEE_RATE),
    ("refunds", BY_REFUND),
    ("holds", BY_HOLD),
];

/// The state of `keys`: one lookup per kind of entity asked for, up to
/// [`LEDGER_LOOKUPS_IN_FLIGHT_MAX`] of them at once on the pool's connections (a batch
/// waits for the slowest, not for their sum).
async fn load_keys(pool: &PgPool, keys: &Keys) -> Result<LedgerState, StoreError> {
    let mut lookups: Vec<(PgQuery<'static>, Fill)> = Vec::new();
    let mut one = |sql: &'static str, values: Vec<String>, fill: Fill| {
        if !values.is_empty() {
            lookups.push((sqlx::query(sql).bind(values), fill));
        }
    };
    one(BY_ACCOUNT, keys.accounts.iter().map(Account::key).collect(), rows::fill_balance);
    one(BY_PAYER, keys.frozen.iter().map(|p| p.to_string()).collect(), rows::fill_payer);
    one(BY_LIMIT, keys.limits.iter().map(|m| m.to_string()).collect(), rows::fill_limit);
    one(BY_FACE, keys.captures.iter().map(|f| f.to_string()).collect(), rows::fill_capture);
    one(BY_FEE_RATE, keys.fee_rates.iter().map(|m| m.to_string()).collect(), rows::fill_fee_rate);
    let mut two = |sql: &'static str, (a, b): (Vec<String>, Vec<String>), fill: Fill| {
        if !a.is_empty() {
            lookups.push((sqlx::query(sql).bind(a).bind(b), fill));
        }
    };
    let text = |(a, b): (&dyn std::fmt::Display, &dyn std::fmt::Display)| (a.to_string(), b.to_string());
    two(BY_ORDER, keys.orders.iter().map(|(m, o)| text((m, o))).unzip(), rows::fill_order);
    two(BY_MEMBER, keys.members.iter().map(|(m, p)| text((m, p))).unzip(), rows::fill_member);
    two(BY_PAY_SCORE, keys.pay_score.iter().map(|(m, p)| text((m, p))).unzip(), rows::fill_pay_score);
    two(BY_REFUND, keys.refunds.iter().map(|(m, r)| text((m, r))).unzip(), rows::fill_refund);
    two(BY_HOLD, keys.holds.iter().map(|(m, o)| text((m, o))).unzip(), rows::fill_hold);
    if !keys.daily.is_empty() {
        let (p, d): (Vec<String>, Vec<NaiveDate>) = keys.daily.iter().map(|(p, d)| (p.to_string(), *d)).unzip();
        lookups.push((sqlx::query(BY_DAILY).bind(p).bind(d), rows::fill_daily));
    }
    let (queries, fills): (Vec<_>, Vec<Fill>) = lookups.into_iter().unzip();
    // Made here, not in the stream: a closure inside it would not be `Send` for every lifetime.
    let lookups: Vec<_> = queries.into_iter().map(|q| q.fetch_all(pool)).collect();
    let found: Vec<Vec<PgRow>> =
        futures_util::stream::iter(lookups).buffered(LEDGER_LOOKUPS_IN_FLIGHT_MAX).try_collect().await?;
    let mut st = LedgerState::default();
    for (rows, fill) in found.iter().zip(fills) {
        rows.iter().try_for_each(|r| fill(&mut st, r))?;
    }
    Ok(st)
}

// ---- writing --------------------------------------------------------------------------

/// Runs `q` in `tx` unless it has no rows to write.
async fn exec(tx: &mut PgTx, rows: usize, q: PgQuery<'_>) -> Result<(), StoreError> {
    if rows > 0 {
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

const INSERT_EVENTS: &str = "INSERT INTO events \
    (event_id, cause_event_id, stream, type, schema_version, occurred_at, recorded_at, payload, prev_hash, hash) \
    SELECT e, c, s, t, v, o, r, p::jsonb, ph, h FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], \
    $5::int8[], $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], $10::text[]) \
    AS u (e, c, s, t, v, o, r, p, ph, h)";
/// One descent of `events_stream` per stream (a `DISTINCT ON` over `stream = ANY(...)` read
/// and sorted every event of every stream named).
const LAST_HASHES: &str = "SELECT s AS stream, h.hash FROM UNNEST($1::text[]) AS s \
    CROSS JOIN LATERAL (SELECT hash FROM events WHERE stream = s AND hash IS NOT NULL \
    ORDER BY seq DESC LIMIT 1) h";
const INSERT_POSTINGS: &str = "INSERT INTO postings (txn_id, leg, account, amount_fen) \
    SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::int8[])";
const INSERT_TXNS: &str = "INSERT INTO ledger_transactions (txn_id, event_id, leg_count, posted_at) \
    SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::timestamptz[])";

/// Events, then postings, then the transactions that seal them.
pub(crate) async fn write_log(tx: &mut PgTx, events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut last = HashMap::new();
    for r in sqlx::query(LAST_HASHES).bind(rows::streams(events)).fetch_all(&mut **tx).await? {
        last.insert(r.text("stream")?, r.text("hash")?);
    }
    let rows = log_rows(events, &mut last)?;
    let (e, p, t) = (&rows.events, &rows.postings, &rows.txns);
    let q = sqlx::query(INSERT_EVENTS)
        .bind(col(e, |r| r.event_id))
        .bind(col(e, |r| r.cause_event_id))
        .bind(col(e, |r| r.stream.as_str()))
        .bind(col(e, |r| r.kind))
        .bind(col(e, |r| r.schema_version))
        .bind(col(e, |r| r.occurred_at))
        .bind(col(e, |r| r.recorded_at))
        .bind(col(e, |r| r.payload.as_str()))
        .bind(col(e, |r| r.prev_hash.as_str()))
        .bind(col(e, |r| r.hash.as_str()));
    exec(tx, e.len(), q).await?;
    let q = sqlx::query(INSERT_POSTINGS)
        .bind(col(p, |r| r.txn_id))
        .bind(col(p, |r| r.leg))
        .bind(col(p, |r| r.account.as_str()))
        .bind(col(p, |r| r.amount_fen));
    exec(tx, p.len(), q).await?;
    let q = sqlx::query(INSERT_TXNS)
        .bind(col(t, |r| r.txn_id))
        .bind(col(t, |r| r.event_id))
        .bind(col(t, |r| r.leg_count))
        .bind(col(t, |r| r.posted_at));
    exec(tx, t.len(), q).await
}

const UPSERT_BALANCES: &str = "INSERT INTO balances (account, balance_fen) \
    SELECT * FROM UNNEST($1::text[], $2::int8[]) \
    ON CONFLICT (account) DO UPDATE SET balance_fen = balances.balance_fen + EXCLUDED.balance_fen";
const UPSERT_PAYERS: &str = "INSERT INTO payers (payer_id, frozen) SELECT * FROM UNNEST($1::text[], $2::bool[]) \
    ON CONFLICT (payer_id) DO UPDATE SET frozen = EXCLUDED.frozen";
const UPSERT_LIMITS: &str = "INSERT INTO merchant_limits (merchant_id, single_limit_fen) \
    SELECT * FROM UNNEST($1::text[], $2::int8[]) \
    ON CONFLICT (merchant_id) DO UPDATE SET single_limit_fen = EXCLUDED.single_limit_fen";
const UPSERT_CAPTURE_MEMOS: &str = "INSERT INTO capture_memos (face_code, payer_id, rule, captured_at) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[]) \
    ON CONFLICT (face_code) DO UPDATE SET payer_id = excluded.payer_id, rule = excluded.rule, \
    captured_at = excluded.captured_at";
const INSERT_CAPTURES: &str = "INSERT INTO captures (face_code, merchant_id, used_by) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) ON CONFLICT (face_code) DO NOTHING";
const INSERT_PAY_SCORE: &str = "INSERT INTO pay_score_authorisations (merchant_id, payer_id, authorised_at) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[]) ON CONFLICT (merchant_id, payer_id) DO NOTHING";

/// The projections the batch touched (each key once: the keys are sets, and PostgreSQL
/// refuses an upsert that touches a row twice); balances move by the batch's postings.
async fn write_projections(tx: &mut PgTx, batch: &CommitBatch) -> Result<(), StoreError> {
    let keys = &batch.projections.keys;
    let st = &batch.projections.state;
    let deltas = rows::balance_deltas(&batch.events);
    let q = sqlx::query(UPSERT_BALANCES).bind(col(&deltas, |d| d.0.as_str())).bind(col(&deltas, |d| d.1));
    exec(tx, deltas.len(), q).await?;
    let payers: Vec<&PayerId> = keys.frozen.iter().collect();
    let q = sqlx::query(UPSERT_PAYERS).bind(col(&payers, |p| p.as_str())).bind(col(&payers, |p| st.is_frozen(p)));
    exec(tx, payers.len(), q).await?;
    let limits: Vec<&MerchantId> = keys.limits.iter().collect();
    let q =
        sqlx::query(UPSERT_LIMITS).bind(col(&limits, |m| m.as_str())).bind(col(&limits, |m| st.single_limit_fen(m)));
    exec(tx, limits.len(), q).await?;
    let captures: Vec<_> = keys.captures.iter().filter_map(|f| st.captures.get(f).map(|c| (f, c))).collect();
    let q = sqlx::query(INSERT_CAPTURES)
        .bind(col(&captures, |(f, _)| f.as_str()))
        .bind(col(&captures, |(_, c)| c.merchant_id.as_str()))
        .bind(col(&captures, |(_, c)| c.used_by.as_str()));
    exec(tx, captures.len(), q).await?;
    let authorised: Vec<_> = keys.pay_score.iter().filter_map(|k| st.pay_score.get(k).map(|at| (k, *at))).collect();
    let q = sqlx::query(INSERT_PAY_SCORE)
        .bind(col(&authorised, |((m, _), _)| m.as_str()))
        .bind(col(&authorised, |((_, p), _)| p.as_str()))
        .bind(col(&authorised, |(_, at)| *at));
    exec(tx, authorised.len(), q).await?;
    write_orders(tx, keys, st).await?;
    write_members_daily(tx, keys, st).await?;
    write_lifecycle(tx, batch).await
}

const UPSERT_FEE_RATES: &str = "INSERT INTO merchant_fee_rates (merchant_id, fee_rate_ppm) \
    SELECT * FROM UNNEST($1::text[], $2::int8[]) \
    ON CONFLICT (merchant_id) DO UPDATE SET fee_rate_ppm = EXCLUDED.fee_rate_ppm";
const INSERT_REFUNDS: &str = "INSERT INTO refunds (merchant_id, out_refund_no, out_trade_no, payer_id, amount_fen, \
    fee_refund_fen, refunded_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], \
    $6::int8[], $7::timestamptz[])";
const UPSERT_HOLDS: &str = "INSERT INTO holds (merchant_id, out_order_no, payer_id, hold_fen, status, total_fen, \
    created_at, updated_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], \
    $6::int8[], $7::timestamptz[], $8::timestamptz[]) \
    ON CONFLICT (merchant_id, out_order_no) DO UPDATE SET status = EXCLUDED.status, \
    total_fen = EXCLUDED.total_fen, updated_at = EXCLUDED.updated_at";
const UPSERT_SETTLEMENT: &str = "INSERT INTO settlement (merchant_id, day, gross_fen, refunds_fen, fees_fen, net_fen) \
    SELECT * FROM UNNEST($1::text[], $2::date[], $3::int8[], $4::int8[], $5::int8[], $6::int8[]) \
    ON CONFLICT (merchant_id, day) DO UPDATE SET gross_fen = settlement.gross_fen + EXCLUDED.gross_fen, \
    refunds_fen = settlement.refunds_fen + EXCLUDED.refunds_fen, fees_fen = settlement.fees_fen + EXCLUDED.fees_fen, \
    net_fen = settlement.net_fen + EXCLUDED.net_fen";

/// Fee rates, refunds (inserted once), holds, and the settlement moved by the batch's events.
async fn write_lifecycle(tx: &mut PgTx, batch: &CommitBatch) -> Result<(), StoreError> {
    let (keys, st) = (&batch.projections.keys, &batch.projections.state);
    let m: Vec<&MerchantId> = keys.fee_rates.iter().collect();
    let q = sqlx::query(UPSERT_FEE_RATES).bind(col(&m, |m| m.as_str())).bind(col(&m, |m| st.fee_rate_ppm(m)));
    exec(tx, m.len(), q).await?;
    let r: Vec<_> = keys.refunds.iter().filter_map(|k| st.refunds.get(k).map(|r| (k, r))).collect();
    let q = sqlx::query(INSERT_REFUNDS)
        .bind(col(&r, |((m, _), _)| m.as_str()))
        .bind(col(&r, |((_, no), _)| no.as_str()))
        .bind(col(&r, |(_, r)| r.out_trade_no.as_str()))
        .bind(col(&r, |(_, r)| r.payer_id.as_str()))
        .bind(col(&r, |(_, r)| r.amount_fen))
        .bind(col(&r, |(_, r)| r.fee_refund_fen))
        .bind(col(&r, |(_, r)| r.refunded_at));
    exec(tx, r.len(), q).await?;
    let h: Vec<_> = keys.holds.iter().filter_map(|k| st.holds.get(k).map(|h| (k, h))).collect();
    let q = sqlx::query(UPSERT_HOLDS)
        .bind(col(&h, |((m, _), _)| m.as_str()))
        .bind(col(&h, |((_, no), _)| no.as_str()))
        .bind(col(&h, |(_, h)| h.payer_id.as_str()))
        .bind(col(&h, |(_, h)| h.hold_fen))
        .bind(col(&h, |(_, h)| h.status.as_str()))
        .bind(col(&h, |(_, h)| h.total_fen))
        .bind(col(&h, |(_, h)| h.created_at))
        .bind(col(&h, |(_, h)| h.updated_at));
    exec(tx, h.len(), q).await?;
    let d = rows::settlement_deltas(&batch.events);
    let q = sqlx::query(UPSERT_SETTLEMENT)
        .bind(col(&d, |((m, _), _)| m.as_str()))
        .bind(col(&d, |((_, day), _)| *day))
        .bind(col(&d, |(_, s)| s.gross_fen))
        .bind(col(&d, |(_, s)| s.refunds_fen))
        .bind(col(&d, |(_, s)| s.fees_fen))
        .bind(col(&d, |(_, s)| s.net_fen()));
    exec(tx, d.len(), q).await
}

const UPSERT_ORDERS: &str = "INSERT INTO orders (merchant_id, out_trade_no, amount_fen, status, reason, payer_id, \
    face_code, member_quick_pay, store_id, device_id, created_at, updated_at, fee_fen, refunded_fen, \
    fee_refunded_fen) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], \
    $8::bool[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[], $13::int8[], $14::int8[], \
    $15::int8[]) \
    ON CONFLICT (merchant_id, out_trade_no) DO UPDATE SET amount_fen = EXCLUDED.amount_fen, \
    status = EXCLUDED.status, reason = EXCLUDED.reason, payer_id = EXCLUDED.payer_id, \
    face_code = EXCLUDED.face_code, member_quick_pay = EXCLUDED.member_quick_pay, \
    store_id = EXCLUDED.store_id, device_id = EXCLUDED.device_id, updated_at = EXCLUDED.updated_at, \
    fee_fen = EXCLUDED.fee_fen, refunded_fen = EXCLUDED.refunded_fen, fee_refunded_fen = EXCLUDED.fee_refunded_fen";

async fn write_orders(tx: &mut PgTx, keys: &Keys, st: &LedgerState) -> Result<(), StoreError> {
    let o: Vec<_> = keys.orders.iter().filter_map(|k| st.orders.get(k)).collect();
    let q = sqlx::query(UPSERT_ORDERS)
        .bind(col(&o, |o| o.merchant_id.as_str()))
        .bind(col(&o, |o| o.out_trade_no.as_str()))
        .bind(col(&o, |o| o.amount_fen))
        .bind(col(&o, |o| o.status.as_str()))
        .bind(col(&o, |o| o.reason.map(|r| r.code())))
        .bind(col(&o, |o| o.payer_id.as_ref().map(|p| p.as_str())))
        .bind(col(&o, |o| o.face_code.as_str()))
        .bind(col(&o, |o| o.member_quick_pay))
        .bind(col(&o, |o| o.store_id.as_str()))
        .bind(col(&o, |o| o.device_id.as_str()))
        .bind(col(&o, |o| o.created_at))
        .bind(col(&o, |o| o.updated_at))
        .bind(col(&o, |o| o.fee_fen))
        .bind(col(&o, |o| o.refunded_fen))
        .bind(col(&o, |o| o.fee_refunded_fen));
    exec(tx, o.len(), q).await
}

const UPSERT_MEMBERS: &str = "INSERT INTO members (merchant_id, payer_id, card_code, channel, opened_at, closed_at, \
    last_visit_at) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], \
    $7::timestamptz[]) \
    ON CONFLICT (merchant_id, payer_id) DO UPDATE SET card_code = EXCLUDED.card_code, \
    channel = EXCLUDED.channel, opened_at = EXCLUDED.opened_at, closed_at = EXCLUDED.closed_at, \
    last_visit_at = EXCLUDED.last_visit_at";
const UPSERT_DAILY: &str = "INSERT INTO daily_usage (payer_id, day, amount_fen, count) \
    SELECT * FROM UNNEST($1::text[], $2::date[], $3::int8[], $4::int8[]) \
    ON CONFLICT (payer_id, day) DO UPDATE SET amount_fen = EXCLUDED.amount_fen, count = EXCLUDED.count";

async fn write_members_daily(tx: &mut PgTx, keys: &Keys, st: &LedgerState) -> Result<(), StoreError> {
    let m: Vec<_> = keys.members.iter().filter_map(|k| st.members.get(k).map(|m| (k, m))).collect();
    let q = sqlx::query(UPSERT_MEMBERS)
        .bind(col(&m, |((merchant, _), _)| merchant.as_str()))
        .bind(col(&m, |((_, payer), _)| payer.as_str()))
        .bind(col(&m, |(_, m)| m.card_code.as_str()))
        .bind(col(&m, |(_, m)| m.channel.as_str()))
        .bind(col(&m, |(_, m)| m.opened_at))
        .bind(col(&m, |(_, m)| m.closed_at))
        .bind(col(&m, |(_, m)| m.last_visit_at));
    exec(tx, m.len(), q).await?;
    let d: Vec<_> = keys.daily.iter().map(|k| (k, st.daily(&k.0, k.1))).collect();
    let q = sqlx::query(UPSERT_DAILY)
        .bind(col(&d, |(k, _)| k.0.as_str()))
        .bind(col(&d, |(k, _)| k.1))
        .bind(col(&d, |(_, u)| u.amount_fen))
        .bind(col(&d, |(_, u)| i64::from(u.count)));
    exec(tx, d.len(), q).await
}

const INSERT_HISTORY: &str = "INSERT INTO history (event_id, merchant_id, out_trade_no, amount_fen, status, reason, \
    payer_id, member_quick_pay, store_id, device_id, occurred_at, day) \
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], \
    $8::bool[], $9::text[], $10::text[], $11::timestamptz[], $12::date[])";

async fn write_history(tx: &mut PgTx, h: &[HistoryRow]) -> Result<(), StoreError> {
    let q = sqlx::query(INSERT_HISTORY)
        .bind(col(h, |h| h.event_id))
        .bind(col(h, |h| h.merchant_id.as_str()))
        .bind(col(h, |h| h.out_trade_no.as_str()))
        .bind(col(h, |h| h.amount_fen))
        .bind(col(h, |h| h.status.as_str()))
        .bind(col(h, |h| h.reason.as_deref()))
        .bind(col(h, |h| h.payer_id.as_ref().map(|p| p.as_str())))
        .bind(col(h, |h| h.member_quick_pay))
        .bind(col(h, |h| h.store_id.as_str()))
        .bind(col(h, |h| h.device_id.as_str()))
        .bind(col(h, |h| h.occurred_at))
        .bind(col(h, |h| h.day));
    exec(tx, h.len(), q).await
}

const INSERT_INBOUND: &str = "INSERT INTO inbound (event_id, type, outcome, processed_at, device, retry_of) \
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])";
const INSERT_REJECTED: &str = "INSERT INTO rejected_events (received_at, source, event_id, type, reason_code, field, \
    message, raw, raw_truncated) SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::uuid[], $4::text[], \
    $5::text[], $6::text[], $7::text[], $8::bytea[], $9::bool[])";

async fn write_answers(tx: &mut PgTx, i: &[InboundRecord], r: &[RejectedEvent]) -> Result<(), StoreError> {
    let q = sqlx::query(INSERT_INBOUND)
        .bind(col(i, |i| i.event_id))
        .bind(col(i, |i| i.kind.as_str()))
        .bind(col(i, |i| i.answer.outcome_json.as_str()))
        .bind(col(i, |i| i.answer.processed_at))
        .bind(col(i, |i| i.answer.device.as_deref()))
        .bind(col(i, |i| i.retry_of.as_deref()));
    exec(tx, i.len(), q).await?;
    let q = sqlx::query(INSERT_REJECTED)
        .bind(col(r, |r| r.received_at))
        .bind(col(r, |r| r.source.as_str()))
        .bind(col(r, |r| r.event_id))
        .bind(col(r, |r| r.kind.as_deref()))
        .bind(col(r, |r| r.reason_code.as_str()))
        .bind(col(r, |r| r.field.as_deref()))
        .bind(col(r, |r| r.message.as_str()))
        .bind(col(r, |r| r.raw.as_slice()))
        .bind(col(r, |r| r.raw_truncated));
    exec(tx, r.len(), q).await
}

const INSERT_OUTBOX: &str = "INSERT INTO outbox (topic, key, payload, answer_of, created_at) \
    SELECT t, k, p, a, now() FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::uuid[]) AS u (t, k, p, a)";

/// Advances the consumer offsets a batch reached, every partition in one statement (a
/// batch spans up to all of a topic's partitions; a statement each was a round trip each):
/// each a compare-and-set, as SQLite's. A partition another writer moved since the batch
/// was read (under READ COMMITTED the update waits for that writer, then finds the offset
/// changed) is not advanced, and fences the batch ([`StoreError::Fenced`]).
async fn write_offsets(tx: &mut PgTx, offsets: &[ConsumerOffset]) -> Result<(), StoreError> {
    let o = rows::last_offsets(offsets);
    if o.is_empty() {
        return Ok(());
    }
    let moved = sqlx::query(ADVANCE_OFFSETS)
        .bind(col(&o, |o| o.group_id.as_str()))
        .bind(col(&o, |o| o.topic.as_str()))
        .bind(col(&o, |o| o.partition))
        .bind(col(&o, |o| o.next_offset))
        .bind(col(&o, |o| o.expected))
        .fetch_all(&mut **tx)
        .await?;
    let advanced: Vec<(String, String, i32)> = moved
        .iter()
        .map(|r| Ok((r.text("group_id")?, r.text("topic")?, r.try_get::<i32, _>("partition")?)))
        .collect::<Result<_, StoreError>>()?;
    let moved =
        |o: &&ConsumerOffset| advanced.iter().any(|(g, t, p)| (g, t, *p) == (&o.group_id, &o.topic, o.partition));
    match o.iter().find(|o| !moved(o)) {
        Some(fenced) => Err(rows::fenced(fenced)),
        None => Ok(()),
    }
}

/// [`write_offsets`]: each partition's offset moved from the one the batch read (`$5`), or
/// stored for the first time when it read none; the partitions it moved.
const ADVANCE_OFFSETS: &str = "WITH k AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::int8[], \
    $5::int8[]) AS k(g, t, p, n, e)), \
    advanced AS (UPDATE consumer_offsets c SET next_offset = k.n FROM k WHERE k.e IS NOT NULL \
    AND c.group_id = k.g AND c.topic = k.t AND c.partition = k.p AND c.next_offset = k.e \
    RETURNING c.group_id, c.topic, c.partition), \
    first AS (INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) \
    SELECT g, t, p, n FROM k WHERE e IS NULL ON CONFLICT (group_id, topic, partition) DO NOTHING \
    RETURNING group_id, topic, partition) \
    SELECT * FROM advanced UNION ALL SELECT * FROM first";

/// The consumer offsets a batch reached and the messages it leaves for the transport.
async fn write_transport(tx: &mut PgTx, o: &[ConsumerOffset], m: &[OutboxMessage]) -> Result<(), StoreError> {
    write_offsets(tx, o).await?;
    let q = sqlx::query(INSERT_OUTBOX)
        .bind(col(m, |m| m.topic.as_str()))
        .bind(col(m, |m| m.key.as_str()))
        .bind(col(m, |m| m.payload.bytes()))
        .bind(col(m, |m| m.payload.answer_of()));
    exec(tx, m.len(), q).await
}

// ---- reading --------------------------------------------------------------------------

const INVARIANTS_SQL: &str = "SELECT \
    (SELECT COUNT(*) FROM (SELECT txn_id FROM postings GROUP BY txn_id HAVING SUM(amount_fen) <> 0) u) \
        AS unbalanced_txns, \
    (SELECT COALESCE(SUM(amount_fen), 0)::int8 FROM postings) AS postings_total, \
    (SELECT COUNT(*) FROM postings p WHERE NOT EXISTS \
        (SELECT 1 FROM ledger_transactions t WHERE t.txn_id = p.txn_id)) AS orphan_postings, \
    (SELECT COUNT(*) FROM (SELECT account, SUM(amount_fen) AS s FROM postings GROUP BY account) p \
        LEFT JOIN balances b ON b.account = p.account WHERE b.balance_fen IS DISTINCT FROM p.s) AS drifted_balances, \
    (SELECT COUNT(*) FROM balances b WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.account = b.account) \
        AND b.balance_fen <> 0) AS phantom_balances, \
    (SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE type = 'payment_succeeded' \
        GROUP BY payload->'attempt'->>'merchant_id', payload->'attempt'->>'out_trade_no' \
        HAVING COUNT(*) > 1) d) AS orders_paid_twice, \
    (SELECT COUNT(*) FROM balances WHERE account LIKE 'wallet:%' AND balance_fen < 0) AS overdrawn";

async fn load_everything(pool: &PgPool) -> Result<LedgerState, StoreError> {
    let mut st = LedgerState::default();
    for (sql, fill) in PROJECTIONS {
        fill_from(pool, &mut st, sqlx::query(sql), fill).await?;
    }
    Ok(st)
}

impl PgStore {
    /// The plan PostgreSQL picks for the history page query with `f` (`facepay-bench api`
    /// shows it: pages come from an index, not a sequential scan).
    pub async fn explain_history(&self, merchant: &MerchantId, f: &HistoryFilter) -> Result<Vec<String>, StoreError> {
        let sql = format!("EXPLAIN {}", crate::store_sql::history_sql(f));
        let rows = Self::history_query(&sql, merchant, f).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?)
    }

    /// `EXPLAIN (ANALYZE, BUFFERS)` of the day at a glance as the store sends it, for the
    /// benchmark (whether it reads the heap).
    pub async fn explain_glance(&self, merchant: &MerchantId, day: NaiveDate) -> Result<Vec<String>, StoreError> {
        let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", crate::store_sql::DAY_GLANCE);
        let rows = sqlx::query(&sql).bind(merchant.as_str()).bind(day).bind("").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?)
    }

    /// The plan PostgreSQL keeps for each of the ledger's lookups by key once it stops
    /// planning them per call (its generic plan, made here on this database's current
    /// statistics), by name: what a batch's lookups cost as their tables grow.
    pub async fn explain_lookups(&self) -> Result<Vec<(&'static str, Vec<String>)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan").execute(&mut *tx).await?;
        let mut plans = Vec::with_capacity(LOOKUPS.len());
        for (name, sql) in LOOKUPS {
            sqlx::query(&format!("PREPARE lookup AS {sql}")).execute(&mut *tx).await?;
            let arrays = vec!["'{}'"; sql.matches("[]").count()].join(", ");
            let rows = sqlx::query(&format!("EXPLAIN EXECUTE lookup({arrays})")).fetch_all(&mut *tx).await?;
            plans.push((name, rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?));
            sqlx::query("DEALLOCATE lookup").execute(&mut *tx).await?;
        }
        tx.rollback().await?;
        Ok(plans)
    }
}

// ---- what PostgreSQL does its own way (the rest: crate::store_sql) ---------------------

/// An instant as PostgreSQL stores it: `timestamptz`.
pub(crate) fn bind_at(at: &DateTime<Utc>) -> DateTime<Utc> {
    *at
}

/// A UUID as PostgreSQL stores it: `uuid`.
pub(crate) fn bind_id(id: &Uuid) -> Uuid {
    *id
}

/// The stored answers of those of `event_ids` already processed (one array parameter).
async fn answered_rows(pool: &PgPool, event_ids: &[Uuid]) -> Result<HashMap<Uuid, StoredAnswer>, StoreError> {
    let rows = sqlx::query(BY_ANSWER).bind(event_ids).fetch_all(pool).await?;
    rows.iter().map(|r| Ok((r.uuid("event_id")?, rows::stored_answer_from(r)?))).collect()
}

/// A day as PostgreSQL stores it: `date`.
pub(crate) fn bind_day(day: &NaiveDate) -> NaiveDate {
    *day
}

/// The keys of `payers`' holds still open and created at or before `created_before`: one
/// range of the open holds' index per payer (`OFFSET 0` keeps PostgreSQL from flattening the
/// lateral into a join it could plan as a scan; `payer_id = ANY($1)` was planned as a walk of
/// every open hold created before then, filtered by payer).
async fn hold_keys_due(
    pool: &PgPool,
    payers: &[PayerId],
    created_before: DateTime<Utc>,
) -> Result<Vec<crate::model::HoldKey>, StoreError> {
    if payers.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT h.merchant_id, h.out_order_no FROM UNNEST($1::text[]) AS k(p) CROSS JOIN LATERAL \
         (SELECT merchant_id, out_order_no FROM holds WHERE status = 'CREATED' AND created_at <= $2 \
         AND payer_id = k.p OFFSET 0) h",
    )
    .bind(payers.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    .bind(created_before)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| rows::hold_key_from(r)).collect()
}

/// Everything a batch writes, in its transaction (whose commit runs the deferred check:
/// every posting has its transaction row).
async fn write_batch(tx: &mut Transaction<'static, Postgres>, batch: &CommitBatch) -> Result<(), StoreError> {
    orders_unchanged(tx, &batch.orders_read).await?;
    write_log(tx, &batch.events).await?;
    write_projections(tx, batch).await?;
    write_history(tx, &batch.history).await?;
    write_answers(tx, &batch.inbound, &batch.rejected).await?;
    write_repeats(tx, &batch.repeats).await?;
    write_transport(tx, &batch.offsets, &batch.outbox).await?;
    notify_decided(tx, batch).await
}

/// A transport's commit (one with outbox messages) names the events it answered on
/// [`crate::decided::DECIDED_CHANNEL`], delivered when it commits ([`crate::decided`]).
/// Rejections are kept by their place on the bus, not an event id: not named.
async fn notify_decided(tx: &mut Transaction<'static, Postgres>, batch: &CommitBatch) -> Result<(), StoreError> {
    if batch.outbox.is_empty() {
        return Ok(());
    }
    let answered = batch.inbound.iter().filter(|i| i.kind != "rejected").map(|i| i.event_id);
    let payloads = crate::decided::payloads(answered);
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
        .bind(crate::decided::DECIDED_CHANNEL)
        .bind(&payloads)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A listener on [`crate::decided::DECIDED_CHANNEL`].
async fn listen_decided(pool: &PgPool) -> Result<Option<crate::decided::DecidedListener>, StoreError> {
    Ok(Some(crate::decided::DecidedListener::connect(pool).await?))
}

/// Takes a transaction lock on each order `read` names, whether or not its row exists yet
/// (an advisory lock on a hash of its key, in hash order, so two commits never wait on each
/// other in a circle), then refuses the commit as a write conflict if one changed since it was
/// read: of two processes deciding one order at once, even one that did not exist, the second
/// decides again on what the first wrote. (SQLite needs no lock: one process decides there, its ledger stage and sweeper
/// under one ledger's lock.)
async fn orders_unchanged(
    tx: &mut Transaction<'static, Postgres>,
    read: &[(crate::model::OrderKey, Option<DateTime<Utc>>)],
) -> Result<(), StoreError> {
    if read.is_empty() {
        return Ok(());
    }
    let (merchants, orders): (Vec<&str>, Vec<&str>) = read.iter().map(|((m, o), _)| (m.as_str(), o.as_str())).unzip();
    sqlx::query(LOCK_ORDERS).bind(&merchants).bind(&orders).fetch_all(&mut **tx).await?;
    let rows = sqlx::query(BY_ORDER).bind(&merchants).bind(&orders).fetch_all(&mut **tx).await?;
    let mut now: HashMap<(String, String), i64> = HashMap::with_capacity(rows.len());
    for r in &rows {
        let at: DateTime<Utc> = r.try_get("updated_at")?;
        now.insert((r.text("merchant_id")?, r.text("out_trade_no")?), at.timestamp_micros());
    }
    for ((m, o), at) in read {
        if now.get(&(m.to_string(), o.to_string())).copied() != at.map(|a| a.timestamp_micros()) {
            return Err(StoreError::WriteConflict(format!("order {m}/{o} changed since it was read")));
        }
    }
    Ok(())
}

const LOCK_ORDERS: &str = "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT \
    hashtextextended(m || '/' || o, 0) AS h FROM UNNEST($1::text[], $2::text[]) AS k(m, o) ORDER BY h) locks";

/// Keeps rejected events.
async fn write_rejected(tx: &mut Transaction<'static, Postgres>, rejected: &[RejectedEvent]) -> Result<(), StoreError> {
    write_answers(tx, &[], rejected).await
}

/// Deletes these published outbox messages (one array parameter).
async fn forget_published(pool: &PgPool, ids: &[i64]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(ids).execute(pool).await?;
    Ok(())
}

/// Upserts what `captures` resolved to, one row per face code (the last given: PostgreSQL
/// refuses to update a row twice in one statement, as a device that sends its capture again
/// within a batch would ask).
async fn remember_captures(
    tx: &mut Transaction<'static, Postgres>,
    captures: &[crate::store::CaptureMemo],
) -> Result<(), StoreError> {
    let last: HashMap<&str, &crate::store::CaptureMemo> = captures.iter().map(|c| (c.face_code.as_str(), c)).collect();
    let captures: Vec<&crate::store::CaptureMemo> = last.into_values().collect();
    let captures = captures.as_slice();
    sqlx::query(UPSERT_CAPTURE_MEMOS)
        .bind(col(captures, |c| c.face_code.as_str()))
        .bind(col(captures, |c| c.payer_id.as_ref().map(|p| p.as_str())))
        .bind(col(captures, |c| c.rule.as_str()))
        .bind(col(captures, |c| c.captured_at))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

crate::store_sql::store_sql!(PgStore, db: Postgres, read: pool, write: pool, byte_order: " COLLATE \"C\"",
    now_ms: "(extract(epoch FROM clock_timestamp()) * 1000)::bigint", lock_payer: "SELECT pg_advisory_xact_lock(24, hashtext($1))");

crate::console_sessions::session_store!(PgStore, pool);
crate::credentials::credential_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow, pool, |n: usize| format!("${n}"));
