//! [`SagaStore`] over sea-orm: the same code for SQLite, MariaDB/MySQL and PostgreSQL.

use super::entities::{saga, saga_call, saga_operator_action, saga_step};
use super::{
    CallRow, Created, ListQuery, LogRecord, OperatorRow, SagaRecord, SagaStore, StepMeta,
    StoreError,
};
use crate::domain::machine::{ACTIVE_STATUSES, ALL_SAGA_STATUSES};
use crate::domain::{Phase, SagaDefinition, SagaState, SagaStatus, StepState, StepStatus};
use async_trait::async_trait;
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Condition, Expr, Func};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectOptions, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Opens a pool on `url` (creating a SQLite file and its folder if needed) and applies migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    if let Some(path) = sqlite_file(url) {
        if let Some(dir) = std::path::Path::new(&path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| DbErr::Custom(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
    }
    let mut opts = ConnectOptions::new(url.to_string());
    opts.max_connections(max_connections.max(1))
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            // WAL lets readers run beside the writer; NORMAL is durable across process crashes.
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
        });
    let db = sea_orm::Database::connect(opts).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// The file behind a `sqlite:` URL, if it names one.
fn sqlite_file(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| path.to_string())
}

/// One transition to record: what [`SagaStore::save`] receives.
struct Transition {
    id: String,
    version: i64,
    old: SagaState,
    new: SagaState,
    calls: Vec<LogRecord>,
    now: i64,
}

type Queued = (Transition, oneshot::Sender<Result<i64, StoreError>>);

/// Most transitions committed together by the log writer.
const MAX_BATCH: usize = 128;

/// The saga log in a relational database.
#[derive(Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    /// When set, transitions go to one writer task that commits them in batches.
    writer: Option<mpsc::UnboundedSender<Queued>>,
}

impl SqlStore {
    /// Wraps an open, migrated connection pool; every transition is its own transaction.
    pub fn new(db: DatabaseConnection) -> Self {
        SqlStore { db, writer: None }
    }

    /// Like [`Self::new`], but transitions of all sagas waiting at the same moment are committed
    /// together by one writer task (group commit: fewer commits and round trips under load, the
    /// same durability: each caller is answered only after its transition is committed).
    /// Must be called inside a tokio runtime.
    pub fn with_group_commit(db: DatabaseConnection) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(SqlStore::new(db.clone()), rx));
        SqlStore {
            db,
            writer: Some(tx),
        }
    }

    /// One transition in its own transaction.
    async fn save_alone(&self, t: &Transition) -> Result<i64, StoreError> {
        let txn = self.begin_write().await?;
        if !write_transition(&txn, t).await? {
            txn.rollback().await?;
            return Err(StoreError::Conflict(t.id.clone()));
        }
        txn.commit().await?;
        Ok(t.version + 1)
    }

    /// Several transitions (of different sagas) in one transaction; a version conflict fails
    /// only its own transition.
    async fn save_batch(&self, batch: &[Queued]) -> Result<Vec<bool>, DbErr> {
        let txn = self.begin_write().await?;
        let mut written = Vec::with_capacity(batch.len());
        for (t, _) in batch {
            written.push(write_transition(&txn, t).await?);
        }
        txn.commit().await?;
        Ok(written)
    }

    /// The underlying pool.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        if self.db.get_database_backend() == DbBackend::Sqlite {
            // Take the write lock up front: a deferred read-then-write transaction fails
            // with "database is locked" under concurrency, busy timeout or not.
            self.db
                .begin_with_options(TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                })
                .await
        } else {
            self.db.begin().await
        }
    }

    async fn steps_of(&self, ids: &[String]) -> Result<Vec<saga_step::Model>, DbErr> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        saga_step::Entity::find()
            .filter(saga_step::Column::SagaId.is_in(ids.iter().cloned()))
            .order_by_asc(saga_step::Column::SagaId)
            .order_by_asc(saga_step::Column::Idx)
            .all(&self.db)
            .await
    }
}

