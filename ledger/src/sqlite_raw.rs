//! Prepared statements stepped on a SQLite connection's own handle, for the two bulk paths
//! where sqlx's driver is the bottleneck: a bill's lines written at import and read back in
//! key order at reconciliation. sqlx's SQLite driver runs every statement on a worker thread,
//! copies each bound value into an argument list and each column of each row out of it; for
//! a million-line bill that copying cost more than SQLite's own work (docs/BENCHMARKS.md,
//! issue 6). Here the rows are bound and read in place, on the calling thread, while the
//! connection is locked away from its worker ([`sqlx::SqliteConnection::lock_handle`]).
//!
//! Everything `unsafe` in the crate is in this file. The rules it keeps:
//! - a [`Statement`] borrows the locked handle, so it cannot outlive the lock, and is
//!   finalized on drop;
//! - text is bound `SQLITE_TRANSIENT` (SQLite copies it before the bind returns), so no
//!   borrowed buffer has to outlive a call;
//! - a column's text is copied out before the next step, which invalidates it.
//!
//! Errors carry SQLite's extended code through [`sqlx::Error::Database`], so
//! [`StoreError::is_refusal`](crate::store::StoreError::is_refusal) and `is_transient` read
//! them exactly as they read sqlx's own.

use std::borrow::Cow;
use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::ptr::NonNull;

use libsqlite3_sys as ffi;
use sqlx::error::{DatabaseError, ErrorKind};

/// SQLite's failure, with its extended result code (the same shape as sqlx's own).
#[derive(Debug)]
pub(crate) struct RawError {
    code: c_int,
    message: String,
}

impl RawError {
    /// The connection's last error. Safety: `db` is a live handle.
    unsafe fn last(db: *mut ffi::sqlite3) -> sqlx::Error {
        // SAFETY: the caller's handle is live; errmsg never returns NULL for a live handle.
        let (code, message) = unsafe {
            let code = ffi::sqlite3_extended_errcode(db);
            let msg = ffi::sqlite3_errmsg(db);
            (code, CStr::from_ptr(msg).to_string_lossy().into_owned())
        };
        sqlx::Error::Database(Box::new(RawError { code, message }))
    }
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for RawError {}

impl DatabaseError for RawError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => ErrorKind::UniqueViolation,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// A locked connection's handle: no other thread touches it while this lives.
pub(crate) struct Handle<'a> {
    db: NonNull<ffi::sqlite3>,
    _lock: PhantomData<&'a mut ()>,
}

impl<'a> Handle<'a> {
    /// The handle of `locked`, for as long as the lock is held.
    pub(crate) fn new(locked: &'a mut sqlx::sqlite::LockedSqliteHandle<'_>) -> Self {
        Handle { db: locked.as_raw_handle(), _lock: PhantomData }
    }

    /// Prepares `sql` (one statement).
    pub(crate) fn prepare(&self, sql: &str) -> Result<Statement<'_>, sqlx::Error> {
        let mut stmt = std::ptr::null_mut();
        let len = c_int::try_from(sql.len()).map_err(|_| sqlx::Error::Protocol("statement too long".into()))?;
        // SAFETY: the handle is live and locked to this thread; `sql` outlives the call.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(self.db.as_ptr(), sql.as_ptr().cast(), len, 0, &mut stmt, std::ptr::null_mut())
        };
        match NonNull::new(stmt) {
            Some(stmt) if rc == ffi::SQLITE_OK => Ok(Statement { stmt, db: self.db, _handle: PhantomData }),
            // SAFETY: as above.
            _ => Err(unsafe { RawError::last(self.db.as_ptr()) }),
        }
    }
}

/// What one step gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Row,
    Done,
}

/// A prepared statement on a locked handle; finalized on drop.
pub(crate) struct Statement<'h> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db: NonNull<ffi::sqlite3>,
    _handle: PhantomData<&'h Handle<'h>>,
}

