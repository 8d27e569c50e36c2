//! Opening the saga log: the connection pool (a SQLite file and its folder are created when
//! missing) and the migrations.

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use std::time::Duration;

/// Opens a pool on `url` (creating a SQLite file and its folder if needed) and applies migrations.
pub async fn connect(
    url: &str,
    max_connections: u32,
    idle_txn: Duration,
) -> Result<DatabaseConnection, DbErr> {
    let db = open(url, max_connections, idle_txn).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// Opens a pool on `url` (creating a SQLite file and its folder if needed). On MariaDB and
/// PostgreSQL the server ends any transaction of ours left idle longer than `idle_txn` (the
/// lease): an instance paused mid-transaction (SIGSTOP, a frozen VM) would otherwise hold its
/// row locks, and every other instance's take-over would wait on them.
pub(super) async fn open(
    url: &str,
    max_connections: u32,
    idle_txn: Duration,
) -> Result<DatabaseConnection, DbErr> {
    if let Some(path) = sqlite_file(url) {
        if let Some(dir) = std::path::Path::new(&path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
    }
    let mut opts = ConnectOptions::new(loopback_without_tls(url));
    if url.starts_with("sqlite:") {
        // sqlx pings a pooled connection at every checkout unless told otherwise: on SQLite a
        // hop to the connection's thread before each batch and each read, for a connection in
        // the same process that cannot drop. On MariaDB and PostgreSQL the ping stays: it is
        // what keeps a server restart from failing the work that next takes a connection.
        opts.test_before_acquire(false);
    }
    opts.max_connections(max_connections.max(1))
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        // A database that refuses connections is reported after this (the pool keeps trying
        // until then); the log writer then refuses starts at once until a probe gets through.
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            // WAL lets readers run beside the writer; NORMAL is durable across process crashes.
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                // A statement journal in memory, not a temporary file opened per multi-row
                // write; and a page cache of 16 MiB (2 MiB by default), which holds the
                // indexes a batch inserts into (pages read back from the file were 7 % of
                // SQLite's thread). Both measured in docs/benchmarks.md.
                .pragma("temp_store", "memory")
                .pragma("cache_size", "-16384")
                .busy_timeout(Duration::from_secs(30))
        });
    let idle_ms = idle_txn.as_millis().max(1000);
    opts.map_sqlx_postgres_opts(move |o| {
        // Custom plans: a generic plan cached while `sagas` was small (or its statistics
        // stale: autovacuum off) can be a sequential scan, kept for the connection's life, so
        // each transition batch read the whole table (peer-bench halved run after run). A
        // custom plan sees the key values and the unique index, whatever the statistics.
        o.options([
            ("idle_in_transaction_session_timeout", format!("{idle_ms}")),
            ("plan_cache_mode", "force_custom_plan".to_string()),
        ])
    })
    .map_sqlx_mysql_pool_opts(move |p| {
        p.after_connect(move |conn, _| {
            Box::pin(async move {
                use sea_orm::sqlx::Executor;
                // MariaDB only (seconds); MySQL has no such variable: there it is left unset.
                let secs = idle_ms.div_ceil(1000);
                let set = format!("SET SESSION idle_transaction_timeout = {secs}");
                let _ = conn.execute(sea_orm::sqlx::AssertSqlSafe(set)).await;
                Ok(())
            })
        })
    });
    sea_orm::Database::connect(opts).await
}

/// Begins a transaction that may write. On SQLite it takes the write lock up front: a deferred
/// read-then-write transaction fails with "database is locked" under concurrency, busy timeout
/// or not.
pub(super) async fn begin(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        db.begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await
    } else {
        db.begin().await
    }
}

/// SQLite serves one instance: takes an exclusive lock beside the database file
/// (`FILE.lock`), held while the returned file is open (the OS drops it when the process dies).
/// None for other databases, which several instances share by leases.
pub fn lock_single_instance(url: &str) -> Result<Option<std::fs::File>, DbErr> {
    let Some(path) = sqlite_file(url) else {
        return Ok(None);
    };
    if let Some(dir) = std::path::Path::new(&path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
        }
    }
    let lock_path = format!("{path}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| DbErr::Custom(format!("cannot open {lock_path}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(DbErr::Custom(format!(
            "the SQLite database {path} is in use by another saga-orchestrator process: SQLite \
             serves a single instance (run several instances on MariaDB/MySQL or PostgreSQL)"
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(DbErr::Custom(format!("cannot lock {lock_path}: {e}")))
        }
    }
}

/// How many migrations the database records as applied (None if it cannot say).
pub(super) async fn migrations_applied(db: &DatabaseConnection) -> Option<i64> {
    use sea_orm::{ConnectionTrait, Statement};
    let stmt = Statement::from_string(
        db.get_database_backend(),
        "SELECT COUNT(*) AS n FROM seaql_migrations",
    );
    let row = db.query_one_raw(stmt).await.ok()??;
    row.try_get::<i64>("", "n").ok()
}

/// True when every migration this build knows is applied.
pub(super) async fn migrated(db: &DatabaseConnection) -> bool {
    // A plain count: get_pending_migrations would run CREATE TABLE IF NOT EXISTS (and log a
    // PostgreSQL notice) on every probe.
    migrations_applied(db)
        .await
        .is_some_and(|n| n >= Migrator::migrations().len() as i64)
}

/// A PostgreSQL URL naming a loopback host and no `sslmode` gets `sslmode=disable`: TLS to a
/// database on the same host protects nothing, and through sqlx it costs a stall per statement
/// (measured: 1183 against 353 sagas/s). An explicit `sslmode` is kept as it is.
fn loopback_without_tls(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_string();
    };
    let pg = matches!(u.scheme(), "postgres" | "postgresql");
    let loopback = match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        // postgres: is not a "special" scheme: its host comes back as an opaque string.
        Some(url::Host::Domain(d)) => {
            d == "localhost"
                || d.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback())
        }
        None => false,
    };
    if !pg || !loopback || u.query_pairs().any(|(k, _)| k == "sslmode") {
        return url.to_string();
    }
    u.query_pairs_mut().append_pair("sslmode", "disable");
    u.to_string()
}

/// The file behind a `sqlite:` URL, if it names one.
fn sqlite_file(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::{loopback_without_tls, sqlite_file};

    #[test]
    fn loopback_postgres_skips_tls_unless_the_url_asks() {
        assert_eq!(
            loopback_without_tls("postgres://postgres@127.0.0.1:5432/db"),
            "postgres://postgres@127.0.0.1:5432/db?sslmode=disable"
        );
        assert_eq!(
            loopback_without_tls("postgres://u@localhost/db?application_name=x"),
            "postgres://u@localhost/db?application_name=x&sslmode=disable"
        );
        for kept in [
            "postgres://u@127.0.0.1/db?sslmode=require",
            "postgres://u@db.example.com/db",
            "mysql://root@127.0.0.1:3306/db",
            "sqlite://data/sagas.db?mode=rwc",
        ] {
            assert_eq!(loopback_without_tls(kept), kept);
        }
    }

    #[test]
    fn sqlite_file_is_found_in_urls() {
        assert_eq!(
            sqlite_file("sqlite://data/sagas.db?mode=rwc").as_deref(),
            Some("data/sagas.db")
        );
        assert_eq!(
            sqlite_file("sqlite:///tmp/x.db").as_deref(),
            Some("/tmp/x.db")
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }
}