/// How many migrations the database records as applied (None if it cannot say).
async fn saga_migrations_applied(db: &DatabaseConnection) -> Option<i64> {
    use sea_orm::{ConnectionTrait, Statement};
    let stmt = Statement::from_string(
        db.get_database_backend(),
        "SELECT COUNT(*) AS n FROM seaql_migrations",
    );
    let row = db.query_one_raw(stmt).await.ok()??;
    row.try_get::<i64>("", "n").ok()
}

/// The log writer: takes whatever transitions are queued, commits them together, answers each.
async fn write_loop(store: SqlStore, mut rx: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        if batch.len() > 1 {
            if let Ok(written) = store.save_batch(&batch).await {
                for ((t, reply), ok) in batch.into_iter().zip(written) {
                    let _ = reply.send(if ok {
                        Ok(t.version + 1)
                    } else {
                        Err(StoreError::Conflict(t.id))
                    });
                }
                continue;
            }
            // A failed batch was rolled back whole: write each alone, so that one bad
            // transition cannot fail the others.
        }
        for (t, reply) in batch {
            let _ = reply.send(store.save_alone(&t).await);
        }
    }
}

/// Writes one transition inside `txn`. `Ok(false)`: the saga's version moved (nothing written).
async fn write_transition(txn: &DatabaseTransaction, t: &Transition) -> Result<bool, DbErr> {
    let mut am = saga::ActiveModel {
        version: Set(t.version + 1),
        ..Default::default()
    };
    saga_state_columns(&mut am, &t.new, t.now);
    let res = saga::Entity::update_many()
        .set(am)
        .filter(saga::Column::Id.eq(t.id.as_str()))
        .filter(saga::Column::Version.eq(t.version))
        .exec(txn)
        .await?;
    if res.rows_affected != 1 {
        return Ok(false);
    }
    for (i, s) in t.new.steps.iter().enumerate() {
        if t.old.steps.get(i) == Some(s) {
            continue;
        }
        let mut am = saga_step::ActiveModel::default();
        step_state_columns(&mut am, s);
        saga_step::Entity::update_many()
            .set(am)
            .filter(saga_step::Column::SagaId.eq(t.id.as_str()))
            .filter(saga_step::Column::Idx.eq(i as i32))
            .exec(txn)
            .await?;
    }
    write_calls(txn, &t.id, &t.calls).await?;
    Ok(true)
}

fn saga_state_columns(am: &mut saga::ActiveModel, st: &SagaState, now: i64) {
    am.status = Set(st.status.as_str().to_string());
    am.error = Set(st.error.clone());
    am.deadline_at = Set(st.deadline_at);
    am.next_wake_at = Set(st.next_wake(now));
    am.updated_at = Set(now);
    am.finished_at = Set(st.status.is_terminal().then_some(now));
}

fn step_state_columns(am: &mut saga_step::ActiveModel, s: &StepState) {
    am.operation = Set(s.phase.as_str().to_string());
    am.status = Set(s.status.as_str().to_string());
    am.attempts = Set(s.attempts as i32);
    am.compensation_attempts = Set(s.compensation_attempts as i32);
    am.confirm_attempts = Set(s.confirm_attempts as i32);
    am.budget_base = Set(s.budget_base as i32);
    am.may_have_effect = Set(s.may_have_effect);
    am.in_flight = Set(s.in_flight);
    am.stuck = Set(s.stuck);
    am.last_error = Set(s.last_error.clone());
    am.next_attempt_at = Set(s.next_attempt_at);
    am.updated_at = Set(s.updated_at);
}

fn step_from_row(r: &saga_step::Model) -> Result<StepState, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("step {}/{}: {what}", r.saga_id, r.idx));
    Ok(StepState {
        status: StepStatus::parse(&r.status).ok_or_else(|| bad("status"))?,
        phase: Phase::parse(&r.operation).ok_or_else(|| bad("operation"))?,
        attempts: r.attempts.max(0) as u32,
        compensation_attempts: r.compensation_attempts.max(0) as u32,
        confirm_attempts: r.confirm_attempts.max(0) as u32,
        budget_base: r.budget_base.max(0) as u32,
        may_have_effect: r.may_have_effect,
        in_flight: r.in_flight,
        stuck: r.stuck,
        last_error: r.last_error.clone(),
        next_attempt_at: r.next_attempt_at,
        updated_at: r.updated_at,
    })
}

