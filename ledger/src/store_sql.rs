//! The SQL both stores run, written once: [`store_sql!`] implements every role trait of
//! [`crate::store`] for a backend, and each backend keeps only what its database truly does
//! differently (bulk writes and list reads, the lease on the database's clock, the
//! invariants' JSON functions, reading a row).
//!
//! The seam, at the macro's call site:
//! - `read` and `write`: the pool fields that read and write (SQLite: a reader pool and
//!   its one writer; PostgreSQL: one pool for both);
//! - `byte_order`: the collation that sorts text by bytes, as SQLite does by default;
//! - `now_ms`: the database's clock in Unix milliseconds, as SQL (the outbox relay's lease);
//! - `lock_payer`: a statement that holds payer `$1` until the write transaction commits
//!   (SQLite: a no-op, its write transaction holds the whole database; PostgreSQL: an
//!   advisory transaction lock, which also covers a payer with no row yet);
//! - `db`: the sqlx database;
//! - functions of the same name in the calling module: `bind_at`, `bind_day` and `bind_id`
//!   (how an instant, a day and a UUID are bound), `load_keys`, `load_everything`,
//!   `answered_rows`, `hold_keys_due`, `write_batch`, `write_rejected`, `write_log`,
//!   `remember_captures`, `forget_published`, `listen_decided`; and the const `INVARIANTS_SQL`.
//!
//! SQL text uses `$n` placeholders: PostgreSQL's, which SQLite reads as numbered parameters.

/// Orders unpaid since before $1, then holds open since before $2, oldest first, each kind
/// up to $3 (the caller keeps the first $3). Partial indexes of migration 0009.
pub(crate) const DUE: &str = "SELECT * FROM (SELECT 'order' AS kind, merchant_id, out_trade_no AS no, created_at \
     FROM orders WHERE status = 'DECLINED' AND created_at <= $1 ORDER BY created_at LIMIT $3) o \
     UNION ALL SELECT * FROM (SELECT 'hold' AS kind, merchant_id, out_order_no AS no, created_at FROM holds \
     WHERE status = 'CREATED' AND created_at <= $2 ORDER BY created_at LIMIT $3) h LIMIT $3";

