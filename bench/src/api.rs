//! `facepay-bench api`: the read API under load, with authentication on, over PostgreSQL
//! holding a million orders.
//!
//! A fresh database on the given server is filled with `orders` orders (and their history
//! rows) spread over `merchants` merchants, straight through SQL (the read path is what is
//! measured, not the ledger's write path). The API is served in this process on a loopback
//! port; `connections` clients, each with its own merchant key (as a fleet's devices and
//! back offices each hold theirs), send requests back to back for `seconds` per phase:
//! 1. `GET /v1/merchants/{m}/orders/{no}` for random orders of their merchant;
//! 2. `GET /v1/merchants/{m}/transactions?limit=20`, the newest page of their merchant's
//!    history;
//! 3. the console's pages (issue 26), each client signed in with its key (a session cookie):
//!    the transactions page (the newest 50 rows, rendered), an order's page, and a day at a
//!    glance (`/console/merchants/{m}?date=`, a day's attempts counted from the history's
//!    covering (merchant, day) index);
//! 4. the console's CSV export of one merchant's day of `csv_rows` attempts, once
//!    ([`crate::csv_export`]);
//! 5. every other console page, each from clients signed in with a key of its role, over
//!    members, settlement, devices, answers, runs, breaks, the audit log and rejected events
//!    in a fleet's proportions ([`crate::console_pages`]).
//!
//! After seeding, `VACUUM (ANALYZE)` stands for autovacuum's pass over the new rows (the
//! history's insert threshold is 1 %, migration 0023), so the glance's index-only scan reads
//! no heap; its `EXPLAIN (ANALYZE, BUFFERS)` is in the report.
//!
//! The report gives requests/s and latency percentiles per phase, counts any answer that is
//! not 200 (there must be none), and the `EXPLAIN` of the history query: an index scan, not
//! a sequential scan. The load generator shares the machine's cores with the server, so the
//! figures are a lower bound of what the server alone would do.

use std::time::{Duration, Instant};

use facepay_domain::auth::Role;
use facepay_domain::{DeviceId, DeviceRef, MerchantId, StoreId};
use facepay_ingest::PipelineConfig;
use facepay_ledger::store::HistoryFilter;
use facepay_ledger::{LedgerStore, PgStore, Stores};
use rand::Rng;
use serde::Serialize;
use sqlx::Connection;

use facepay::app::App;
use facepay_api::auth::{Actor, Auth, NewKey};

use crate::load::{phase, Client, PhaseReport};
use crate::pipeline::{drop_database, fresh_database};