fn record_from_rows(s: saga::Model, steps: &[saga_step::Model]) -> Result<SagaRecord, StoreError> {
    let status = SagaStatus::parse(&s.status)
        .ok_or_else(|| StoreError::Corrupt(format!("saga {}: status {:?}", s.id, s.status)))?;
    let mut states = Vec::with_capacity(steps.len());
    let mut metas = Vec::with_capacity(steps.len());
    for r in steps {
        states.push(step_from_row(r)?);
        metas.push(StepMeta {
            name: r.name.clone(),
            service_name: r.service_name.clone(),
            payload: r.payload.clone(),
        });
    }
    let definition = match &s.definition {
        Some(d) => SagaDefinition::from_stored(d).map(std::sync::Arc::new),
        None => Err("no stored definition (written before definitions were stored)".into()),
    };
    Ok(SagaRecord {
        id: s.id,
        name: s.name,
        mode: s.mode,
        request: s.request,
        definition,
        created_at: s.created_at,
        updated_at: s.updated_at,
        version: s.version,
        steps: metas,
        state: SagaState {
            status,
            error: s.error,
            deadline_at: s.deadline_at,
            steps: states,
            wake_at: s.next_wake_at,
        },
    })
}

async fn write_calls(
    txn: &DatabaseTransaction,
    id: &str,
    calls: &[LogRecord],
) -> Result<(), DbErr> {
    let mut started = Vec::new();
    for c in calls {
        match c {
            LogRecord::Operator { action, who, at } => {
                let row = saga_operator_action::ActiveModel {
                    id: NotSet,
                    saga_id: Set(id.to_string()),
                    action: Set(action.clone()),
                    who: Set(who.chars().take(255).collect()),
                    at: Set(*at),
                };
                saga_operator_action::Entity::insert(row)
                    .exec_without_returning(txn)
                    .await?;
            }
            LogRecord::Started {
                step,
                step_name,
                phase,
                attempt,
                at,
            } => started.push(saga_call::ActiveModel {
                id: NotSet,
                saga_id: Set(id.to_string()),
                step_idx: Set(*step as i32),
                step: Set(step_name.clone()),
                phase: Set(phase.as_str().to_string()),
                attempt: Set(*attempt as i32),
                started_at: Set(*at),
                finished_at: Set(None),
                http_status: Set(None),
                outcome: Set(None),
                error: Set(None),
            }),
            LogRecord::Finished {
                step,
                phase,
                attempt,
                at,
                http_status,
                outcome,
                error,
            } => {
                saga_call::Entity::update_many()
                    .col_expr(saga_call::Column::FinishedAt, Expr::value(*at))
                    .col_expr(
                        saga_call::Column::HttpStatus,
                        Expr::value(http_status.map(i32::from)),
                    )
                    .col_expr(saga_call::Column::Outcome, Expr::value(outcome.as_str()))
                    .col_expr(saga_call::Column::Error, Expr::value(error.clone()))
                    .filter(saga_call::Column::SagaId.eq(id))
                    .filter(saga_call::Column::StepIdx.eq(*step as i32))
                    .filter(saga_call::Column::Phase.eq(phase.as_str()))
                    .filter(saga_call::Column::Attempt.eq(*attempt as i32))
                    .exec(txn)
                    .await?;
            }
        }
    }
    if !started.is_empty() {
        saga_call::Entity::insert_many(started)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl SagaStore for SqlStore {
    async fn create(&self, r: &SagaRecord, calls: &[LogRecord]) -> Result<Created, StoreError> {
        let txn = self.begin_write().await?;
        let mut am = saga::ActiveModel {
            id: Set(r.id.clone()),
            name: Set(r.name.clone()),
            mode: Set(r.mode.clone()),
            request: Set(r.request.clone()),
            definition: Set(r.definition.as_ref().ok().map(|d| d.to_stored())),
            created_at: Set(r.created_at),
            version: Set(r.version),
            owner: Set(None),
            lease_until: Set(None),
            ..Default::default()
        };
        saga_state_columns(&mut am, &r.state, r.updated_at);
        if let Err(e) = saga::Entity::insert(am).exec_without_returning(&txn).await {
            txn.rollback().await?;
            if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
                return match self.load(&r.id).await? {
                    Some(existing) => Ok(Created::Existing(Box::new(existing))),
                    None => Err(StoreError::Db(e)),
                };
            }
            return Err(e.into());
        }
        let steps: Vec<saga_step::ActiveModel> = r
            .state
            .steps
            .iter()
            .zip(&r.steps)
            .enumerate()
            .map(|(i, (s, m))| {
                let mut am = saga_step::ActiveModel {
                    saga_id: Set(r.id.clone()),
                    idx: Set(i as i32),
                    name: Set(m.name.clone()),
                    service_name: Set(m.service_name.clone()),
                    payload: Set(m.payload.clone()),
                    created_at: Set(r.created_at),
                    ..Default::default()
                };
                step_state_columns(&mut am, s);
                am
            })
            .collect();
        saga_step::Entity::insert_many(steps)
            .exec_without_returning(&txn)
            .await?;
        write_calls(&txn, &r.id, calls).await?;
        txn.commit().await?;
        Ok(Created::New)
    }

    async fn save(
        &self,
        id: &str,
        version: i64,
        old: &SagaState,
        new: &SagaState,
        calls: &[LogRecord],
        now: i64,
    ) -> Result<i64, StoreError> {
        let t = Transition {
            id: id.to_string(),
            version,
            old: old.clone(),
            new: new.clone(),
            calls: calls.to_vec(),
            now,
        };
        match &self.writer {
            Some(queue) => {
                let (reply, answer) = oneshot::channel();
                queue.send((t, reply)).map_err(|_| {
                    StoreError::Db(DbErr::Custom("the log writer has stopped".into()))
                })?;
                answer.await.unwrap_or_else(|_| {
                    Err(StoreError::Db(DbErr::Custom(
                        "the log writer has stopped".into(),
                    )))
                })
            }
            None => self.save_alone(&t).await,
        }
    }

    async fn load(&self, id: &str) -> Result<Option<SagaRecord>, StoreError> {
        let Some(s) = saga::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let steps = self.steps_of(&[id.to_string()]).await?;
        record_from_rows(s, &steps).map(Some)
    }

    async fn mark_stuck(&self, id: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        let res = saga::Entity::update_many()
            .col_expr(
                saga::Column::Status,
                Expr::value(SagaStatus::Stuck.as_str()),
            )
            .col_expr(saga::Column::Error, Expr::value(reason))
            .col_expr(saga::Column::NextWakeAt, Expr::value(Option::<i64>::None))
            .col_expr(saga::Column::UpdatedAt, Expr::value(now))
            .col_expr(
                saga::Column::Version,
                sea_orm::sea_query::ExprTrait::add(Expr::col(saga::Column::Version), 1),
            )
            .filter(saga::Column::Id.eq(id))
            .filter(saga::Column::Status.is_in(ACTIVE_STATUSES.map(|s| s.as_str())))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    async fn without_definition(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let open = ALL_SAGA_STATUSES.iter().filter(|s| !s.is_terminal());
        Ok(saga::Entity::find()
            .select_only()
            .column(saga::Column::Id)
            .column(saga::Column::Request)
            .filter(saga::Column::Definition.is_null())
            .filter(saga::Column::Status.is_in(open.map(|s| s.as_str())))
            .into_tuple::<(String, serde_json::Value)>()
            .all(&self.db)
            .await?)
    }

    async fn set_definition(&self, id: &str, def: &SagaDefinition) -> Result<(), StoreError> {
        saga::Entity::update_many()
            .col_expr(saga::Column::Definition, Expr::value(def.to_stored()))
            .filter(saga::Column::Id.eq(id))
            .filter(saga::Column::Definition.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn active_wakes(&self) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        Ok(saga::Entity::find()
            .select_only()
            .column(saga::Column::Id)
            .column(saga::Column::NextWakeAt)
            .filter(saga::Column::Status.is_in(ACTIVE_STATUSES.map(|s| s.as_str())))
            .into_tuple::<(String, Option<i64>)>()
            .all(&self.db)
            .await?)
    }

    async fn calls(&self, id: &str) -> Result<Vec<CallRow>, StoreError> {
        let rows = saga_call::Entity::find()
            .filter(saga_call::Column::SagaId.eq(id))
            .order_by_asc(saga_call::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| CallRow {
                step: r.step_idx.max(0) as usize,
                phase: r.phase,
                attempt: r.attempt.max(0) as u32,
                started_at: r.started_at,
                finished_at: r.finished_at,
                http_status: r.http_status.and_then(|s| u16::try_from(s).ok()),
                outcome: r.outcome,
                error: r.error,
            })
            .collect())
    }

    async fn operator_actions(&self, id: &str) -> Result<Vec<OperatorRow>, StoreError> {
        let rows = saga_operator_action::Entity::find()
            .filter(saga_operator_action::Column::SagaId.eq(id))
            .order_by_asc(saga_operator_action::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| OperatorRow {
                action: r.action,
                who: r.who,
                at: r.at,
            })
            .collect())
    }

    async fn list(&self, q: &ListQuery) -> Result<Vec<SagaRecord>, StoreError> {
        let mut query = saga::Entity::find();
        if !q.statuses.is_empty() {
            query = query.filter(saga::Column::Status.is_in(q.statuses.iter().cloned()));
        }
        if let Some(name) = &q.name {
            query = query.filter(saga::Column::Name.eq(name.as_str()));
        }
        if let Some((created, id)) = &q.after {
            query = query.filter(
                Condition::any()
                    .add(saga::Column::CreatedAt.lt(*created))
                    .add(
                        Condition::all()
                            .add(saga::Column::CreatedAt.eq(*created))
                            .add(saga::Column::Id.lt(id.as_str())),
                    ),
            );
        }
        let sagas = query
            .order_by_desc(saga::Column::CreatedAt)
            .order_by_desc(saga::Column::Id)
            .limit(q.limit)
            .all(&self.db)
            .await?;
        let ids: Vec<String> = sagas.iter().map(|s| s.id.clone()).collect();
        // Group the page's steps by saga once, rather than scanning them for every saga.
        let mut by_saga: std::collections::HashMap<String, Vec<saga_step::Model>> =
            Default::default();
        for r in self.steps_of(&ids).await? {
            by_saga.entry(r.saga_id.clone()).or_default().push(r);
        }
        sagas
            .into_iter()
            .map(|s| {
                let mine = by_saga.remove(&s.id).unwrap_or_default();
                record_from_rows(s, &mine)
            })
            .collect()
    }

    async fn open_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let open = ALL_SAGA_STATUSES.iter().filter(|s| !s.is_terminal());
        Ok(saga::Entity::find()
            .select_only()
            .column(saga::Column::Name)
            .column(saga::Column::Status)
            .column_as(Expr::expr(Func::count(Expr::col(saga::Column::Id))), "n")
            .filter(saga::Column::Status.is_in(open.map(|s| s.as_str())))
            .group_by(saga::Column::Name)
            .group_by(saga::Column::Status)
            .into_tuple::<(String, String, i64)>()
            .all(&self.db)
            .await?)
    }

    async fn ready(&self) -> bool {
        if self.db.ping().await.is_err() {
            return false;
        }
        // A plain count: get_pending_migrations would run CREATE TABLE IF NOT EXISTS (and log a
        // PostgreSQL notice) on every probe.
        let applied = saga_migrations_applied(&self.db).await;
        applied.is_some_and(|n| n >= Migrator::migrations().len() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_file;

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
