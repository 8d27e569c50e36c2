//! The log writer: commits the creates and transitions of many sagas together, in a few
//! multi-row statements per batch, and answers each caller only after the commit.
//!
//! Per batch, whatever its size: one multi-row INSERT of the new sagas, one UPDATE of every
//! saga that changed (each row fenced by its version and owner) and one INSERT of the calls'
//! history ([`super::bulk`]; on SQLite the three are one call), then COMMIT. On PostgreSQL the
//! whole batch, both guards of new sagas included, is one call of the function
//! `saga_log_write` (a batch of transitions alone sends it outside a transaction: it commits
//! itself). A batch that cannot be written whole (a version conflict, an id that exists, a
//! database error) is rolled back and its writes are retried one by one, so that each gets its
//! own answer. Sagas are sharded over several writers by id (several
//! connections commit at once on MariaDB and PostgreSQL; one on SQLite), which keeps the
//! writes of one saga in order.

use super::entities::{saga, saga_operator_action};
use super::health::{self, Health};
use super::{rows, Created, LogRecord, StoreError};
use crate::domain::SagaStatus;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait, SqlErr,
};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// One transition to record.
pub(super) struct Write {
    pub id: String,
    /// The version it was computed from; the write fails unless the log still has it.
    pub version: i64,
    /// The writer's lease token; the write fails unless the saga is still held by it.
    pub owner: String,
    /// Give up the saga (no owner) with this write.
    pub release: bool,
    pub status: SagaStatus,
    pub error: Option<String>,
    pub next_wake_at: Option<i64>,
    /// The `steps` column (serialised by the caller, off the writer's task).
    pub steps: String,
    pub calls: Vec<LogRecord>,
    pub now: i64,
    /// When the saga leaves the log (set by the transition that ends it).
    pub purge_at: Option<i64>,
    /// The columns this transition changes that seldom change.
    pub rare: super::Rare,
    /// The `definition` column, when an operator's edit changed it (sealed, packed).
    pub definition: Option<String>,
}

impl Write {
    /// The `finished_at` column: set by the transition that ends the saga.
    pub fn finished_at(&self) -> Option<i64> {
        self.status.is_terminal().then_some(self.now)
    }

    /// The `owner` column after the write: none when it gives the saga up.
    pub fn new_owner(&self) -> Option<&str> {
        (!self.release).then_some(self.owner.as_str())
    }
}

/// A new saga to record: its row is built (serialised, sealed, packed) by the caller, so
/// that a batch's transaction holds no such work (it was a tenth of the writer's time).
pub(super) struct NewSaga {
    pub id: String,
    /// The lease token it is created under; the write fails unless the token still exists.
    pub owner: Option<String>,
    /// The row, from [`rows::new_row`].
    pub row: saga::ActiveModel,
}

/// A write and where its answer goes.
pub(super) enum Job {
    Create(Box<NewSaga>, oneshot::Sender<Result<Created, StoreError>>),
    Save(Box<Write>, oneshot::Sender<Result<i64, StoreError>>),
}

impl Job {
    fn id(&self) -> &str {
        match self {
            Job::Create(r, _) => &r.id,
            Job::Save(t, _) => &t.id,
        }
    }
}

/// Most writes committed together.
const MAX_BATCH: usize = 512;
/// Most rows in one INSERT.
const MAX_CHUNK: usize = 256;
/// `part` (not empty) padded to a power of two with its last item: a fixed statement shape.
pub(super) fn padded<T: Copy>(part: &[T]) -> Vec<T> {
    part.iter()
        .copied()
        .chain(std::iter::repeat(part[part.len() - 1]))
        .take(part.len().next_power_of_two())
        .collect()
}

/// Splits `n` rows into statements of power-of-two sizes (largest first, at most `MAX_CHUNK`):
/// whatever the batch size, every connection prepares a few fixed statement shapes once and
/// reuses them, instead of preparing (and caching, and evicting) a new one per batch size.
fn pow2_sizes(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while n > 0 {
        let size = (1usize << n.ilog2()).min(MAX_CHUNK);
        out.push(size);
        n -= size;
    }
    out
}

/// Runs `rows` as multi-row INSERTs of power-of-two sizes.
pub(super) async fn insert_chunked<E, A>(
    txn: &DatabaseTransaction,
    mut rows: Vec<A>,
) -> Result<(), DbErr>
where
    E: EntityTrait,
    A: sea_orm::ActiveModelTrait<Entity = E> + Send,
{
    for size in pow2_sizes(rows.len()) {
        let rest = rows.split_off(size);
        E::insert_many(rows).exec_without_returning(txn).await?;
        rows = rest;
    }
    Ok(())
}

/// The queues of one writer: starts apart, so that a start never waits behind a backlog of
/// transitions (after a restart, say).
struct Queues {
    creates: mpsc::UnboundedSender<Job>,
    saves: mpsc::UnboundedSender<Job>,
}