/// A page of a merchant's history under `f`, newest first: only the filters `f` sets, so
/// that each shape of the query gets its own plan (an index range, not a scan).
pub(crate) fn history_sql(f: &crate::store::HistoryFilter) -> String {
    let mut sql = String::from("SELECT * FROM history WHERE merchant_id = $1");
    let mut n = 1;
    let mut and = |column: &str, op: &str| {
        n += 1;
        sql.push_str(&format!(" AND {column} {op} ${n}"));
    };
    if f.day.is_some() {
        and("day", "=");
    }
    if f.status.is_some() {
        and("status", "=");
    }
    if f.before_id.is_some() {
        and("id", "<");
    }
    if f.store_id.is_some() {
        and("store_id", "=");
    }
    if f.device_id.is_some() {
        and("device_id", "=");
    }
    if f.out_trade_no.is_some() {
        and("out_trade_no", "=");
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
    sql
}

/// Implements the role traits of [`crate::store`] for `$store` (see the module's seam).
macro_rules! store_sql {
    ($store:ty, db: $db:ty, read: $read:ident, write: $write:ident, byte_order: $byte_order:literal,
     now_ms: $now_ms:literal, lock_payer: $lock_payer:literal) => {
        $crate::store_sql::writer_sql!($store, db: $db, read: $read, write: $write);
        $crate::store_sql::reader_sql!($store, db: $db, read: $read, byte_order: $byte_order);
        $crate::store_sql::registry_sql!($store, write: $write);
        $crate::store_sql::transport_sql!($store, write: $write, now_ms: $now_ms);
        $crate::store_sql::faces_sql!($store, read: $read, write: $write, byte_order: $byte_order,
            lock_payer: $lock_payer);
    };
}

/// [`crate::store::LedgerWriter`] and [`crate::store::CeilingWriter`].
macro_rules! writer_sql {
    ($store:ty, db: $db:ty, read: $read:ident, write: $write:ident) => {
        /// Counts the batch's repeated events ([`crate::store_sql::NOTE_REPEAT`]).
        async fn write_repeats(
            tx: &mut sqlx::Transaction<'static, $db>,
            repeats: &[$crate::store::Repeat],
        ) -> Result<(), $crate::StoreError> {
            for r in repeats {
                sqlx::query($crate::store_sql::NOTE_REPEAT)
                    .bind(bind_id(&r.event_id))
                    .bind(bind_at(&r.at))
                    .bind(r.device.as_str())
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(())
        }

        #[async_trait::async_trait]
        impl $crate::store::LedgerWriter for $store {
            async fn load(&self, keys: &$crate::model::Keys) -> Result<$crate::model::LedgerState, $crate::StoreError> {
                load_keys(&self.$write, keys).await
            }

            async fn answered(
                &self,
                event_ids: &[uuid::Uuid],
            ) -> Result<std::collections::HashMap<uuid::Uuid, $crate::store::StoredAnswer>, $crate::StoreError> {
                answered_rows(&self.$write, event_ids).await
            }

            async fn commit(&self, batch: &$crate::store::CommitBatch) -> Result<(), $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                write_batch(&mut tx, batch).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn reject(&self, rejected: &$crate::store::RejectedEvent) -> Result<(), $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                write_rejected(&mut tx, std::slice::from_ref(rejected)).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn note_repeat(
                &self,
                event_id: uuid::Uuid,
                device: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<bool, $crate::StoreError> {
                let done = sqlx::query($crate::store_sql::NOTE_REPEAT)
                    .bind(bind_id(&event_id))
                    .bind(bind_at(&at))
                    .bind(device)
                    .execute(&self.$write)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn log_position(&self) -> Result<i64, $crate::StoreError> {
                Ok(sqlx::query_scalar("SELECT COALESCE(max(seq), 0) FROM events").fetch_one(&self.$write).await?)
            }

            async fn due(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<Vec<$crate::model::Due>, $crate::StoreError> {
                use facepay_domain::limits::{HOLD_EXPIRY_MS, ORDER_REVOKE_AFTER_MS};
                let orders_before = now - chrono::Duration::milliseconds(ORDER_REVOKE_AFTER_MS);
                let holds_before = now - chrono::Duration::milliseconds(HOLD_EXPIRY_MS);
                let rows = sqlx::query($crate::store_sql::DUE)
                    .bind(bind_at(&orders_before))
                    .bind(bind_at(&holds_before))
                    .bind(i64::from(limit))
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| $crate::rows::due_from(r)).collect()
            }

            async fn holds_due(
                &self,
                payers: &[facepay_domain::PayerId],
                created_before: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::model::HoldKey>, $crate::StoreError> {
                // The writer: it must see the last batch's commit.
                hold_keys_due(&self.$write, payers, created_before).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::CeilingWriter for $store {
            async fn commit_raw(&self, batch: &$crate::store::CommitBatch) -> Result<(), $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                write_log(&mut tx, &batch.events).await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

/// [`crate::store::LogReader`] and [`crate::store::ProjectionReader`].
macro_rules! reader_sql {
    ($store:ty, db: $db:ty, read: $read:ident, byte_order: $byte_order:literal) => {
        impl $store {
            /// The history page query of `merchant` under `f` (its SQL: [`history_sql`]), bound.
            ///
            /// [`history_sql`]: $crate::store_sql::history_sql
            fn history_query<'q>(
                sql: &'q str,
                merchant: &'q facepay_domain::MerchantId,
                f: &'q $crate::store::HistoryFilter,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                let mut q = sqlx::query(sql).bind(merchant.as_str());
                if let Some(d) = f.day {
                    q = q.bind(bind_day(&d));
                }
                if let Some(s) = f.status {
                    q = q.bind(s.as_str());
                }
                if let Some(before) = f.before_id {
                    q = q.bind(before);
                }
                if let Some(store) = &f.store_id {
                    q = q.bind(store.as_str());
                }
                if let Some(device) = &f.device_id {
                    q = q.bind(device.as_str());
                }
                if let Some(order) = &f.out_trade_no {
                    q = q.bind(order.as_str());
                }
                q.bind(i64::from(f.limit))
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::LogReader for $store {
            async fn load_all(&self) -> Result<$crate::model::LedgerState, $crate::StoreError> {
                load_everything(&self.$read).await
            }

            async fn history_all(&self) -> Result<Vec<$crate::store::HistoryRow>, $crate::StoreError> {
                let rows = sqlx::query("SELECT * FROM history ORDER BY id").fetch_all(&self.$read).await?;
                rows.iter().map(|r| $crate::rows::history_from(r)).collect()
            }

            async fn events_after(
                &self,
                after_seq: i64,
                limit: u32,
            ) -> Result<Vec<$crate::store::StoredEvent>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT seq, event_id, cause_event_id, occurred_at, CAST(payload AS TEXT) AS payload, prev_hash, \
                     hash FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.$read)
                .await?;
                rows.iter().map(|r| $crate::rows::stored_event_from(r)).collect()
            }

            async fn check_invariants(&self) -> Result<$crate::store::Invariants, $crate::StoreError> {
                let r = sqlx::query(INVARIANTS_SQL).fetch_one(&self.$read).await?;
                let zero = |col: &str| -> Result<bool, $crate::StoreError> {
                    Ok(sqlx::Row::try_get::<i64, _>(&r, col)? == 0)
                };
                Ok($crate::store::Invariants {
                    balanced: zero("unbalanced_txns")?
                        && zero("postings_total")?
                        && zero("orphan_postings")?
                        && zero("drifted_balances")?
                        && zero("phantom_balances")?,
                    no_order_paid_twice: zero("orders_paid_twice")?,
                    no_overdraft: zero("overdrawn")?,
                })
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ProjectionReader for $store {
            async fn order(
                &self,
                merchant: &facepay_domain::MerchantId,
                out_trade_no: &facepay_domain::OutTradeNo,
            ) -> Result<Option<$crate::model::Order>, $crate::StoreError> {
                let row = sqlx::query("SELECT * FROM orders WHERE merchant_id = $1 AND out_trade_no = $2")
                    .bind(merchant.as_str())
                    .bind(out_trade_no.as_str())
                    .fetch_optional(&self.$read)
                    .await?;
                row.as_ref().map(|r| $crate::rows::order_from(r)).transpose()
            }

            async fn orders(
                &self,
                keys: &[$crate::model::OrderKey],
            ) -> Result<std::collections::BTreeMap<$crate::model::OrderKey, $crate::model::Order>, $crate::StoreError>
            {
                // The readers: a lookup need not wait behind the ledger's writes.
                let keys = $crate::model::Keys { orders: keys.iter().cloned().collect(), ..Default::default() };
                Ok(load_keys(&self.$read, &keys).await?.orders)
            }

            async fn history(
                &self,
                merchant: &facepay_domain::MerchantId,
                filter: &$crate::store::HistoryFilter,
            ) -> Result<Vec<$crate::store::HistoryRow>, $crate::StoreError> {
                let sql = $crate::store_sql::history_sql(filter);
                let rows = Self::history_query(&sql, merchant, filter).fetch_all(&self.$read).await?;
                rows.iter().map(|r| $crate::rows::history_from(r)).collect()
            }

            async fn members(
                &self,
                merchant: &facepay_domain::MerchantId,
                page: $crate::store::MembersPage,
            ) -> Result<Vec<$crate::store::MemberView>, $crate::StoreError> {
                let rows = sqlx::query($crate::store_sql::MEMBERS_PAGE)
                    .bind(merchant.as_str())
                    .bind(page.before_id.unwrap_or(i64::MAX))
                    .bind(i64::from(page.limit))
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| $crate::rows::member_view_from(r)).collect()
            }

            async fn open_cards(
                &self,
            ) -> Result<Vec<(facepay_domain::MerchantId, facepay_domain::PayerId)>, $crate::StoreError> {
                use $crate::rows::Cells;
                let rows = sqlx::query("SELECT merchant_id, payer_id FROM members WHERE closed_at IS NULL")
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter()
                    .map(|r| {
                        let merchant = $crate::rows::id("merchant", r.text("merchant_id")?, facepay_domain::MerchantId::parse)?;
                        Ok((merchant, $crate::rows::id("payer", r.text("payer_id")?, facepay_domain::PayerId::parse)?))
                    })
                    .collect()
            }

            async fn wallet(&self, payer: &facepay_domain::PayerId) -> Result<Option<(i64, bool)>, $crate::StoreError> {
                use $crate::rows::Cells;
                let row = sqlx::query(
                    "SELECT (SELECT balance_fen FROM balances WHERE account = $1) AS balance_fen, \
                     (SELECT CAST(CASE WHEN frozen THEN 1 ELSE 0 END AS BIGINT) FROM payers WHERE payer_id = $2) \
                     AS frozen",
                )
                .bind($crate::Account::Wallet(payer.clone()).key())
                .bind(payer.as_str())
                .fetch_one(&self.$read)
                .await?;
                match (row.opt_int("balance_fen")?, row.opt_int("frozen")?) {
                    (None, None) => Ok(None),
                    (balance, frozen) => Ok(Some((balance.unwrap_or(0), frozen.unwrap_or(0) != 0))),
                }
            }

            async fn rejected(&self, limit: u32) -> Result<Vec<$crate::store::RejectedEvent>, $crate::StoreError> {
                let rows = sqlx::query("SELECT * FROM rejected_events ORDER BY id DESC LIMIT $1")
                    .bind(i64::from(limit))
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| $crate::rows::rejected_from(r)).collect()
            }

            async fn settlement(
                &self,
                merchant: &facepay_domain::MerchantId,
                limit: u32,
            ) -> Result<Vec<$crate::store::SettlementView>, $crate::StoreError> {
                let rows = sqlx::query("SELECT * FROM settlement WHERE merchant_id = $1 ORDER BY day DESC LIMIT $2")
                    .bind(merchant.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| $crate::rows::settlement_view_from(r)).collect()
            }

            async fn day_glance(
                &self,
                merchant: &facepay_domain::MerchantId,
                store: Option<&facepay_domain::StoreId>,
                day: chrono::NaiveDate,
            ) -> Result<Vec<$crate::store::GlanceRow>, $crate::StoreError> {
                let rows = sqlx::query($crate::store_sql::DAY_GLANCE)
                    .bind(merchant.as_str())
                    .bind(bind_day(&day))
                    .bind(store.map_or("", |s| s.as_str()))
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| $crate::rows::glance_from(r)).collect()
            }

            async fn devices(
                &self,
                merchant: &facepay_domain::MerchantId,
                page: &$crate::store::DevicesPage,
                since: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<$crate::store::DeviceActivity>, $crate::StoreError> {
                let (after_store, after_device) = page.after.as_ref().map_or(("", ""), |(s, d)| (s.as_str(), d.as_str()));
                let rows = sqlx::query($crate::store_sql::FLEET_DEVICES)
                    .bind(merchant.as_str())
                    .bind(bind_at(&since))
                    .bind(i64::from(page.limit))
                    .bind(page.store_id.as_ref().map_or("", |s| s.as_str()))
                    .bind(after_store)
                    .bind(after_device)
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| $crate::rows::device_activity_from(r)).collect()
            }

            async fn order_refunds(
                &self,
                merchant: &facepay_domain::MerchantId,
                out_trade_no: &facepay_domain::OutTradeNo,
            ) -> Result<Vec<$crate::store::RefundView>, $crate::StoreError> {
                let sql = "SELECT out_refund_no, amount_fen, fee_refund_fen, refunded_at FROM refunds \
                     WHERE merchant_id = $1 AND out_trade_no = $2 ORDER BY refunded_at, out_refund_no LIMIT $3";
                let rows = sqlx::query(sql)
                    .bind(merchant.as_str())
                    .bind(out_trade_no.as_str())
                    .bind(facepay_domain::limits::ORDER_REFUNDS_MAX)
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| $crate::rows::refund_view_from(r)).collect()
            }

            async fn order_retries(
                &self,
                merchant: &facepay_domain::MerchantId,
                out_trade_no: &facepay_domain::OutTradeNo,
            ) -> Result<Vec<$crate::store::RetryView>, $crate::StoreError> {
                let sql = "SELECT event_id, processed_at, device FROM inbound WHERE retry_of = $1 \
                     ORDER BY processed_at LIMIT $2";
                let rows = sqlx::query(sql)
                    .bind($crate::store::order_key(merchant, out_trade_no))
                    .bind(facepay_domain::limits::ORDER_RETRIES_MAX)
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| $crate::rows::retry_view_from(r)).collect()
            }

            async fn order_repeats(
                &self,
                merchant: &facepay_domain::MerchantId,
                out_trade_no: &facepay_domain::OutTradeNo,
            ) -> Result<Vec<$crate::store::RepeatView>, $crate::StoreError> {
                let rows = sqlx::query($crate::store_sql::ORDER_REPEATS)
                    .bind(merchant.as_str())
                    .bind(out_trade_no.as_str())
                    .bind($crate::store::order_key(merchant, out_trade_no))
                    .bind(facepay_domain::limits::ORDER_RETRIES_MAX)
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| $crate::rows::repeat_view_from(r)).collect()
            }
        }
    };
}

/// [`crate::store::RegistryStore`].
macro_rules! registry_sql {
    ($store:ty, write: $write:ident) => {
        #[async_trait::async_trait]
        impl $crate::store::RegistryStore for $store {
            async fn register_merchant(
                &self,
                merchant: &facepay_domain::MerchantId,
                name: &str,
            ) -> Result<(), $crate::StoreError> {
                sqlx::query(
                    "INSERT INTO merchants (merchant_id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(merchant.as_str())
                .bind(name)
                .bind(bind_at(&chrono::Utc::now()))
                .execute(&self.$write)
                .await?;
                Ok(())
            }

            async fn register_device(&self, d: &facepay_domain::DeviceRef) -> Result<(), $crate::StoreError> {
                let result = sqlx::query(
                    "INSERT INTO devices (device_id, merchant_id, store_id, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (device_id) DO NOTHING",
                )
                .bind(d.device_id.as_str())
                .bind(d.merchant_id.as_str())
                .bind(d.store_id.as_str())
                .bind(bind_at(&chrono::Utc::now()))
                .execute(&self.$write)
                .await?;
                if result.rows_affected() == 0 {
                    let registry = self.registry().await?;
                    if registry.devices.get(&d.device_id) != Some(d) {
                        return Err($crate::StoreError::Conflict(format!("device {} is bound elsewhere", d.device_id)));
                    }
                }
                Ok(())
            }

            async fn registry(&self) -> Result<$crate::store::Registry, $crate::StoreError> {
                use $crate::rows::Cells;
                let mut reg = $crate::store::Registry::default();
                for r in sqlx::query("SELECT merchant_id, name FROM merchants").fetch_all(&self.$write).await? {
                    let merchant =
                        $crate::rows::id("merchant", r.text("merchant_id")?, facepay_domain::MerchantId::parse)?;
                    reg.merchants.insert(merchant, r.text("name")?);
                }
                for r in
                    sqlx::query("SELECT device_id, merchant_id, store_id FROM devices").fetch_all(&self.$write).await?
                {
                    let d = $crate::rows::device_from(&r)?;
                    reg.devices.insert(d.device_id.clone(), d);
                }
                reg.device_keys = $crate::credentials::CredentialStore::device_keys(self).await?;
                Ok(reg)
            }
        }
    };
}

/// [`crate::store::TransportStore`].
macro_rules! transport_sql {
    ($store:ty, write: $write:ident, now_ms: $now_ms:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::TransportStore for $store {
            async fn offsets(
                &self,
                group_id: &str,
                topic: &str,
            ) -> Result<std::collections::HashMap<i32, i64>, $crate::StoreError> {
                use $crate::rows::Cells;
                let rows = sqlx::query(
                    "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
                )
                .bind(group_id)
                .bind(topic)
                .fetch_all(&self.$write)
                .await?;
                rows.iter()
                    .map(|r| Ok((sqlx::Row::try_get::<i32, _>(r, "partition")?, r.int("next_offset")?)))
                    .collect()
            }

            async fn leases(
                &self,
                names: &[String],
                holder: &str,
                lease_ms: u64,
            ) -> Result<Vec<String>, $crate::StoreError> {
                use $crate::rows::Cells;
                assert!(names.len() <= facepay_domain::limits::LEASES_AT_ONCE_MAX, "{} leases at once", names.len());
                // In name order, once each: two holders renewing overlapping sets lock the rows
                // in the same order (no deadlock), and no row is upserted twice in a statement.
                let names: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
                if names.is_empty() {
                    return Ok(Vec::new());
                }
                let lease_ms = i64::try_from(lease_ms).unwrap_or(i64::MAX / 2);
                let mut qb = sqlx::QueryBuilder::new("INSERT INTO leases (name, holder, expires_ms) ");
                qb.push_values(names, |mut row, name| {
                    // The database's clock decides expiry: the one clock every process shares.
                    row.push_bind(name)
                        .push_bind(holder)
                        .push($now_ms)
                        .push_unseparated(" + ")
                        .push_bind_unseparated(lease_ms);
                });
                qb.push(concat!(
                    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
                     WHERE leases.holder = excluded.holder OR leases.expires_ms < ",
                    $now_ms,
                    " RETURNING name"
                ));
                let rows = qb.build().fetch_all(&self.$write).await?;
                let mut held = rows.iter().map(|r| r.text("name")).collect::<Result<Vec<_>, _>>()?;
                held.sort();
                Ok(held)
            }

            async fn leases_live(&self, prefix: &str) -> Result<Vec<(String, String)>, $crate::StoreError> {
                use $crate::rows::Cells;
                // A handful of rows: a plain comparison of each name's start (no LIKE: `_`
                // would be a wildcard).
                let sql = concat!(
                    "SELECT name, holder FROM leases WHERE substr(name, 1, length($1)) = $1 AND expires_ms >= ",
                    $now_ms,
                    " ORDER BY name"
                );
                let rows = sqlx::query(sql).bind(prefix).fetch_all(&self.$write).await?;
                rows.iter().map(|r| Ok((r.text("name")?, r.text("holder")?))).collect()
            }

            async fn lease_release(&self, name: &str, holder: &str) -> Result<(), $crate::StoreError> {
                sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                    .bind(name)
                    .bind(holder)
                    .execute(&self.$write)
                    .await?;
                Ok(())
            }

            async fn offsets_advance(
                &self,
                group_id: &str,
                topic: &str,
                next: &[(i32, i64)],
            ) -> Result<(), $crate::StoreError> {
                assert!(next.len() <= facepay_domain::limits::LEASES_AT_ONCE_MAX, "{} offsets at once", next.len());
                let next = next.iter().fold(std::collections::BTreeMap::<i32, i64>::new(), |mut at, &(p, o)| {
                    at.entry(p).and_modify(|n| *n = (*n).max(o)).or_insert(o);
                    at
                });
                if next.is_empty() {
                    return Ok(());
                }
                let mut qb =
                    sqlx::QueryBuilder::new("INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) ");
                qb.push_values(next, |mut row, (partition, next_offset)| {
                    row.push_bind(group_id).push_bind(topic).push_bind(partition).push_bind(next_offset);
                });
                qb.push(
                    " ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = excluded.next_offset \
                     WHERE consumer_offsets.next_offset < excluded.next_offset",
                );
                qb.build().execute(&self.$write).await?;
                Ok(())
            }

            async fn outbox_pending(
                &self,
                limit: u32,
            ) -> Result<Vec<(i64, $crate::store::PendingMessage)>, $crate::StoreError> {
                let rows = sqlx::query($crate::store_sql::OUTBOX_PENDING)
                    .bind(i64::from(limit))
                    .fetch_all(&self.$write)
                    .await?;
                rows.iter().map(|r| $crate::rows::outbox_from(r)).collect()
            }

            async fn outbox_published(&self, ids: &[i64]) -> Result<(), $crate::StoreError> {
                forget_published(&self.$write, ids).await
            }

            async fn decided_listener(&self) -> Result<Option<$crate::decided::DecidedListener>, $crate::StoreError> {
                listen_decided(&self.$write).await
            }
        }
    };
}

/// Appends `$payer` to the gallery feed inside the transaction `$tx` (migration 0019): the
/// next `seq`, taken under the head row's lock (held to commit, so changes commit in order),
/// and forgets changes older than [`GALLERY_FEED_KEEP_MS`].
macro_rules! gallery_changed {
    ($tx:ident, $payer:expr) => {{
        use sqlx::Row;
        let now = chrono::Utc::now();
        let head = sqlx::query("UPDATE gallery_feed_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            .fetch_one(&mut *$tx)
            .await?;
        let seq: i64 = head.try_get("seq")?;
        sqlx::query("INSERT INTO gallery_feed (seq, payer_id, changed_at) VALUES ($1, $2, $3)")
            .bind(seq)
            .bind($payer.as_str())
            .bind(bind_at(&now))
            .execute(&mut *$tx)
            .await?;
        let keep = chrono::Duration::milliseconds(facepay_domain::limits::GALLERY_FEED_KEEP_MS as i64);
        sqlx::query("DELETE FROM gallery_feed WHERE changed_at < $1")
            .bind(bind_at(&(now - keep)))
            .execute(&mut *$tx)
            .await?;
    }};
}

/// [`crate::store::FaceVault`] and [`crate::store::CaptureLog`].
macro_rules! faces_sql {
    ($store:ty, read: $read:ident, write: $write:ident, byte_order: $byte_order:literal,
     lock_payer: $lock_payer:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::FaceVault for $store {
            async fn face_enrol(
                &self,
                face: &$crate::store::StoredFace,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<Option<uuid::Uuid>, $crate::StoreError> {
                use $crate::rows::Cells;
                let mut tx = self.begin_write().await?;
                let (payer, key_id, at) = (face.payer_id.as_str(), bind_id(&face.key_id), bind_at(&at));
                // The payer held to commit: a concurrent enrolment of theirs reads the key this
                // one makes live, and replaces (and shreds) that one, not the key read here.
                sqlx::query($lock_payer).bind(payer).execute(&mut *tx).await?;
                let replaced = sqlx::query("SELECT key_id FROM face_live WHERE payer_id = $1")
                    .bind(payer)
                    .fetch_optional(&mut *tx)
                    .await?;
                let replaced = replaced.as_ref().map(|r| r.uuid("key_id")).transpose()?;
                sqlx::query(
                    "INSERT INTO face_templates (payer_id, key_id, ciphertext, enrolled_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(payer)
                .bind(&key_id)
                .bind(&face.ciphertext)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO face_live (payer_id, key_id, shard_hash, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (payer_id) DO UPDATE SET key_id = excluded.key_id, \
                     shard_hash = excluded.shard_hash, created_at = excluded.created_at",
                )
                .bind(payer)
                .bind(&key_id)
                .bind(i64::from(face.shard_hash))
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                $crate::store_sql::gallery_changed!(tx, &face.payer_id);
                tx.commit().await?;
                Ok(replaced.filter(|k| *k != face.key_id))
            }

            async fn face_delete(&self, payer: &facepay_domain::PayerId) -> Result<bool, $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query("DELETE FROM face_live WHERE payer_id = $1")
                    .bind(payer.as_str())
                    .execute(&mut *tx)
                    .await?;
                $crate::store_sql::gallery_changed!(tx, payer);
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn face_keys_legacy(
                &self,
                limit: u32,
            ) -> Result<Vec<$crate::face_keys::KeyRecord>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT payer_id, phone_last4, shard_hash, key_id, wrapped_key FROM face_keys ORDER BY payer_id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.$read)
                .await?;
                rows.iter().map(|r| $crate::rows::key_record_from(r)).collect()
            }

            async fn face_keys_legacy_forget(&self, key_ids: &[uuid::Uuid]) -> Result<(), $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                for key_id in key_ids {
                    sqlx::query("DELETE FROM face_keys WHERE key_id = $1")
                        .bind(bind_id(key_id))
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn face_of(
                &self,
                payer: &facepay_domain::PayerId,
            ) -> Result<Option<$crate::store::StoredFace>, $crate::StoreError> {
                let row = sqlx::query(
                    "SELECT k.payer_id, k.shard_hash, k.key_id, t.ciphertext \
                     FROM face_live k JOIN face_templates t ON t.key_id = k.key_id WHERE k.payer_id = $1",
                )
                .bind(payer.as_str())
                .fetch_optional(&self.$read)
                .await?;
                row.as_ref().map(|r| $crate::rows::stored_face_from(r)).transpose()
            }

            async fn face_feed_head(&self) -> Result<i64, $crate::StoreError> {
                use sqlx::Row;
                let row = sqlx::query("SELECT seq FROM gallery_feed_head WHERE id = 1").fetch_one(&self.$read).await?;
                Ok(row.try_get::<i64, _>("seq")?)
            }

            async fn face_feed_after(
                &self,
                after: i64,
                limit: u32,
            ) -> Result<Vec<(i64, facepay_domain::PayerId)>, $crate::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT seq, payer_id FROM gallery_feed WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| Ok((r.try_get::<i64, _>("seq")?, $crate::rows::payer_of(r)?))).collect()
            }

            async fn face_gallery(
                &self,
                shard: u32,
                shards: u32,
            ) -> Result<Vec<$crate::store::StoredFace>, $crate::StoreError> {
                let rows = sqlx::query(
                    "SELECT k.payer_id, k.shard_hash, k.key_id, t.ciphertext \
                     FROM face_live k JOIN face_templates t ON t.key_id = k.key_id \
                     WHERE k.shard_hash % $1 = $2 ORDER BY k.payer_id",
                )
                .bind(i64::from(shards.max(1)))
                .bind(i64::from(shard))
                .fetch_all(&self.$read)
                .await?;
                rows.iter().map(|r| $crate::rows::stored_face_from(r)).collect()
            }

            async fn face_ciphertexts(
                &self,
                payer: &facepay_domain::PayerId,
            ) -> Result<Vec<(uuid::Uuid, Vec<u8>)>, $crate::StoreError> {
                use $crate::rows::Cells;
                let rows = sqlx::query("SELECT key_id, ciphertext FROM face_templates WHERE payer_id = $1 ORDER BY seq")
                    .bind(payer.as_str())
                    .fetch_all(&self.$read)
                    .await?;
                rows.iter().map(|r| Ok((r.uuid("key_id")?, r.bytes("ciphertext")?))).collect()
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::CaptureLog for $store {
            async fn captures_remember(
                &self,
                captures: &[$crate::store::CaptureMemo],
                forget_before: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), $crate::StoreError> {
                let mut tx = self.begin_write().await?;
                remember_captures(&mut tx, captures).await?;
                sqlx::query("DELETE FROM capture_memos WHERE captured_at < $1")
                    .bind(bind_at(&forget_before))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn captures_recent(
                &self,
                since: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<Vec<$crate::store::CaptureMemo>, $crate::StoreError> {
                let sql = concat!(
                    "SELECT * FROM (SELECT * FROM capture_memos WHERE captured_at >= $1 ORDER BY captured_at DESC, \
                     face_code",
                    $byte_order,
                    " LIMIT $2) m ORDER BY captured_at, face_code",
                    $byte_order
                );
                let rows = sqlx::query(sql).bind(bind_at(&since)).bind(i64::from(limit)).fetch_all(&self.$read).await?;
                rows.iter().map(|r| $crate::rows::capture_memo_from(r)).collect()
            }
        }
    };
}

pub(crate) use {faces_sql, gallery_changed, reader_sql, registry_sql, store_sql, transport_sql, writer_sql};

/// A page of a merchant's devices (of store $4, or every store for '') after ($5, $6), at most
/// $3, with their last answered event and their refused, rejected or declined events since
/// $2: the devices from their (merchant, store, device) index, each device's answers a lookup
/// in the answers' (device, processed_at) index.
pub(crate) const FLEET_DEVICES: &str = "SELECT d.device_id, d.store_id, d.created_at, \
     (SELECT MAX(i.processed_at) FROM inbound i \
        WHERE i.device = d.merchant_id || '/' || d.store_id || '/' || d.device_id) AS last_event_at, \
     (SELECT COUNT(*) FROM inbound i \
        WHERE i.device = d.merchant_id || '/' || d.store_id || '/' || d.device_id AND i.processed_at > $2 \
          AND (i.outcome LIKE '%\"type\":\"refused\"%' OR i.outcome LIKE '%\"type\":\"rejected\"%' \
               OR i.outcome LIKE '{\"rejected\":%' \
               OR i.outcome LIKE '%\"status\":\"DECLINED\"%')) AS refused_last_hour \
     FROM devices d WHERE d.merchant_id = $1 AND ($4 = '' OR d.store_id = $4) \
       AND (d.store_id, d.device_id) > ($5, $6) ORDER BY d.store_id, d.device_id LIMIT $3";

/// A merchant's day of attempts ($3: one store's, or '' for all) counted by status, reason and
/// member quick pay: an index-only read of the history's covering (merchant, day) index.
pub(crate) const DAY_GLANCE: &str = "SELECT status, reason, member_quick_pay, COUNT(*) AS attempts, \
     CAST(SUM(amount_fen) AS BIGINT) AS amount_fen FROM history \
     WHERE merchant_id = $1 AND day = $2 AND ($3 = '' OR store_id = $3) \
     GROUP BY status, reason, member_quick_pay";

/// A page of a merchant's members, newest card holders first, before position $2: a read of
/// the members' (merchant, id) index.
pub(crate) const MEMBERS_PAGE: &str = "SELECT * FROM members WHERE merchant_id = $1 AND id < $2 \
     ORDER BY id DESC LIMIT $3";

/// The oldest outbox messages (every one left is unpublished: a published one is deleted),
/// each with the stored answer it refers to, if it refers to one.
pub(crate) const OUTBOX_PENDING: &str = "SELECT o.id, o.topic, o.key, o.payload, o.answer_of, \
     i.outcome, i.device, i.processed_at \
     FROM outbox o LEFT JOIN inbound i ON i.event_id = o.answer_of ORDER BY o.id LIMIT $1";

/// One more copy of answered event $1 sent again by its own device $3 at $2: counted on the
/// event's row (one row per event however often it comes).
pub(crate) const NOTE_REPEAT: &str = "INSERT INTO event_repeats (event_id, repeats, last_at) \
     SELECT i.event_id, 1, $2 FROM inbound i WHERE i.event_id = $1 AND i.device = $3 \
     ON CONFLICT (event_id) DO UPDATE SET repeats = event_repeats.repeats + 1, last_at = excluded.last_at";

/// The repeated events of order ($1, $2): the inbound events that caused its decided attempts
/// (the history's (merchant, order) index, then the log's event id) and the retries it
/// answered ($3, the answers' `retry_of` index).
pub(crate) const ORDER_REPEATS: &str = "SELECT r.event_id, r.repeats, r.last_at FROM event_repeats r \
     WHERE r.event_id IN (SELECT e.cause_event_id FROM history h JOIN events e ON e.event_id = h.event_id \
                            WHERE h.merchant_id = $1 AND h.out_trade_no = $2 \
                          UNION SELECT i.event_id FROM inbound i WHERE i.retry_of = $3) \
     ORDER BY r.last_at LIMIT $4";
