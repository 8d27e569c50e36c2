//! The few statements the barrier needs, run on a transaction of any supported driver: sqlx on
//! MySQL/MariaDB, PostgreSQL and SQLite, or (feature `sea-orm`) a sea-orm transaction.

use chrono::{DateTime, Utc};

/// The SQL dialect of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL or MariaDB.
    MySql,
    /// PostgreSQL.
    Postgres,
    /// SQLite (single writer: for demos and tests).
    Sqlite,
}

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub enum Arg<'a> {
    /// Text.
    Str(&'a str),
    /// A small integer (an HTTP status).
    Int(i16),
    /// A point in time.
    Time(DateTime<Utc>),
}

/// A barrier row as read back.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// done | rejected | tombstone.
    pub state: String,
    /// The answer's status (0 while the call's transaction is open).
    pub http_status: i16,
    /// The answer's body.
    pub response_body: String,
    /// SHA-256 of the request body.
    pub request_sha256: String,
}

/// Why a statement failed, as far as the barrier cares.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The row is there already (a unique key).
    #[error("the row exists")]
    Duplicate,
    /// A lock wait timeout, deadlock or serialization failure: try again.
    #[error("lock conflict: {0}")]
    Conflict(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A transaction the barrier can write its rows in: the caller's own, so that the barrier row
/// and the business change commit together.
#[async_trait::async_trait]
pub trait BarrierTx: Send {
    /// Its dialect.
    fn dialect(&self) -> Dialect;
    /// Runs `sql` (`?` placeholders); answers the rows it changed.
    async fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError>;
    /// Reads at most one barrier row with `sql`.
    async fn row(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<StoredRow>, DbError>;
}

/// `sql` with the dialect's placeholders: `?` everywhere but PostgreSQL's `$1, $2…`.
pub(crate) fn placeholders(dialect: Dialect, sql: &str) -> String {
    if dialect == Dialect::Postgres {
        numbered(sql)
    } else {
        sql.to_string()
    }
}

/// `?` placeholders as PostgreSQL's `$1, $2…`.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// Sorts a sqlx error into what the barrier does about it.
pub fn classify(e: &sqlx::Error) -> DbError {
    match e {
        sqlx::Error::Database(d) => {
            if d.is_unique_violation() {
                return DbError::Duplicate;
            }
            let code = d.code().unwrap_or_default();
            // PostgreSQL: serialization failure, deadlock, lock_timeout. SQLite: busy, locked.
            let pg_or_sqlite = matches!(&*code, "40001" | "40P01" | "55P03" | "5" | "6");
            let mysql = d
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|m| matches!(m.number(), 1205 | 1213));
            if pg_or_sqlite || mysql {
                DbError::Conflict(d.to_string())
            } else {
                DbError::Other(d.to_string())
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => DbError::Conflict(e.to_string()),
        other => DbError::Other(other.to_string()),
    }
}

/// The sqlx query of `$sql` in `$dialect`, with `$args` bound.
macro_rules! bound {
    ($dialect:expr, $sql:expr, $args:expr) => {{
        // Built only from the barrier's own SQL and a checked table name; values are bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(placeholders($dialect, $sql)));
        for a in $args {
            q = match a {
                Arg::Str(s) => q.bind(*s),
                Arg::Int(i) => q.bind(*i),
                Arg::Time(t) => q.bind(*t),
            };
        }
        q
    }};
}

macro_rules! sqlx_tx {
    ($db:ty, $dialect:expr) => {
        #[async_trait::async_trait]
        impl BarrierTx for sqlx::Transaction<'_, $db> {
            fn dialect(&self) -> Dialect {
                $dialect
            }

            async fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
                let done = bound!($dialect, sql, args)
                    .execute(&mut **self)
                    .await
                    .map_err(|e| classify(&e))?;
                Ok(done.rows_affected())
            }

            async fn row(
                &mut self,
                sql: &str,
                args: &[Arg<'_>],
            ) -> Result<Option<StoredRow>, DbError> {
                use sqlx::Row;
                let Some(r) = bound!($dialect, sql, args)
                    .fetch_optional(&mut **self)
                    .await
                    .map_err(|e| classify(&e))?
                else {
                    return Ok(None);
                };
                let get = |e: sqlx::Error| DbError::Other(format!("reading a barrier row: {e}"));
                Ok(Some(StoredRow {
                    state: r.try_get("state").map_err(get)?,
                    http_status: r.try_get("http_status").map_err(get)?,
                    response_body: r.try_get("response_body").map_err(get)?,
                    request_sha256: r.try_get("request_sha256").map_err(get)?,
                }))
            }
        }
    };
}

sqlx_tx!(sqlx::MySql, Dialect::MySql);
sqlx_tx!(sqlx::Postgres, Dialect::Postgres);
sqlx_tx!(sqlx::Sqlite, Dialect::Sqlite);

#[cfg(feature = "sea-orm")]
mod sea {
    use super::*;
    use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, RuntimeErr, Statement};

    /// The statement of `sql` for `backend`, with `args` as its values.
    fn statement(backend: DbBackend, sql: &str, args: &[Arg<'_>]) -> Statement {
        let values = args
            .iter()
            .map(|a| match a {
                Arg::Str(s) => sea_orm::Value::from(s.to_string()),
                Arg::Int(i) => sea_orm::Value::from(*i),
                Arg::Time(t) => sea_orm::Value::from(*t),
            })
            .collect::<Vec<_>>();
        Statement::from_sql_and_values(backend, placeholders(dialect_of(backend), sql), values)
    }

    fn sort(e: DbErr) -> DbError {
        match &e {
            DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => {
                classify(s)
            }
            _ => DbError::Other(e.to_string()),
        }
    }

    fn dialect_of(backend: DbBackend) -> Dialect {
        match backend {
            DbBackend::MySql => Dialect::MySql,
            DbBackend::Postgres => Dialect::Postgres,
            _ => Dialect::Sqlite,
        }
    }

    #[async_trait::async_trait]
    impl BarrierTx for DatabaseTransaction {
        fn dialect(&self) -> Dialect {
            dialect_of(self.get_database_backend())
        }

        async fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
            let stmt = statement(self.get_database_backend(), sql, args);
            let done = self.execute_raw(stmt).await.map_err(sort)?;
            Ok(done.rows_affected())
        }

        async fn row(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<StoredRow>, DbError> {
            let stmt = statement(self.get_database_backend(), sql, args);
            let Some(r) = self.query_one_raw(stmt).await.map_err(sort)? else {
                return Ok(None);
            };
            let get = |e: DbErr| DbError::Other(format!("reading a barrier row: {e}"));
            Ok(Some(StoredRow {
                state: r.try_get("", "state").map_err(get)?,
                http_status: r.try_get("", "http_status").map_err(get)?,
                response_body: r.try_get("", "response_body").map_err(get)?,
                request_sha256: r.try_get("", "request_sha256").map_err(get)?,
            }))
        }
    }
}