/// The writers of one saga log.
#[derive(Clone)]
pub(super) struct Writer {
    shards: Arc<Vec<Queues>>,
    /// Starts queued and not yet taken by a writer task.
    queued: Arc<AtomicUsize>,
    /// Beyond this many queued starts, new ones are refused. Transitions are not counted: a
    /// start never waits behind them (a restart's catch-up queues one per saga), and each live
    /// saga has at most one queued, so the live sagas' bound bounds them.
    max_queued: usize,
    health: Arc<Health>,
}

impl Writer {
    /// Starts `shards` writer tasks on `db` (one on SQLite, which has one writer anyway) that
    /// accept new sagas while fewer than `max_queued` starts wait. Must be called inside a
    /// tokio runtime.
    pub fn start(
        db: DatabaseConnection,
        shards: usize,
        max_queued: usize,
        timeout: std::time::Duration,
    ) -> Self {
        let n = if db.get_database_backend() == DbBackend::Sqlite {
            1
        } else {
            shards.max(1)
        };
        let queued = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(Health::default());
        let shards = (0..n)
            .map(|_| {
                let (creates, c_rx) = mpsc::unbounded_channel();
                let (saves, s_rx) = mpsc::unbounded_channel();
                let taken = Taken(queued.clone());
                let w = Loop {
                    db: db.clone(),
                    health: health.clone(),
                    timeout,
                };
                tokio::spawn(write_loop(w, c_rx, s_rx, taken));
                Queues { creates, saves }
            })
            .collect();
        Writer {
            shards: Arc::new(shards),
            queued,
            max_queued,
            health,
        }
    }

    /// Queues a write on the shard of its saga. A new saga is refused at once while the
    /// database cannot be reached or the queue is full.
    pub fn send(&self, job: Job) -> Result<(), StoreError> {
        if let Job::Create(..) = job {
            if self.health.is_down() {
                return Err(StoreError::Unavailable(
                    "the saga log's database cannot be reached".into(),
                ));
            }
            let queued = self.queued.load(Ordering::Relaxed);
            if queued >= self.max_queued {
                return Err(StoreError::Unavailable(format!(
                    "{queued} starts wait to be written (database.max_queued_writes)"
                )));
            }
            self.queued.fetch_add(1, Ordering::Relaxed);
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        job.id().hash(&mut h);
        let shard = &self.shards[h.finish() as usize % self.shards.len()];
        let queue = match job {
            Job::Create(..) => &shard.creates,
            Job::Save(..) => &shard.saves,
        };
        queue
            .send(job)
            .map_err(|_| StoreError::Db(DbErr::Custom("the log writer has stopped".into())))
    }
}

/// Why a batch was not written whole.
enum BatchError {
    /// A saga's version moved: another writer changed it.
    Conflict,
    /// A new saga's id exists already.
    Exists,
    /// A new saga's lease token has no row any more (its lease ended and was taken over).
    LeaseLost,
    /// A new saga's id is reserved by the tombstone of a purged saga.
    Purged,
    /// The database failed.
    Db(DbErr),
}

impl From<DbErr> for BatchError {
    fn from(e: DbErr) -> Self {
        if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
            return BatchError::Exists;
        }
        match sqlstate(&e).as_deref() {
            Some(super::bulk::LEASE_LOST) => BatchError::LeaseLost,
            Some(super::bulk::PURGED) => BatchError::Purged,
            Some(super::bulk::MOVED) => BatchError::Conflict,
            _ => BatchError::Db(e),
        }
    }
}

/// The SQLSTATE of an error the database answered with.
fn sqlstate(e: &DbErr) -> Option<String> {
    use sea_orm::RuntimeErr;
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => s
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned()),
        _ => None,
    }
}

/// Counts the starts a writer task takes off the queue.
struct Taken(Arc<AtomicUsize>);

impl Taken {
    fn count(&self, batch: &[Job]) {
        let starts = batch
            .iter()
            .filter(|j| matches!(j, Job::Create(..)))
            .count();
        self.0.fetch_sub(starts, Ordering::Relaxed);
    }
}

/// What a writer task writes to, and how long a batch may take.
struct Loop {
    db: DatabaseConnection,
    health: Arc<Health>,
    timeout: std::time::Duration,
}

impl Loop {
    /// Writes `jobs` in one transaction, within the timeout: a batch that takes longer (a
    /// silent partition: nothing answers, nothing fails) counts as the database unreachable.
    /// Its outcome is unknown, as with any failed commit: each job's sender reloads or retries.
    async fn write(&self, jobs: &[Job]) -> Result<(), BatchError> {
        match tokio::time::timeout(self.timeout, write_batch(&self.db, jobs)).await {
            Ok(res) => res,
            Err(_) => Err(BatchError::Db(DbErr::Conn(sea_orm::RuntimeErr::Internal(
                format!("a log write took over {} ms", self.timeout.as_millis()),
            )))),
        }
    }
}