impl Statement<'_> {
    fn check(&self, rc: c_int) -> Result<(), sqlx::Error> {
        match rc {
            ffi::SQLITE_OK => Ok(()),
            // SAFETY: the statement's handle is live while the statement is.
            _ => Err(unsafe { RawError::last(self.db.as_ptr()) }),
        }
    }

    /// Binds text to parameter `i` (1-based); SQLite copies it.
    pub(crate) fn bind_text(&mut self, i: c_int, v: &str) -> Result<(), sqlx::Error> {
        let len = c_int::try_from(v.len()).map_err(|_| sqlx::Error::Protocol("text too long".into()))?;
        // SAFETY: live statement; TRANSIENT makes SQLite copy `v` before returning.
        let rc =
            unsafe { ffi::sqlite3_bind_text(self.stmt.as_ptr(), i, v.as_ptr().cast(), len, ffi::SQLITE_TRANSIENT()) };
        self.check(rc)
    }

    pub(crate) fn bind_i64(&mut self, i: c_int, v: i64) -> Result<(), sqlx::Error> {
        // SAFETY: live statement.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.stmt.as_ptr(), i, v) };
        self.check(rc)
    }

    pub(crate) fn bind_opt_i64(&mut self, i: c_int, v: Option<i64>) -> Result<(), sqlx::Error> {
        match v {
            Some(v) => self.bind_i64(i, v),
            // SAFETY: live statement.
            None => self.check(unsafe { ffi::sqlite3_bind_null(self.stmt.as_ptr(), i) }),
        }
    }

    /// Runs the statement to its next row, or to its end.
    pub(crate) fn step(&mut self) -> Result<Step, sqlx::Error> {
        // SAFETY: live statement on a handle locked to this thread.
        match unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) } {
            ffi::SQLITE_ROW => Ok(Step::Row),
            ffi::SQLITE_DONE => Ok(Step::Done),
            // SAFETY: as above.
            _ => Err(unsafe { RawError::last(self.db.as_ptr()) }),
        }
    }

    /// Steps the statement to its end, turning each row into a `T` with `row`.
    pub(crate) fn rows<T, E: From<sqlx::Error>>(
        &mut self,
        mut row: impl FnMut(&Self) -> Result<T, E>,
    ) -> Result<Vec<T>, E> {
        let mut rows = Vec::new();
        while self.step()? == Step::Row {
            rows.push(row(self)?);
        }
        Ok(rows)
    }

    /// Makes the statement ready to run again; the bindings stay.
    pub(crate) fn reset(&mut self) -> Result<(), sqlx::Error> {
        // SAFETY: live statement.
        self.check(unsafe { ffi::sqlite3_reset(self.stmt.as_ptr()) })
    }

    /// Column `i` (0-based) of the current row as an integer.
    pub(crate) fn column_i64(&self, i: c_int) -> i64 {
        // SAFETY: live statement positioned on a row (a step gave `Row`).
        unsafe { ffi::sqlite3_column_int64(self.stmt.as_ptr(), i) }
    }

    /// Column `i` as an integer, or `None` when it is NULL.
    pub(crate) fn column_opt_i64(&self, i: c_int) -> Option<i64> {
        // SAFETY: as above.
        match unsafe { ffi::sqlite3_column_type(self.stmt.as_ptr(), i) } {
            ffi::SQLITE_NULL => None,
            _ => Some(self.column_i64(i)),
        }
    }

    /// Column `i` as text, borrowed from the current row: the borrow ends before the next
    /// step or reset (both take `&mut self`), which is when SQLite frees the buffer. (The
    /// UTF-16 accessors, which could also free it, are not wrapped.)
    pub(crate) fn column_str(&self, i: c_int) -> Result<&str, sqlx::Error> {
        // SAFETY: live statement on a row; the pointer and length are read together, and the
        // slice lives no longer than `&self`, during which nothing can move the statement on.
        let bytes = unsafe {
            let p = ffi::sqlite3_column_text(self.stmt.as_ptr(), i);
            let n = ffi::sqlite3_column_bytes(self.stmt.as_ptr(), i);
            match p.is_null() {
                true => &[][..],
                false => std::slice::from_raw_parts(p, usize::try_from(n).unwrap_or(0)),
            }
        };
        std::str::from_utf8(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }

    /// Column `i` as text, copied out.
    pub(crate) fn column_text(&self, i: c_int) -> Result<String, sqlx::Error> {
        self.column_str(i).map(str::to_owned)
    }
}

