//! The console's other pages at scale (issue 26: every page p99 ≤ 50 ms server time with
//! 1 000 000 orders on PostgreSQL), for `facepay-bench api`.
//!
//! Beside the orders [`crate::api`] writes, [`seed`] fills what these pages read, in the
//! proportions of a fleet that took those orders (all straight through SQL, as the orders):
//! - members: one card in ten orders ([`MEMBERS_PER_ORDER`]), each with its last visit;
//! - settlement: each merchant's days, summed from its orders;
//! - devices: [`DEVICES_PER_MERCHANT`] per merchant, and one answered event per order in the
//!   answers (`inbound`), spread over the `orders` seconds up to now (the fleet page counts
//!   the last hour's refusals: one answer in a hundred is refused);
//! - reconciliation: one run per day of orders with one break in a hundred orders
//!   ([`BREAKS_PER_ORDER`]), a third of them resolved;
//! - the audit log and the rejected events: one in ten orders each;
//! - device keys: one per device (the admin's keys page lists them).
//!
//! [`measure`] then sends each page for `seconds` from `connections` clients, each signed in
//! with a key of the page's role: the merchant's members, settlement and fleet pages, the
//! finance runs, breaks (all, and one merchant's unresolved), rejected events, audit log
//! and merchants, and the admin's keys.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use crate::load::{phase, Client, PhaseReport};

/// One member card per this many orders.
pub const MEMBERS_PER_ORDER: i64 = 10;
/// The devices each merchant runs.
pub const DEVICES_PER_MERCHANT: i64 = 200;
/// One reconciliation break per this many orders.
pub const BREAKS_PER_ORDER: i64 = 100;
/// One audit entry, and one rejected event, per this many orders.
pub const LOG_ROWS_PER_ORDER: i64 = 10;

/// Fills the pages' tables for `orders` orders of `merchants` merchants (already written).
pub async fn seed(conn: &mut PgConnection, orders: u64, merchants: u64) -> anyhow::Result<()> {
    let (n, m) = (i64::try_from(orders)?, i64::try_from(merchants.max(1))?);
    let merchant = "'19' || lpad(((i % $2) + 1)::text, 8, '0')";
    exec(
        conn,
        n,
        m,
        &format!(
            "INSERT INTO members (merchant_id, payer_id, card_code, channel, opened_at, last_visit_at) \
         SELECT {merchant}, 'u-' || lpad(i::text, 6, '0'), 'C' || i, 'card_package', \
         timestamptz '2026-03-01 00:00:00+00' + i * interval '1 second', \
         timestamptz '2026-03-05 00:00:00+00' + i * interval '1 second' \
         FROM generate_series(0, $1 / {MEMBERS_PER_ORDER} - 1) AS i WHERE $2 > 0"
        ),
    )
    .await?;
    exec(conn, n, m, "INSERT INTO settlement (merchant_id, day, gross_fen, refunds_fen, fees_fen, net_fen) \
         SELECT merchant_id, (created_at AT TIME ZONE 'Asia/Shanghai')::date, SUM(amount_fen), 0, SUM(amount_fen) / 200, \
         SUM(amount_fen) - SUM(amount_fen) / 200 FROM orders WHERE $1 > 0 AND $2 > 0 GROUP BY 1, 2")
    .await?;
    seed_fleet(conn, n, m).await?;
    seed_recon(conn, n, m).await?;
    exec(
        conn,
        n,
        m,
        &format!(
            "INSERT INTO audit_log (at, principal, role, action, subject, detail) \
         SELECT 1772409600000 + i * 1000, 'k_bench' || (i % 50), 'admin', 'key.created', {merchant}, '{{}}' \
         FROM generate_series(0, $1 / {LOG_ROWS_PER_ORDER} - 1) AS i"
        ),
    )
    .await?;
    exec(
        conn,
        n,
        m,
        &format!(
            "INSERT INTO rejected_events (received_at, source, event_id, type, reason_code, field, message, raw) \
         SELECT timestamptz '2026-03-02 00:00:00+00' + i * interval '10 second', 'http', gen_random_uuid(), \
         'payment_requested', 'invalid', 'amount', 'amount: not a positive amount of fen', \
         convert_to('{{\"merchant\":\"' || {merchant} || '\"}}', 'UTF8') \
         FROM generate_series(0, $1 / {LOG_ROWS_PER_ORDER} - 1) AS i"
        ),
    )
    .await?;
    Ok(())
}

/// Runs `sql` with $1 the orders and $2 the merchants.
async fn exec(conn: &mut PgConnection, n: i64, m: i64, sql: &str) -> anyhow::Result<()> {
    sqlx::query(sql).bind(n).bind(m).execute(conn).await?;
    Ok(())
}