/// What `facepay-bench api` is asked to do.
#[derive(Debug, Clone)]
pub struct ApiBenchOptions {
    /// The PostgreSQL server (a role that may CREATE DATABASE).
    pub postgres: String,
    pub orders: u64,
    pub merchants: u64,
    pub connections: usize,
    pub seconds: u64,
    /// Attempts of the one merchant-day the CSV export phase downloads (0: no such phase).
    pub csv_rows: u64,
    /// Serve for an outside load generator instead of running the phases: write
    /// `DIR/clients.lua` (the merchants and their keys) and `DIR/base` (the URL), then serve
    /// until ctrl-c (`scripts/bench-api-wrk.sh` drives wrk against it).
    pub external: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiBenchReport {
    pub orders: u64,
    pub merchants: u64,
    pub connections: usize,
    pub seconds_per_phase: u64,
    pub seed_s: f64,
    /// `None` when an outside load generator measured the phases (`external`).
    pub order_lookup: Option<PhaseReport>,
    /// Order lookups per database query in the lookup phase: how many waiting lookups the
    /// API read together (see `facepay_ledger::lookup`).
    pub lookups_per_query: f64,
    pub history_page: Option<PhaseReport>,
    /// The console's pages, rendered (target: p99 ≤ 50 ms each).
    pub console_transactions: Option<PhaseReport>,
    pub console_order: Option<PhaseReport>,
    pub console_overview: Option<PhaseReport>,
    /// The console's CSV export of one merchant's day of `csv_rows` attempts.
    pub csv_export: Option<crate::csv_export::CsvExportReport>,
    /// Every other console page, by name (target: p99 ≤ 50 ms each).
    pub console_pages: std::collections::BTreeMap<String, PhaseReport>,
    /// `EXPLAIN (ANALYZE, BUFFERS)` of the day at a glance for one merchant's day.
    pub glance_plan: Vec<String>,
    /// True when the glance is an index-only scan that fetched no heap row.
    pub glance_index_only: bool,
    /// `EXPLAIN` of the history page query (as the store sends it), first page and by cursor.
    pub history_plan: Vec<String>,
    /// True when neither plan has a sequential scan.
    pub history_uses_index: bool,
}

pub async fn run(opts: &ApiBenchOptions) -> anyhow::Result<ApiBenchReport> {
    let (url, db) = fresh_database(&opts.postgres, "facepay_bench_api").await?;
    let report = measure(opts, &url).await;
    drop_database(&opts.postgres, &db).await?;
    report
}

async fn measure(opts: &ApiBenchOptions, url: &str) -> anyhow::Result<ApiBenchReport> {
    let pg = PgStore::open(url).await?;
    let stores = Stores::of(pg.clone());
    let store = stores.ledger.clone();
    let started = Instant::now();
    let merchants = seed(store.as_ref(), url, opts).await?;
    let big = MerchantId::parse("1999999999")?;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    if opts.csv_rows > 0 {
        crate::csv_export::seed_day(store.as_ref(), &mut conn, &big, opts.csv_rows).await?;
    }
    crate::console_pages::seed(&mut conn, opts.orders, opts.merchants).await?;
    sqlx::query("VACUUM (ANALYZE)").execute(&mut conn).await?;
    let seed_s = started.elapsed().as_secs_f64();
    let config = PipelineConfig { sweep_interval: Duration::ZERO, ..PipelineConfig::default() };
    let app = App::start(stores, config).await?;
    let auth = app.auth.clone();
    let mut keys = Vec::with_capacity(opts.connections);
    for c in 0..opts.connections {
        keys.push((
            merchants[c % merchants.len()].clone(),
            merchant_key(&auth, &merchants[c % merchants.len()]).await?,
        ));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let state = app.http_state();
    let lookups = state.orders.clone();
    let per_merchant = opts.orders / opts.merchants.max(1);
    let bearer: Vec<Client> =
        keys.iter().map(|(m, k)| (m.clone(), (hyper::header::AUTHORIZATION, format!("Bearer {k}")))).collect();
    let signed_in = sign_in(&state, &keys).await?;
    let (mut finance, mut admin) = (Vec::new(), Vec::new());
    for _ in 0..opts.connections {
        finance.push((merchants[0].clone(), role_key(&auth, Role::Finance).await?));
        admin.push((merchants[0].clone(), role_key(&auth, Role::Admin).await?));
    }
    let (finance, admin) = (sign_in(&state, &finance).await?, sign_in(&state, &admin).await?);
    // The CSV phase's merchant, signed in (it exists only with a CSV phase).
    let big_cookie = match opts.csv_rows {
        0 => String::new(),
        _ => {
            let key = merchant_key(&auth, &big).await?;
            let key_id = facepay_domain::auth::ApiToken::parse(&key).map_err(|e| anyhow::anyhow!("{e}"))?.key_id;
            format!("{}={}", facepay_api::console::session::SESSION_COOKIE, state.console.start(key_id).await?.0)
        }
    };
    let server = tokio::spawn(async move { axum::serve(listener, facepay_api::server::router(state)).await });
    let (mut csv_export, mut console_pages) = (None, Default::default());
    let (mut order_lookup, mut history_page, mut console) = (None, None, [None, None, None]);
    match &opts.external {
        Some(dir) => serve_outside_load(dir, &base, &keys, per_merchant).await?,
        None => {
            let order_no =
                move |rng: &mut rand_chacha::ChaCha8Rng| format!("B{:09}", rng.random_range(0..per_merchant));
            let s = opts.seconds;
            order_lookup =
                Some(phase(&base, &bearer, s, move |m, r| format!("/v1/merchants/{m}/orders/{}", order_no(r))).await?);
            history_page =
                Some(phase(&base, &bearer, s, |m, _| format!("/v1/merchants/{m}/transactions?limit=20")).await?);
            let days = (opts.orders / 86_400).max(1);
            console = [
                Some(phase(&base, &signed_in, s, |m, _| format!("/console/merchants/{m}/transactions")).await?),
                Some(
                    phase(&base, &signed_in, s, move |m, r| format!("/console/merchants/{m}/orders/{}", order_no(r)))
                        .await?,
                ),
                Some(
                    phase(&base, &signed_in, s, move |m, r| {
                        format!("/console/merchants/{m}?date=2026-03-{:02}", 2 + r.random_range(0..days))
                    })
                    .await?,
                ),
            ];
            if opts.csv_rows > 0 {
                csv_export = Some(crate::csv_export::measure(&base, &big_cookie, &big, opts.csv_rows).await?);
            }
            let roles = crate::console_pages::Roles { merchant: &signed_in, finance: &finance, admin: &admin };
            console_pages = crate::console_pages::measure(&base, roles, s).await?;
        }
    }
    let [console_transactions, console_order, console_overview] = console;
    // Only the order phase looks orders up.
    let (looked_up, queries) = lookups.stats();
    let lookups_per_query = looked_up as f64 / queries.max(1) as f64;
    server.abort();
    let history_plan = explain(&pg, &merchants[0]).await?;
    let history_uses_index = !history_plan.iter().any(|l| l.contains("Seq Scan"));
    let glance_plan =
        pg.explain_glance(&merchants[0], chrono::NaiveDate::from_ymd_opt(2026, 3, 3).unwrap_or_default()).await?;
    let glance_index_only = glance_plan.iter().any(|l| l.contains("Index Only Scan"))
        && glance_plan.iter().any(|l| l.trim() == "Heap Fetches: 0");
    drop(app);
    Ok(ApiBenchReport {
        orders: opts.orders,
        merchants: opts.merchants,
        connections: opts.connections,
        seconds_per_phase: opts.seconds,
        seed_s,
        order_lookup,
        lookups_per_query,
        history_page,
        console_transactions,
        console_order,
        console_overview,
        csv_export,
        console_pages,
        glance_plan,
        glance_index_only,
        history_plan,
        history_uses_index,
    })
}

/// Registers the merchants and writes `orders` paid orders with their history rows.
async fn seed(store: &dyn LedgerStore, url: &str, opts: &ApiBenchOptions) -> anyhow::Result<Vec<MerchantId>> {
    let merchants: Vec<MerchantId> =
        (0..opts.merchants.max(1)).map(|m| MerchantId::parse(format!("19{:08}", m + 1))).collect::<Result<_, _>>()?;
    for m in &merchants {
        store.register_merchant(m, "bench").await?;
        let device = DeviceRef {
            merchant_id: m.clone(),
            store_id: StoreId::parse("S01")?,
            device_id: DeviceId::parse(format!("DEV-{m}"))?,
        };
        store.register_device(&device).await?;
    }
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let n = i64::try_from(opts.orders)?;
    let m = i64::try_from(opts.merchants.max(1))?;
    // Order i belongs to merchant i % m, numbered i / m within it; one a minute from a start.
    let common = "FROM generate_series(0, $1 - 1) AS i, \
        LATERAL (SELECT '19' || lpad(((i % $2) + 1)::text, 8, '0') AS merchant_id, \
                        'B' || lpad((i / $2)::text, 9, '0') AS out_trade_no, \
                        100 + (i % 90000) AS amount_fen, \
                        'u-' || lpad((i % 100000)::text, 6, '0') AS payer_id, \
                        timestamptz '2026-03-02 00:00:00+00' + (i * interval '1 second') AS at) o";
    sqlx::query(&format!(
        "INSERT INTO orders (merchant_id, out_trade_no, amount_fen, status, payer_id, face_code, member_quick_pay, \
         store_id, device_id, created_at, updated_at) SELECT merchant_id, out_trade_no, amount_fen, 'PAID', payer_id, \
         lpad(i::text, 18, '1'), false, 'S01', 'DEV-' || merchant_id, at, at {common}"
    ))
    .bind(n)
    .bind(m)
    .execute(&mut conn)
    .await?;
    sqlx::query(&format!(
        "INSERT INTO history (event_id, merchant_id, out_trade_no, amount_fen, status, payer_id, member_quick_pay, \
         store_id, device_id, occurred_at, day) SELECT gen_random_uuid(), merchant_id, out_trade_no, amount_fen, \
         'PAID', payer_id, false, 'S01', 'DEV-' || merchant_id, at, (at AT TIME ZONE 'Asia/Shanghai')::date {common}"
    ))
    .bind(n)
    .bind(m)
    .execute(&mut conn)
    .await?;
    Ok(merchants)
}

/// Tells an outside load generator where to send what, and serves until ctrl-c.
async fn serve_outside_load(
    dir: &std::path::Path,
    base: &str,
    keys: &[(MerchantId, String)],
    per_merchant: u64,
) -> anyhow::Result<()> {
    use std::fmt::Write;
    let mut lua = format!("per_merchant = {per_merchant}\nclients = {{\n");
    for (merchant, key) in keys {
        writeln!(lua, "  {{ \"{merchant}\", \"{key}\" }},")?;
    }
    lua.push_str("}\n");
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("clients.lua"), lua)?;
    // Last: its presence says the server is ready.
    std::fs::write(dir.join("base"), base)?;
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Each client's key exchanged for a console session (a cookie), as a sign-in does.
async fn sign_in(state: &facepay_api::state::AppState, keys: &[(MerchantId, String)]) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(keys.len());
    for (m, k) in keys {
        let key_id = facepay_domain::auth::ApiToken::parse(k).map_err(|e| anyhow::anyhow!("{e}"))?.key_id;
        let (session, _) = state.console.start(key_id).await?;
        let cookie = format!("{}={session}", facepay_api::console::session::SESSION_COOKIE);
        clients.push((m.clone(), (hyper::header::COOKIE, cookie)));
    }
    Ok(clients)
}

/// A finance or admin key.
async fn role_key(auth: &Auth, role: Role) -> anyhow::Result<String> {
    let spec = NewKey {
        role,
        merchant_id: None,
        store_id: None,
        device_id: None,
        label: "bench".into(),
        expires_in_days: None,
    };
    Ok(auth.create_key(spec, &Actor::cli()).await.map_err(|e| anyhow::anyhow!("{e}"))?.1)
}

async fn merchant_key(auth: &Auth, merchant: &MerchantId) -> anyhow::Result<String> {
    let spec = NewKey {
        role: Role::Merchant,
        merchant_id: Some(merchant.clone()),
        store_id: None,
        device_id: None,
        label: "bench".into(),
        expires_in_days: None,
    };
    Ok(auth.create_key(spec, &Actor::cli()).await.map_err(|e| anyhow::anyhow!("{e}"))?.1)
}

/// The plans of the history page query as the store sends it, first page and by cursor.
async fn explain(store: &PgStore, merchant: &MerchantId) -> anyhow::Result<Vec<String>> {
    let first = HistoryFilter { limit: 20, ..HistoryFilter::default() };
    let next = HistoryFilter { before_id: Some(500_000), ..first.clone() };
    let mut lines = store.explain_history(merchant, &first).await?;
    lines.extend(store.explain_history(merchant, &next).await?);
    Ok(lines)
}