/// Takes whatever is queued, writes it in one transaction, answers each write. Starts come
/// first (up to half a batch), then transitions, then more starts if there is room.
async fn write_loop(
    w: Loop,
    mut creates: mpsc::UnboundedReceiver<Job>,
    mut saves: mpsc::UnboundedReceiver<Job>,
    taken: Taken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            Some(job) = creates.recv() => job,
            Some(job) = saves.recv() => job,
            else => return,
        };
        batch.push(first);
        fill(&mut batch, &mut creates, MAX_BATCH / 2);
        fill(&mut batch, &mut saves, MAX_BATCH);
        fill(&mut batch, &mut creates, MAX_BATCH);
        taken.count(&batch);
        if batch.len() > 1 {
            match w.write(&batch).await {
                Ok(()) => {
                    w.health.up();
                    for job in batch.drain(..) {
                        answer_written(job);
                    }
                    continue;
                }
                Err(BatchError::Db(e)) if health::unreachable(&e) => {
                    // Unreachable: one by one would wait as long again for each.
                    w.health.failed(&w.db, &e);
                    for job in batch.drain(..) {
                        let e = DbErr::Custom(e.to_string());
                        answer_failed(&w.db, job, BatchError::Db(e)).await;
                    }
                    continue;
                }
                Err(_) => {}
            }
        }
        // One by one: each write gets its own answer.
        for job in batch.drain(..) {
            let res = w.write(std::slice::from_ref(&job)).await;
            match res {
                Ok(()) => {
                    w.health.up();
                    answer_written(job)
                }
                Err(e) => {
                    if let BatchError::Db(e) = &e {
                        w.health.failed(&w.db, e);
                    }
                    answer_failed(&w.db, job, e).await
                }
            }
        }
    }
}

/// Moves queued jobs into `batch` until it holds `limit` or the queue is empty.
fn fill(batch: &mut Vec<Job>, queue: &mut mpsc::UnboundedReceiver<Job>, limit: usize) {
    while batch.len() < limit {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

fn answer_written(job: Job) {
    match job {
        Job::Create(_, reply) => {
            let _ = reply.send(Ok(Created::New));
        }
        Job::Save(t, reply) => {
            let _ = reply.send(Ok(t.version + 1));
        }
    }
}

async fn answer_failed(db: &DatabaseConnection, job: Job, e: BatchError) {
    match (job, e) {
        (Job::Create(r, reply), BatchError::Exists) => {
            let existing = super::reads::load(db, &r.id).await;
            let _ = reply.send(match existing {
                Ok(Some(found)) => Ok(Created::Existing(Box::new(found))),
                Ok(None) => Err(StoreError::Db(DbErr::Custom(format!(
                    "saga {} both exists and does not",
                    r.id
                )))),
                Err(e) => Err(e),
            });
        }
        (Job::Create(_, reply), BatchError::Db(e)) => {
            let _ = reply.send(Err(e.into()));
        }
        (Job::Create(_, reply), BatchError::LeaseLost) => {
            let _ = reply.send(Err(StoreError::Unavailable(
                "this instance's lease ended before the saga was written".into(),
            )));
        }
        (Job::Create(r, reply), BatchError::Conflict) => {
            let _ = reply.send(Err(StoreError::Conflict(r.id.clone())));
        }
        (Job::Create(r, reply), BatchError::Purged) => {
            let _ = reply.send(match super::retention::tombstone(db, &r.id).await {
                Ok(Some(t)) => Ok(Created::Purged(Box::new(t))),
                Ok(None) => Err(StoreError::Conflict(r.id.clone())),
                Err(e) => Err(e),
            });
        }
        (Job::Save(_, reply), BatchError::Db(e)) => {
            let _ = reply.send(Err(e.into()));
        }
        (
            Job::Save(t, reply),
            BatchError::Conflict | BatchError::Exists | BatchError::LeaseLost | BatchError::Purged,
        ) => {
            let _ = reply.send(Err(StoreError::Conflict(t.id.clone())));
        }
    }
}

/// Writes every job in one transaction, or nothing.
async fn write_batch(db: &DatabaseConnection, jobs: &[Job]) -> Result<(), BatchError> {
    let (creates, saves) = split(jobs);
    if db.get_database_backend() == DbBackend::Postgres
        && creates.is_empty()
        && !records_operator_action(&saves)
    {
        // One call that commits itself: no BEGIN and COMMIT round trips. Only for transitions:
        // a call given up on (the timeout) may still commit, which a transition survives (its
        // actor reloads, and a stale write then fails its fence), but a new saga would stay
        // under this instance's lease with no actor driving it. In a transaction nothing
        // commits unless COMMIT is sent.
        return Ok(super::bulk::write_postgres(db, &creates, &saves).await?);
    }
    let txn = super::connect::begin(db).await?;
    match write_in(&txn, jobs).await {
        Ok(()) => Ok(txn.commit().await?),
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

/// The new sagas and the transitions of `jobs`, in their order.
fn split(jobs: &[Job]) -> (Vec<&NewSaga>, Vec<&Write>) {
    let creates = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Create(r, _) => Some(&**r),
            Job::Save(..) => None,
        })
        .collect();
    let saves = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Save(t, _) => Some(&**t),
            Job::Create(..) => None,
        })
        .collect();
    (creates, saves)
}