/// The merchants' devices, a key for each, and one answer per order spread up to now.
async fn seed_fleet(conn: &mut PgConnection, n: i64, m: i64) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "INSERT INTO devices (device_id, merchant_id, store_id, created_at) \
         SELECT 'D' || right(merchant_id, 4) || '-' || lpad(d::text, 3, '0'), merchant_id, \
         'S' || lpad((d % 10)::text, 2, '0'), now() FROM merchants, generate_series(0, {DEVICES_PER_MERCHANT} - 1) AS d \
         WHERE merchant_id LIKE '19%'"
    ))
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO api_keys (key_id, role, merchant_id, store_id, device_id, label, created_by, secret_hash, \
         created_at, expires_at) SELECT left(md5(device_id), 24), 'device', merchant_id, store_id, device_id, 'bench', \
         'bench', md5(device_id) || md5(device_id), 1772409600000, 1899999999000 FROM devices \
         WHERE device_id LIKE 'D%'",
    )
    .execute(&mut *conn)
    .await?;
    // Order i's answer came from device (i / m) % DEVICES_PER_MERCHANT of its merchant, i seconds
    // after the first, the last one now.
    sqlx::query(&format!(
        "INSERT INTO inbound (event_id, type, outcome, processed_at, device) \
         SELECT gen_random_uuid(), 'payment_requested', \
         CASE WHEN i % 100 = 0 THEN '{{\"type\":\"refused\",\"code\":\"CAPTURE_USED\"}}' \
              ELSE '{{\"type\":\"payment_result\",\"status\":\"PAID\"}}' END, \
         now() - ($1 - i) * interval '1 second', \
         d.merchant_id || '/' || d.store_id || '/' || d.device_id \
         FROM generate_series(0, $1 - 1) AS i \
         JOIN devices d ON d.device_id = 'D' || right(lpad(((i % $2) + 1)::text, 8, '0'), 4) || '-' \
              || lpad(((i / $2) % {DEVICES_PER_MERCHANT})::text, 3, '0')"
    ))
    .bind(n)
    .bind(m)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One import and run per day of orders, and their breaks, a third resolved.
async fn seed_recon(conn: &mut PgConnection, n: i64, m: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO recon_imports (import_id, account, day, version, content_sha256, layout, file_name, line_count, \
         settle_fen, refund_fen, fee_mfen, imported_at) \
         SELECT gen_random_uuid(), 'bench', day, 1, md5(day::text) || md5(day::text || 'x'), 'all', 'bill.csv', 0, 0, 0, \
         0, now() FROM (SELECT DISTINCT day FROM settlement) d",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO recon_runs (run_id, import_id, day, started_at, finished_at, bill_lines, breaks, report) \
         SELECT gen_random_uuid(), import_id, day, now(), now(), 0, 0, \
         '{\"bill_lines\":0,\"ledger_entries\":0,\"breaks\":0,\"totals\":{},\"merchants\":{}}'::jsonb \
         FROM recon_imports WHERE account = 'bench'",
    )
    .execute(&mut *conn)
    .await?;
    let classes = "(ARRAY['missing_in_ledger','missing_in_bill','amount_mismatch','fee_mismatch',\
                   'status_mismatch','duplicate_line'])[1 + i % 6]";
    sqlx::query(&format!(
        "INSERT INTO recon_breaks (break_id, run_id, day, merchant_id, class, kind, number, line_no, bill_amount_fen, \
         ledger_amount_fen, detail, event_id, recorded_at) \
         SELECT gen_random_uuid(), r.run_id, r.day, '19' || lpad(((i % $2) + 1)::text, 8, '0'), {classes}, 'P', \
         'B' || lpad(i::text, 9, '0'), i, 100 + i % 1000, 100 + i % 999, 'bench', gen_random_uuid(), now() \
         FROM generate_series(0, $1 / {BREAKS_PER_ORDER} - 1) AS i \
         JOIN (SELECT run_id, day, row_number() OVER (ORDER BY day) - 1 AS k, COUNT(*) OVER () AS runs \
               FROM recon_runs) r ON r.k = i % r.runs"
    ))
    .bind(n)
    .bind(m)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO recon_resolutions (break_id, action, resolved_by, reason, resolved_at, event_id) \
         SELECT break_id, 'accepted', 'bench', 'bench', now(), gen_random_uuid() FROM recon_breaks \
         WHERE line_no % 3 = 0",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The clients of each role: merchants' (each its own merchant), finance's and admins'.
pub struct Roles<'a> {
    pub merchant: &'a [Client],
    pub finance: &'a [Client],
    pub admin: &'a [Client],
}

/// Each page's figures, by the page's name.
pub async fn measure(base: &str, roles: Roles<'_>, seconds: u64) -> anyhow::Result<BTreeMap<String, PhaseReport>> {
    let mut pages = BTreeMap::new();
    let merchant_pages = [("members", "members"), ("settlement", "settlement"), ("fleet", "fleet")];
    for (name, page) in merchant_pages {
        let report = phase(base, roles.merchant, seconds, move |m, _| format!("/console/merchants/{m}/{page}")).await?;
        pages.insert(name.to_string(), report);
    }
    let finance_pages = [
        ("runs", "/console/finance/runs"),
        ("breaks", "/console/finance/breaks"),
        ("rejected", "/console/rejected"),
        ("audit", "/console/audit"),
        ("merchants", "/console/merchants"),
    ];
    for (name, path) in finance_pages {
        pages.insert(name.to_string(), phase(base, roles.finance, seconds, move |_, _| path.to_string()).await?);
    }
    // One merchant's unresolved breaks of one class: the filters a finance team uses most.
    let filtered = phase(base, roles.finance, seconds, |_, r| {
        use rand::Rng;
        let merchant = format!("19{:08}", 1 + r.random_range(0..10));
        format!("/console/finance/breaks?merchant_id={merchant}&class=amount_mismatch&unresolved=true")
    })
    .await?;
    pages.insert("breaks_filtered".to_string(), filtered);
    pages.insert("keys".to_string(), phase(base, roles.admin, seconds, |_, _| "/console/admin/keys".into()).await?);
    Ok(pages)
}
