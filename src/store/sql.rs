//! [`SagaLog`] over sea-orm: the same code for SQLite, MariaDB/MySQL and PostgreSQL. Writes go
//! to the log writer; claims and releases are conditional UPDATEs ([`claims`]); reads are the
//! plain queries of [`reads`].

use super::reads::{self, Reads};
use super::sealed::Sealer;
use super::writer::{Job, NewSaga, Write, Writer};
use super::{
    claims, growth, operator_requests, rows, Claimed, Claims, Created, Growth, LeaseTerms,
    OperatorRequest, OwnedCursor, SagaLog, SagaRecord, StoreError, Transition,
};
use async_trait::async_trait;
use sea_orm::{DatabaseConnection, DbErr};
use std::sync::Arc;
use tokio::sync::oneshot;

/// The saga log in a relational database.
#[derive(Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    writer: Writer,
    /// Header values are sealed on the way in and opened on the way out.
    sealer: Sealer,
}

impl SqlStore {
    /// Wraps an open, migrated pool; `writers` log writers commit in parallel (one on SQLite),
    /// and accept new sagas while fewer than `max_queued` starts wait. Must be called inside a
    /// tokio runtime.
    pub fn new(
        db: DatabaseConnection,
        writers: usize,
        max_queued: usize,
        write_timeout: std::time::Duration,
        sealer: Sealer,
    ) -> Self {
        let writer = Writer::start(db.clone(), writers, max_queued, write_timeout);
        SqlStore { db, writer, sealer }
    }

    /// The reads of the API over the same pool.
    pub fn reads(&self) -> Reads {
        Reads::new(self.db.clone(), self.sealer.clone())
    }

    fn claimed(&self, c: Claimed) -> Claimed {
        Claimed {
            record: self.sealer.open_record(c.record),
            ..c
        }
    }

    /// The retention sweep's side of the log, over the same pool.
    pub fn purger(&self) -> super::Purger {
        super::Purger::new(self.db.clone())
    }

    /// The participant services' side of the log (operators' pauses), over the same pool.
    pub fn services(&self) -> super::ServiceLog {
        super::ServiceLog::new(self.db.clone())
    }

    /// The named definitions' side of the log, over the same pool.
    pub fn definitions(&self) -> super::DefinitionLog {
        super::DefinitionLog::new(self.db.clone(), self.sealer.clone())
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
impl SagaLog for SqlStore {
    async fn create(&self, r: &SagaRecord) -> Result<Created, StoreError> {
        let (reply, answer) = oneshot::channel();
        let row = if self.sealer.has_key() {
            let mut sealed = r.clone();
            self.sealer.seal_request(&mut sealed.request);
            if let Ok(d) = &r.definition {
                sealed.definition = Ok(Arc::new(self.sealer.seal_definition(d)));
            }
            rows::new_row(&sealed)
        } else {
            rows::new_row(r)
        };
        let new = NewSaga {
            id: r.id.clone(),
            owner: r.owner.clone(),
            row,
        };
        self.writer.send(Job::Create(Box::new(new), reply))?;
        match answer.await.map_err(writer_gone)?? {
            Created::Existing(r) => Ok(Created::Existing(Box::new(self.sealer.open_record(*r)))),
            created => Ok(created),
        }
    }

    async fn save(&self, t: Transition<'_>) -> Result<i64, StoreError> {
        let w = Write {
            id: t.id.to_string(),
            version: t.version,
            owner: t.owner.to_string(),
            release: t.release,
            status: t.state.status,
            error: t.state.error.clone(),
            next_wake_at: t.state.next_wake(),
            steps: rows::steps_json(t.state),
            calls: t.history.to_vec(),
            now: t.now,
            purge_at: t.purge_at,
            rare: t.rare,
            definition: t
                .definition
                .map(|d| rows::definition_column(&self.sealer.seal_definition(d))),
        };
        let (reply, answer) = oneshot::channel();
        self.writer.send(Job::Save(Box::new(w), reply))?;
        answer.await.map_err(writer_gone)?
    }

    async fn grow(&self, g: Growth<'_>) -> Result<bool, StoreError> {
        let def = self.sealer.seal_definition(g.def);
        growth::grow(&self.db, g.id, g.version, &def, g.state, g.now).await
    }

    async fn load(&self, id: &str) -> Result<Option<SagaRecord>, StoreError> {
        Ok(reads::load(&self.db, id)
            .await?
            .map(|r| self.sealer.open_record(r)))
    }

    async fn load_many(&self, ids: &[String]) -> Result<Vec<SagaRecord>, StoreError> {
        let rs = reads::load_many(&self.db, ids).await?;
        Ok(rs.into_iter().map(|r| self.sealer.open_record(r)).collect())
    }

    async fn mark_stuck(&self, id: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        reads::mark_stuck(&self.db, id, reason, now).await
    }

    async fn claim_due(&self, lease: &LeaseTerms, limit: u64) -> Result<Claims, StoreError> {
        let mut c = claims::claim_due(&self.db, lease, limit).await?;
        c.sagas = c.sagas.into_iter().map(|s| self.claimed(s)).collect();
        Ok(c)
    }

    async fn claim(&self, ids: &[String], lease: &LeaseTerms) -> Result<Vec<Claimed>, StoreError> {
        let cs = claims::claim(&self.db, ids, lease).await?;
        Ok(cs.into_iter().map(|s| self.claimed(s)).collect())
    }

    async fn owned_page(
        &self,
        owner: &str,
        from: &OwnedCursor,
        limit: u64,
    ) -> Result<(Vec<String>, Option<OwnedCursor>), StoreError> {
        claims::owned_page(&self.db, owner, from, limit).await
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        claims::release(&self.db, id, owner).await
    }

    async fn release_all(&self, owner: &str) -> Result<u64, StoreError> {
        claims::release_all(&self.db, owner).await
    }

    async fn request_operation(&self, req: &OperatorRequest) -> Result<(), StoreError> {
        let mut req = req.clone();
        if let Some(edit) = req.detail.edit.take() {
            // An edit's header values are sealed at rest, as a start request's are.
            let mut wrapped = serde_json::json!({"steps": [edit]});
            self.sealer.seal_request(&mut wrapped);
            req.detail.edit = Some(wrapped["steps"][0].take());
        }
        operator_requests::request_operation(&self.db, &req).await
    }

    async fn operation_requests(&self, limit: u64) -> Result<Vec<OperatorRequest>, StoreError> {
        let mut out = operator_requests::operation_requests(&self.db, limit).await?;
        for r in &mut out {
            if let Some(edit) = r.detail.edit.take() {
                let mut wrapped = serde_json::json!({"steps": [edit]});
                self.sealer.open_request(&mut wrapped);
                r.detail.edit = Some(wrapped["steps"][0].take());
            }
        }
        Ok(out)
    }

    async fn drop_operation_request(&self, request_id: i64) -> Result<(), StoreError> {
        operator_requests::drop_operation_request(&self.db, request_id).await
    }
}
