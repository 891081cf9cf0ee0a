//! The usual design of a payments ledger on PostgreSQL, for `facepay-bench ledger` to compare
//! against: one transaction per payment, `SELECT … FOR UPDATE` on the payer's balance row,
//! the checks in application code, then the inserts and updates. Workers run concurrently on
//! a pool, as a service would. Implemented only here, in the benchmark.

use std::time::Instant;

use chrono::{DateTime, Utc};
use facepay_domain::limits::PG_POOL_CONNECTIONS_MAX;
use facepay_domain::time::shanghai_day;
use facepay_ledger::{Command, CommandKind, Identity};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

const SCHEMA: &str = "
CREATE TABLE usual_accounts (account TEXT PRIMARY KEY, balance_fen BIGINT NOT NULL);
CREATE TABLE usual_payments (
    merchant_id TEXT NOT NULL, out_trade_no TEXT NOT NULL, payer_id TEXT NOT NULL,
    amount_fen BIGINT NOT NULL CHECK (amount_fen > 0), status TEXT NOT NULL, occurred_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (merchant_id, out_trade_no));
CREATE TABLE usual_postings (
    id BIGSERIAL PRIMARY KEY, merchant_id TEXT NOT NULL, out_trade_no TEXT NOT NULL,
    account TEXT NOT NULL, amount_fen BIGINT NOT NULL CHECK (amount_fen <> 0));
CREATE TABLE usual_daily (
    payer_id TEXT NOT NULL, day DATE NOT NULL, amount_fen BIGINT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (payer_id, day));
";

/// Payments per second through the usual design on `url` (an empty database), with
/// `payers` wallets funded like the ledger phase's; `commands` are the same payments.
pub async fn payments_per_s(url: &str, payers: usize, commands: &[Command]) -> anyhow::Result<f64> {
    let pool = PgPoolOptions::new().max_connections(PG_POOL_CONNECTIONS_MAX).connect(url).await?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    let accounts: Vec<String> = (0..payers).map(|p| format!("payer:u-{p:06}")).collect();
    sqlx::query("INSERT INTO usual_accounts SELECT a, 100000000 FROM UNNEST($1::text[]) a")
        .bind(&accounts)
        .execute(&pool)
        .await?;
    let workers = PG_POOL_CONNECTIONS_MAX as usize;
    let began = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (pool, mine) = (pool.clone(), commands.iter().skip(w).step_by(workers).cloned().collect::<Vec<_>>());
        tasks.spawn(async move {
            for cmd in &mine {
                pay(&pool, cmd).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(commands.len() as f64 / began.elapsed().as_secs_f64())
}

/// One payment, the usual way: lock the payer's balance row, check, write, commit.
async fn pay(pool: &PgPool, cmd: &Command) -> anyhow::Result<()> {
    let CommandKind::Pay { device, out_trade_no, amount, identity: Identity::Resolved { payer_id, .. }, .. } =
        &cmd.kind
    else {
        anyhow::bail!("the benchmark's payments all have a payer");
    };
    let (merchant, order, amount_fen) = (device.merchant_id.as_str(), out_trade_no.as_str(), amount.fen());
    let payer_account = format!("payer:{payer_id}");
    let mut tx = pool.begin().await?;
    let seen = sqlx::query("SELECT status FROM usual_payments WHERE merchant_id = $1 AND out_trade_no = $2")
        .bind(merchant)
        .bind(order)
        .fetch_optional(&mut *tx)
        .await?;
    if seen.is_some() {
        return Ok(tx.commit().await?); // an idempotent retry: answered from the stored row
    }
    let balance: i64 = sqlx::query("SELECT balance_fen FROM usual_accounts WHERE account = $1 FOR UPDATE")
        .bind(&payer_account)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    let day = shanghai_day(cmd.accepted_at);
    let status = if balance >= amount_fen && amount_fen <= 100_000 { "PAID" } else { "DECLINED" };
    insert_payment(&mut tx, merchant, order, payer_id.as_str(), amount_fen, status, cmd.accepted_at).await?;
    if status == "PAID" {
        post(&mut tx, merchant, order, &payer_account, &format!("merchant:{merchant}"), amount_fen).await?;
        sqlx::query(
            "INSERT INTO usual_daily VALUES ($1, $2, $3, 1) ON CONFLICT (payer_id, day) \
             DO UPDATE SET amount_fen = usual_daily.amount_fen + $3, count = usual_daily.count + 1",
        )
        .bind(payer_id.as_str())
        .bind(day)
        .bind(amount_fen)
        .execute(&mut *tx)
        .await?;
    }
    Ok(tx.commit().await?)
}

async fn insert_payment(
    tx: &mut sqlx::PgConnection,
    merchant: &str,
    order: &str,
    payer: &str,
    amount_fen: i64,
    status: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO usual_payments VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(merchant)
        .bind(order)
        .bind(payer)
        .bind(amount_fen)
        .bind(status)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Two postings and the two balance updates (the merchant's row is shared by all its
/// payments: in this design every payment of a merchant queues on it).
async fn post(
    tx: &mut sqlx::PgConnection,
    merchant: &str,
    order: &str,
    from: &str,
    to: &str,
    amount_fen: i64,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO usual_postings (merchant_id, out_trade_no, account, amount_fen) VALUES ($1, $2, $3, $4), ($1, $2, $5, $6)")
        .bind(merchant)
        .bind(order)
        .bind(from)
        .bind(-amount_fen)
        .bind(to)
        .bind(amount_fen)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE usual_accounts SET balance_fen = balance_fen - $2 WHERE account = $1")
        .bind(from)
        .bind(amount_fen)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO usual_accounts VALUES ($1, $2) ON CONFLICT (account) \
         DO UPDATE SET balance_fen = usual_accounts.balance_fen + $2",
    )
    .bind(to)
    .bind(amount_fen)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
