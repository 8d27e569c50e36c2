//! The whole call on a sqlx pool: open the transaction, pass the barrier, run the step, record
//! its answer, commit; a refusal is recorded after the rollback, a failure or panic is a 503.

use crate::barrier::{db_reply, Barrier, Entry};
use crate::call::SagaCall;
use crate::conn::{classify, BarrierTx, DbError, Dialect};
use crate::reply::Reply;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

/// How a step's business code ends when it does not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A business "no" (409, forward calls only): nothing was done and nothing will be.
    #[error("{0}")]
    Reject(String),
    /// Something failed that may pass (503; the orchestrator retries).
    #[error("{0}")]
    Fail(String),
}

impl From<sqlx::Error> for StepError {
    fn from(e: sqlx::Error) -> Self {
        StepError::Fail(classify(&e).to_string())
    }
}

/// A step's business code: runs in the barrier's transaction and answers the 2xx body.
pub type StepFuture<'t> = BoxFuture<'t, Result<Value, StepError>>;

impl Barrier {
    /// Runs one call of a step with `pool`: `step` runs at most once per key, in the same
    /// transaction as the barrier row, and duplicates get the first answer.
    pub async fn run<DB, F>(&self, pool: &sqlx::Pool<DB>, call: &SagaCall, step: F) -> Reply
    where
        DB: sqlx::Database,
        sqlx::Transaction<'static, DB>: BarrierTx,
        F: for<'t> FnOnce(&'t mut sqlx::Transaction<'static, DB>) -> StepFuture<'t> + Send,
    {
        let mut tx = match begin(pool).await {
            Ok(tx) => tx,
            Err(e) => return db_reply(e),
        };
        let guard = match self.enter(&mut tx, call).await {
            Ok(Entry::Run(g)) => g,
            Ok(Entry::Answered(reply)) => return commit(tx, reply).await,
            Err(reply) => return reply, // dropped: rolled back
        };
        let ran = std::panic::AssertUnwindSafe(step(&mut tx))
            .catch_unwind()
            .await;
        match ran {
            Ok(Ok(body)) => match guard.done(&mut tx, body).await {
                Ok(reply) => commit(tx, reply).await,
                Err(reply) => reply,
            },
            Ok(Err(StepError::Reject(msg))) => {
                let _ = tx.rollback().await;
                match begin(pool).await {
                    Ok(mut tx) => {
                        let reply = self.reject(&mut tx, call, &msg).await;
                        commit(tx, reply).await
                    }
                    Err(e) => db_reply(e),
                }
            }
            Ok(Err(StepError::Fail(msg))) => {
                let _ = tx.rollback().await;
                Reply::retry(msg)
            }
            Err(_) => {
                let _ = tx.rollback().await;
                tracing::error!(saga_id = %call.saga_id, step = %call.step,
                    phase = call.phase.as_str(), "the step's code panicked; rolled back");
                Reply::retry("the step failed unexpectedly; rolled back")
            }
        }
    }

    /// Creates the barrier table on `pool` if missing.
    pub async fn create_table_on<DB>(&self, pool: &sqlx::Pool<DB>) -> Result<(), DbError>
    where
        DB: sqlx::Database,
        sqlx::Transaction<'static, DB>: BarrierTx,
    {
        let mut tx = pool.begin().await.map_err(|e| classify(&e))?;
        self.create_table(&mut tx).await?;
        tx.commit().await.map_err(|e| classify(&e))
    }

    /// Deletes the rows of sagas created more than `older_than` ago, one batch per
    /// transaction so that no lock is held long; answers how many.
    pub async fn cleanup<DB>(
        &self,
        pool: &sqlx::Pool<DB>,
        older_than: std::time::Duration,
    ) -> Result<u64, DbError>
    where
        DB: sqlx::Database,
        sqlx::Transaction<'static, DB>: BarrierTx,
    {
        let mut total = 0;
        loop {
            let mut tx = pool.begin().await.map_err(|e| classify(&e))?;
            let n = self.cleanup_batch(&mut tx, older_than).await?;
            tx.commit().await.map_err(|e| classify(&e))?;
            total += n;
            if n < crate::barrier::CLEANUP_BATCH {
                return Ok(total);
            }
        }
    }
}

/// Opens a transaction; on PostgreSQL at READ COMMITTED, where a duplicate waits for the first
/// copy and then sees its row (REPEATABLE READ would fail it with a serialization error).
async fn begin<DB>(pool: &sqlx::Pool<DB>) -> Result<sqlx::Transaction<'static, DB>, DbError>
where
    DB: sqlx::Database,
    sqlx::Transaction<'static, DB>: BarrierTx,
{
    let mut tx = pool.begin().await.map_err(|e| classify(&e))?;
    if tx.dialect() == Dialect::Postgres {
        tx.exec("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", &[])
            .await?;
    }
    Ok(tx)
}

async fn commit<DB: sqlx::Database>(tx: sqlx::Transaction<'static, DB>, reply: Reply) -> Reply {
    match tx.commit().await {
        Ok(()) => reply,
        Err(e) => db_reply(classify(&e)),
    }
}
