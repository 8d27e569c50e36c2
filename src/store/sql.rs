//! [`SagaStore`] over sea-orm: the same code for SQLite, MariaDB/MySQL and PostgreSQL. Writes go
//! to the log writer, reads are plain queries.

use super::writer::{Job, Transition, Writer};
use super::{
    connect, queries, rows, CallRow, Created, ListQuery, LogRecord, OperatorRow, SagaRecord,
    SagaStore, StoreError,
};
use crate::domain::{SagaDefinition, SagaState};
use async_trait::async_trait;
use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::oneshot;

/// The saga log in a relational database.
#[derive(Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    writer: Writer,
}

impl SqlStore {
    /// Wraps an open, migrated pool; `writers` log writers commit in parallel (one on SQLite).
    /// Must be called inside a tokio runtime.
    pub fn new(db: DatabaseConnection, writers: usize) -> Self {
        let writer = Writer::start(db.clone(), writers);
        SqlStore { db, writer }
    }

    /// The underlying pool.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}

fn writer_gone<T>(_: T) -> StoreError {
    StoreError::Db(DbErr::Custom("the log writer has stopped".into()))
}

#[async_trait]
impl SagaStore for SqlStore {
    async fn create(&self, r: &SagaRecord) -> Result<Created, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer.send(Job::Create(Box::new(r.clone()), reply))?;
        answer.await.map_err(writer_gone)?
    }

    async fn save(
        &self,
        id: &str,
        version: i64,
        new: &SagaState,
        calls: &[LogRecord],
        now: i64,
    ) -> Result<i64, StoreError> {
        let t = Transition {
            id: id.to_string(),
            version,
            status: new.status,
            error: new.error.clone(),
            next_wake_at: new.next_wake(),
            steps: rows::steps_json(new),
            calls: calls.to_vec(),
            now,
        };
        let (reply, answer) = oneshot::channel();
        self.writer.send(Job::Save(Box::new(t), reply))?;
        answer.await.map_err(writer_gone)?
    }

    async fn load(&self, id: &str) -> Result<Option<SagaRecord>, StoreError> {
        queries::load(&self.db, id).await
    }

    async fn load_many(&self, ids: &[String]) -> Result<Vec<SagaRecord>, StoreError> {
        queries::load_many(&self.db, ids).await
    }

    async fn mark_stuck(&self, id: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        queries::mark_stuck(&self.db, id, reason, now).await
    }

    async fn without_definition(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        queries::without_definition(&self.db).await
    }

    async fn set_definition(&self, id: &str, def: &SagaDefinition) -> Result<(), StoreError> {
        queries::set_definition(&self.db, id, def).await
    }

    async fn active_wakes(&self) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        queries::active_wakes(&self.db).await
    }

    async fn calls(&self, id: &str) -> Result<Vec<CallRow>, StoreError> {
        queries::calls(&self.db, id).await
    }

    async fn operator_actions(&self, id: &str) -> Result<Vec<OperatorRow>, StoreError> {
        queries::operator_actions(&self.db, id).await
    }

    async fn list(&self, q: &ListQuery) -> Result<Vec<SagaRecord>, StoreError> {
        queries::list(&self.db, q).await
    }

    async fn open_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        queries::open_counts(&self.db).await
    }

    async fn ready(&self) -> bool {
        self.db.ping().await.is_ok() && connect::migrated(&self.db).await
    }
}