impl Drop for Statement<'_> {
    fn drop(&mut self) {
        // SAFETY: finalized once, here; the handle is still locked (the borrow says so).
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

/// Locks `conn` away from sqlx's worker and runs `f` on its handle, where blocking is
/// allowed: in place on a multi-threaded runtime (the other workers keep serving), else
/// directly. Each caller bounds its `f` by a chunk or a page of rows.
pub(crate) async fn with_handle<T, E: From<sqlx::Error>>(
    conn: &mut sqlx::SqliteConnection,
    f: impl FnOnce(&Handle<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let mut locked = conn.lock_handle().await?;
    let handle = Handle::new(&mut locked);
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| f(&handle)),
        _ => f(&handle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::store::StoreError;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!("sqlite://{}", dir.path().join("raw.db").display());
        (dir, SqliteStore::open(&url).await.expect("the store opens"))
    }

    /// Runs `f` on a locked writer connection.
    async fn on_writer<T>(s: &SqliteStore, f: impl FnOnce(&Handle<'_>) -> T) -> T {
        let mut conn = s.writer.acquire().await.expect("a connection");
        with_handle(&mut conn, |h| Ok::<_, sqlx::Error>(f(h))).await.expect("the handle")
    }

    #[tokio::test]
    async fn text_integers_and_null_round_trip_unchanged() {
        let (_dir, s) = store().await;
        let got = on_writer(&s, |h| {
            let mut q = h.prepare("SELECT ?1, ?2, ?3, ?4").expect("prepares");
            q.bind_text(1, "收银台 3 号 · DEV-07").unwrap();
            q.bind_i64(2, i64::MIN).unwrap();
            q.bind_opt_i64(3, None).unwrap();
            q.bind_opt_i64(4, Some(5_400)).unwrap();
            assert_eq!(q.step().unwrap(), Step::Row);
            let row = (q.column_text(0).unwrap(), q.column_i64(1), q.column_opt_i64(2), q.column_opt_i64(3));
            assert_eq!(q.step().unwrap(), Step::Done);
            row
        })
        .await;
        assert_eq!(got, ("收银台 3 号 · DEV-07".to_string(), i64::MIN, None, Some(5_400)));
    }

    #[tokio::test]
    async fn a_refused_row_is_a_typed_refusal_and_a_statement_runs_again_after_reset() {
        let (_dir, s) = store().await;
        let errors = on_writer(&s, |h| {
            let mut q = h.prepare("SELECT CAST(?1 AS INTEGER) + 1").expect("prepares");
            for v in ["1", "41"] {
                q.bind_text(1, v).unwrap();
                assert_eq!(q.step().unwrap(), Step::Row);
                assert!(q.column_i64(0) == 2 || q.column_i64(0) == 42);
                q.reset().unwrap();
            }
            let bad_sql = h.prepare("SELEC 1").err().expect("a syntax error");
            let mut check = h
                .prepare("INSERT INTO recon_bill_lines VALUES ('i', 'm', 'X', 'n', 2, 'o', 't', 'd', 'at', 1, 0, NULL)")
                .expect("prepares");
            (bad_sql, check.step().expect_err("the kind check refuses 'X'"))
        })
        .await;
        let (bad_sql, refused) = (StoreError::from(errors.0), StoreError::from(errors.1));
        assert!(!bad_sql.is_transient(), "{bad_sql}");
        assert!(refused.is_refusal(), "a CHECK violation must read as a refusal: {refused}");
        assert!(refused.to_string().contains("CHECK constraint failed"), "{refused}");
    }

    #[tokio::test]
    async fn bill_lines_refuse_update_and_delete() {
        let (_dir, s) = store().await;
        for sql in ["UPDATE recon_bill_lines SET amount_fen = 1", "DELETE FROM recon_bill_lines"] {
            // Triggers fire per row: one row, then the statement.
            let mut tx = s.writer.begin().await.unwrap();
            sqlx::query("INSERT INTO recon_bill_lines VALUES ('i', 'm', 'P', 'n', 2, 'o', 't', 'd', 'at', 1, 0, NULL)")
                .execute(&mut *tx)
                .await
                .unwrap();
            let e = sqlx::query(sql).execute(&mut *tx).await.expect_err("refused");
            assert!(e.to_string().contains("append-only"), "{sql}: {e}");
        }
    }
}