/// Whether one of `saves` records an operator's action (a row of its own).
fn records_operator_action(saves: &[&Write]) -> bool {
    saves.iter().any(|t| {
        t.calls
            .iter()
            .any(|c| matches!(c, LogRecord::Operator { .. }))
    })
}

async fn write_in(txn: &DatabaseTransaction, jobs: &[Job]) -> Result<(), BatchError> {
    let (creates, saves) = split(jobs);
    let mut owners: Vec<&str> = creates.iter().filter_map(|c| c.owner.as_deref()).collect();
    owners.sort_unstable();
    owners.dedup();
    let new_ids: Vec<&str> = creates.iter().map(|c| c.id.as_str()).collect();
    match txn.get_database_backend() {
        DbBackend::Sqlite => {
            // The rows in one call (bulk::batch_sql), both guards inside the insert. When a row
            // was not written, the guards say whether a new saga was left out (SQLite holds
            // its write lock from BEGIN: they see what the insert saw); otherwise a fence did
            // not match.
            if !super::bulk::write_sqlite(txn, &creates, &saves).await? {
                tokens_held(txn, &owners).await?;
                not_tombstoned(txn, &new_ids).await?;
                return Err(BatchError::Conflict);
            }
        }
        DbBackend::Postgres => {
            // The rows and both guards in one call (a batch with an operator's action: its
            // rows are inserted after it, in the same transaction).
            super::bulk::write_postgres(txn, &creates, &saves).await?;
        }
        _ => {
            tokens_held(txn, &owners).await?;
            super::bulk::insert_sagas(txn, &creates).await?;
            not_tombstoned(txn, &new_ids).await?;
            update_and_record(txn, &saves).await?;
        }
    }
    let ops: Vec<saga_operator_action::ActiveModel> = saves
        .iter()
        .flat_map(|t| t.calls.iter().filter_map(|c| rows::operator_row(&t.id, c)))
        .collect();
    insert_chunked(txn, ops).await?;
    Ok(())
}

/// Applies the transitions of `saves` (each fenced by its version and owner) and records
/// their calls.
async fn update_and_record(txn: &DatabaseTransaction, saves: &[&Write]) -> Result<(), BatchError> {
    if !saves.is_empty() && super::bulk::update(txn, saves).await? != saves.len() as u64 {
        return Err(BatchError::Conflict);
    }
    super::bulk::insert_calls(txn, saves).await?;
    Ok(())
}

/// The guard of new sagas on their lease tokens (SQLite and MariaDB/MySQL): each still has its
/// row, locked (on MariaDB/MySQL) until the commit against a takeover's delete.
async fn tokens_held(txn: &DatabaseTransaction, owners: &[&str]) -> Result<(), BatchError> {
    for owner in owners {
        if !super::instances::token_exists(txn, owner).await? {
            return Err(BatchError::LeaseLost);
        }
    }
    Ok(())
}

/// The guard of new sagas on purged ids (SQLite and MariaDB/MySQL), read after their insert: a
/// purge that deleted the id committed before it (the insert waited on its lock, or came
/// later), so its tombstone is seen. Padded to a fixed statement shape.
async fn not_tombstoned(txn: &DatabaseTransaction, ids: &[&str]) -> Result<(), BatchError> {
    for part in ids.chunks(MAX_CHUNK) {
        if !super::retention::tombstoned(txn, &padded(part))
            .await?
            .is_empty()
        {
            return Err(BatchError::Purged);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{pow2_sizes, MAX_CHUNK};

    #[test]
    fn batches_split_into_few_fixed_sizes() {
        assert_eq!(pow2_sizes(0), Vec::<usize>::new());
        assert_eq!(pow2_sizes(37), vec![32, 4, 1]);
        assert_eq!(pow2_sizes(64), vec![64]);
        assert_eq!(
            pow2_sizes(MAX_CHUNK * 2 + 3),
            vec![MAX_CHUNK, MAX_CHUNK, 2, 1]
        );
        for n in 0..2000 {
            let sizes = pow2_sizes(n);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= MAX_CHUNK));
        }
    }
}
