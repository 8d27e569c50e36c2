//! Whether the saga log's database can be reached, as the log writer last found it. While it
//! cannot, starts are refused at once (503) instead of queueing behind writes that fail, and a
//! probe pings the database until it answers again.

use sea_orm::{DatabaseConnection, DbErr, RuntimeErr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often an unreachable database is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The database's reachability, shared by the writers.
#[derive(Default)]
pub(super) struct Health {
    down: AtomicBool,
    probing: AtomicBool,
}

impl Health {
    /// True while the database is known to be unreachable.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// A write succeeded.
    pub fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// A write failed with `e`: if the database could not be reached, marks it down and starts
    /// probing it (once).
    pub fn failed(self: &Arc<Self>, db: &DatabaseConnection, e: &DbErr) {
        if !unreachable(e) {
            return;
        }
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %e, "the saga log's database cannot be reached; refusing starts until it answers");
        }
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let (me, db) = (self.clone(), db.clone());
        tokio::spawn(async move {
            while me.is_down() {
                tokio::time::sleep(PROBE_EVERY).await;
                if let Ok(Ok(())) = tokio::time::timeout(PROBE_EVERY * 4, db.ping()).await {
                    me.up();
                    tracing::info!("the saga log's database answers again");
                }
            }
            me.probing.store(false, Ordering::SeqCst);
        });
    }
}

/// The database could not be reached (as opposed to refusing a statement).
pub(super) fn unreachable(e: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => matches!(
            &**s,
            Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::WorkerCrashed
        ),
        _ => false,
    }
}
