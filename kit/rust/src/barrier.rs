//! The barrier's rules (docs/barrier.md): what a call finds in the barrier table decides whether
//! the business code runs, and what the participant answers.

use crate::call::{Phase, SagaCall};
use crate::conn::{Arg, BarrierTx, DbError, Dialect, StoredRow};
use crate::reply::Reply;
use chrono::Utc;
use serde_json::{json, Value};

/// Rows deleted per statement by the clean-up.
pub const CLEANUP_BATCH: u64 = 1000;
/// Largest answer body kept for replay; a larger one is replaced (first answer included) by a note.
pub const MAX_STORED_BODY: usize = 4096;
/// Calls for sagas this close to the retention window's end are refused too (clock skew).
const RETENTION_MARGIN: chrono::TimeDelta = chrono::TimeDelta::hours(1);

const DONE: &str = "done";
const REJECTED: &str = "rejected";
const TOMBSTONE: &str = "tombstone";

/// The barrier: its table and retention window. Cheap to clone; share one per service.
#[derive(Debug, Clone)]
pub struct Barrier {
    table: String,
    retention: chrono::TimeDelta,
}

impl Default for Barrier {
    fn default() -> Self {
        Barrier {
            table: "saga_barrier".into(),
            retention: chrono::TimeDelta::days(30),
        }
    }
}

/// What [`Barrier::enter`] found.
#[derive(Debug)]
pub enum Entry {
    /// Run the business code in the same transaction, then [`Guard::done`] and commit.
    Run(Guard),
    /// Answer this without running the business code; commit first (the barrier may have written
    /// a row, a tombstone say).
    Answered(Reply),
}

/// Permission to run the business code of one call; [`Guard::done`] records its answer.
#[derive(Debug)]
#[must_use = "call done() before committing, or the answer is not recorded"]
pub struct Guard {
    call: SagaCall,
    table: String,
}

impl Guard {
    /// The call being run.
    pub fn call(&self) -> &SagaCall {
        &self.call
    }

    /// Records the business code's answer (2xx, `body`) in the same transaction; commit next.
    pub async fn done<T: BarrierTx + ?Sized>(
        self,
        tx: &mut T,
        body: Value,
    ) -> Result<Reply, Reply> {
        let reply = Reply::ok(storable(body));
        let text = reply.body.to_string();
        let c = &self.call;
        tx.exec(
            &format!(
                "UPDATE {} SET http_status = ?, response_body = ? \
                 WHERE saga_id = ? AND step = ? AND phase = ? AND part = ?",
                self.table
            ),
            &[
                Arg::Int(reply.status as i16),
                Arg::Str(&text),
                Arg::Str(&c.saga_id),
                Arg::Str(&c.step),
                Arg::Str(c.phase.as_str()),
                Arg::Str(&c.part),
            ],
        )
        .await
        .map_err(db_reply)?;
        Ok(reply)
    }
}

/// A body small enough to store; a larger one becomes a note, so that a replay is identical.
fn storable(body: Value) -> Value {
    if body.to_string().len() <= MAX_STORED_BODY {
        body
    } else {
        json!({"note": format!("the answer was over {MAX_STORED_BODY} bytes and is not kept")})
    }
}

/// A database failure as an answer: 503 (the orchestrator retries).
pub(crate) fn db_reply(e: DbError) -> Reply {
    match e {
        DbError::Conflict(m) => Reply::retry(format!("lock conflict, try again: {m}")),
        other => Reply::retry(format!("database error: {other}")),
    }
}

impl Barrier {
    /// A barrier on table `saga_barrier` keeping rows 30 days.
    pub fn new() -> Barrier {
        Barrier::default()
    }

    /// Uses another table name (letters, digits and `_` only).
    pub fn table(mut self, name: &str) -> Barrier {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "a barrier table name is letters, digits and _"
        );
        self.table = name.to_string();
        self
    }

    /// Keeps rows this long after their saga was created (at least two hours).
    pub fn retention(mut self, keep: std::time::Duration) -> Barrier {
        let keep = chrono::TimeDelta::from_std(keep).unwrap_or(chrono::TimeDelta::MAX);
        assert!(
            keep > RETENTION_MARGIN * 2,
            "retention must exceed two hours"
        );
        self.retention = keep;
        self
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// `CREATE TABLE IF NOT EXISTS` for the barrier table (docs/barrier.md), per dialect; the
    /// same table as the Go kit's, so that both can share one.
    pub fn ddl(&self, dialect: Dialect) -> Vec<String> {
        let t = &self.table;
        match dialect {
            // Binary ASCII keys: saga ids are case-sensitive (a _ci collation would merge "A" and
            // "a"); DATETIME(3) in UTC, not TIMESTAMP, which ends in 2038.
            Dialect::MySql => {
                let key = "CHARACTER SET ascii COLLATE ascii_bin NOT NULL";
                vec![format!(
                    "CREATE TABLE IF NOT EXISTS {t} (\
                     saga_id VARCHAR(128) {key}, step VARCHAR(64) {key}, phase VARCHAR(12) {key}, \
                     part VARCHAR(32) {key} DEFAULT '', state VARCHAR(12) NOT NULL, \
                     http_status SMALLINT NOT NULL, response_body TEXT NOT NULL, \
                     request_sha256 CHAR(64) NOT NULL, saga_created_at DATETIME(3) NOT NULL, \
                     created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), \
                     PRIMARY KEY (saga_id, step, phase, part), \
                     INDEX saga_created_at (saga_created_at)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
                )]
            }
            _ => {
                let (ts, now) = if dialect == Dialect::Postgres {
                    ("TIMESTAMPTZ(3)", "CURRENT_TIMESTAMP(3)")
                } else {
                    ("TEXT", "CURRENT_TIMESTAMP")
                };
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {t} (\
                         saga_id VARCHAR(128) NOT NULL, step VARCHAR(64) NOT NULL, \
                         phase VARCHAR(12) NOT NULL, part VARCHAR(32) NOT NULL DEFAULT '', \
                         state VARCHAR(12) NOT NULL, http_status SMALLINT NOT NULL, \
                         response_body TEXT NOT NULL, request_sha256 CHAR(64) NOT NULL, \
                         saga_created_at {ts} NOT NULL, created_at {ts} NOT NULL DEFAULT {now}, \
                         PRIMARY KEY (saga_id, step, phase, part))"
                    ),
                    format!(
                        "CREATE INDEX IF NOT EXISTS {t}_saga_created_at ON {t} (saga_created_at)"
                    ),
                ]
            }
        }
    }

    /// Creates the table and its index if missing.
    pub async fn create_table<T: BarrierTx + ?Sized>(&self, tx: &mut T) -> Result<(), DbError> {
        for statement in self.ddl(tx.dialect()) {
            tx.exec(&statement, &[]).await?;
        }
        Ok(())
    }

    /// Decides what `call` does, writing the barrier rows in `tx` (the caller's transaction,
    /// which must also hold the business change). Errors are replies too (503 on a database
    /// failure); roll back on `Err`.
    pub async fn enter<T: BarrierTx + ?Sized>(
        &self,
        tx: &mut T,
        call: &SagaCall,
    ) -> Result<Entry, Reply> {
        if call.created_at < Utc::now() - self.retention + RETENTION_MARGIN {
            let msg = format!(
                "saga {} was created at {}, before this participant's barrier retention window: \
                 its barrier rows may be gone",
                call.saga_id, call.created_at
            );
            if call.phase.is_forward() {
                return Ok(Entry::Answered(Reply::refused(msg)));
            }
            tracing::error!(alert = true, saga_id = %call.saga_id, step = %call.step,
                phase = call.phase.as_str(), "{msg}; not undoing blindly");
            return Err(Reply::retry(msg));
        }
        if tx.dialect() == Dialect::Postgres {
            // A duplicate waits for the first copy's row lock; five seconds, then 503 and a retry.
            tx.exec("SET LOCAL lock_timeout = '5s'", &[])
                .await
                .map_err(db_reply)?;
        }
        match call.phase {
            Phase::Action | Phase::Try => self.enter_forward(tx, call).await,
            Phase::Compensation | Phase::Cancel => self.enter_undo(tx, call).await,
            Phase::Confirm => self.enter_confirm(tx, call).await,
        }
        .map_err(db_reply)
        .and_then(|r| r)
    }

    async fn enter_forward<T: BarrierTx + ?Sized>(
        &self,
        tx: &mut T,
        call: &SagaCall,
    ) -> Result<Result<Entry, Reply>, DbError> {
        if self.insert(tx, call, call.phase, DONE, 0, "").await? {
            return Ok(Ok(self.guard(call)));
        }
        // A copy's answer, or the tombstone of an undo that came first (its stored 409).
        Ok(self
            .replay_own(tx, call, call.phase)
            .await?
            .map(Entry::Answered))
    }

    async fn enter_undo<T: BarrierTx + ?Sized>(
        &self,
        tx: &mut T,
        call: &SagaCall,
    ) -> Result<Result<Entry, Reply>, DbError> {
        let origin = call.phase.origin();
        let refusal = json!({"error": format!(
            "the {} of this step arrived first: this {} is too late and does nothing",
            call.phase.as_str(), origin.as_str())})
        .to_string();
        // Origin first (the lock order of every call of a step): a tombstone there, if the
        // forward call never came, makes it refuse when it does.
        let null = self
            .insert(tx, call, origin, TOMBSTONE, 409, &refusal)
            .await?;
        if !self.insert(tx, call, call.phase, DONE, 0, "").await? {
            return Ok(self
                .replay_own(tx, call, call.phase)
                .await?
                .map(Entry::Answered));
        }
        if null {
            let body = json!({"null_compensation": true, "detail": format!(
                "no {} was done for this step: nothing to undo", origin.as_str())});
            return self.finish(tx, call, body).await;
        }
        let origin_row = self.read(tx, call, origin).await?;
        match origin_row {
            Some(r) if r.state == DONE => Ok(Ok(self.guard(call))),
            _ => {
                let body = json!({"detail": format!(
                    "the {} was refused: nothing to undo", origin.as_str())});
                self.finish(tx, call, body).await
            }
        }
    }

    async fn enter_confirm<T: BarrierTx + ?Sized>(
        &self,
        tx: &mut T,
        call: &SagaCall,
    ) -> Result<Result<Entry, Reply>, DbError> {
        let tried = self.read(tx, call, Phase::Try).await?;
        if tried.as_ref().map(|r| r.state.as_str()) != Some(DONE) {
            let msg = "confirm without a successful try: the orchestrator never does this";
            tracing::error!(alert = true, saga_id = %call.saga_id, step = %call.step, "{msg}");
            return Ok(Err(Reply::error(msg)));
        }
        if self.insert(tx, call, Phase::Confirm, DONE, 0, "").await? {
            return Ok(Ok(self.guard(call)));
        }
        Ok(self
            .replay_own(tx, call, Phase::Confirm)
            .await?
            .map(Entry::Answered))
    }

    /// Records that the business code refused a forward call, in a new transaction after the
    /// caller rolled back its own: a retry then gets the same 409. A refusal to undo or confirm
    /// is a bug and answers 500 (a 409 there would make the saga stuck at once). Commit after.
    pub async fn reject<T: BarrierTx + ?Sized>(
        &self,
        tx: &mut T,
        call: &SagaCall,
        msg: &str,
    ) -> Reply {
        if !call.phase.is_forward() {
            tracing::error!(alert = true, saga_id = %call.saga_id, step = %call.step,
                phase = call.phase.as_str(), reason = msg, "a participant refused to undo or confirm");
            return Reply::error(format!(
                "a {} must not be refused ({msg}); fix the participant",
                call.phase.as_str()
            ));
        }
        let reply = Reply::refused(msg);
        let body = reply.body.to_string();
        match self
            .insert(tx, call, call.phase, REJECTED, 409, &body)
            .await
        {
            Ok(true) => reply,
            // Someone wrote the row meanwhile (a copy, or a compensation's tombstone).
            Ok(false) => match self.replay_own(tx, call, call.phase).await {
                Ok(r) => r.unwrap_or_else(|e| e),
                Err(e) => db_reply(e),
            },
            Err(e) => db_reply(e),
        }
    }

    /// Deletes at most [`CLEANUP_BATCH`] rows of sagas created more than `older_than` ago;
    /// answers how many. `older_than` shorter than the retention window is refused: the barrier
    /// still trusts those rows.
    pub async fn cleanup_batch<T: BarrierTx + ?Sized>(
        &self,
        tx: &mut T,
        older_than: std::time::Duration,
    ) -> Result<u64, DbError> {
        let older = chrono::TimeDelta::from_std(older_than).unwrap_or(chrono::TimeDelta::MAX);
        if older < self.retention {
            return Err(DbError::Other(format!(
                "cleanup of rows younger than the retention window ({} days) refused",
                self.retention.num_days()
            )));
        }
        let cutoff = Utc::now() - older;
        let t = &self.table;
        let sql = match tx.dialect() {
            Dialect::MySql => {
                format!("DELETE FROM {t} WHERE saga_created_at < ? LIMIT {CLEANUP_BATCH}")
            }
            Dialect::Postgres => format!(
                "DELETE FROM {t} WHERE ctid IN \
                 (SELECT ctid FROM {t} WHERE saga_created_at < ? LIMIT {CLEANUP_BATCH})"
            ),
            Dialect::Sqlite => format!(
                "DELETE FROM {t} WHERE rowid IN \
                 (SELECT rowid FROM {t} WHERE saga_created_at < ? LIMIT {CLEANUP_BATCH})"
            ),
        };
        tx.exec(&sql, &[Arg::Time(cutoff)]).await
    }

    fn guard(&self, call: &SagaCall) -> Entry {
        Entry::Run(Guard {
            call: call.clone(),
            table: self.table.clone(),
        })
    }

    /// The stored answer of a duplicate, unless the key came back with another request.
    fn replay(&self, call: &SagaCall, r: &StoredRow) -> Result<Reply, Reply> {
        if r.request_sha256 != call.body_sha256() && r.state != TOMBSTONE {
            let msg = format!(
                "Idempotency-Key {}/{}/{} was used before with another request body",
                call.saga_id,
                call.step,
                call.phase.as_str()
            );
            tracing::error!(alert = true, "{msg}");
            return Err(if call.phase.is_forward() {
                Reply::new(422, json!({"error": msg}))
            } else {
                Reply::error(msg)
            });
        }
        if r.http_status == 0 {
            // Committed without done(): the handler's bug, not the caller's.
            return Err(Reply::error(
                "the first call of this key committed without an answer",
            ));
        }
        let body = serde_json::from_str(&r.response_body)
            .unwrap_or_else(|_| Value::String(r.response_body.clone()));
        Ok(Reply::new(r.http_status as u16, body))
    }

    /// The answer stored in this call's own row by whoever wrote it first.
    async fn replay_own<T: BarrierTx + ?Sized>(
        &self,
        tx: &mut T,
        call: &SagaCall,
        phase: Phase,
    ) -> Result<Result<Reply, Reply>, DbError> {
        Ok(match self.read(tx, call, phase).await? {
            Some(r) => self.replay(call, &r),
            None => Err(Reply::retry("the barrier row vanished; try again")),
        })
    }

    /// Writes the own row's answer when the barrier itself answers (null or no-op undo).
    async fn finish<T: BarrierTx + ?Sized>(
        &self,
        tx: &mut T,
        call: &SagaCall,
        body: Value,
    ) -> Result<Result<Entry, Reply>, DbError> {
        let guard = Guard {
            call: call.clone(),
            table: self.table.clone(),
        };
        Ok(match guard.done(tx, body).await {
            Ok(r) => Ok(Entry::Answered(r)),
            Err(r) => Err(r),
        })
    }

    /// Inserts a row unless its key exists (waiting for an uncommitted copy's lock); answers
    /// whether it did. A tombstone stands for a call that never came: it has no request hash.
    async fn insert<T: BarrierTx + ?Sized>(
        &self,
        tx: &mut T,
        call: &SagaCall,
        phase: Phase,
        state: &str,
        status: i16,
        body: &str,
    ) -> Result<bool, DbError> {
        let sha = if state == TOMBSTONE {
            String::new()
        } else {
            call.body_sha256()
        };
        let conflict = match tx.dialect() {
            // A plain INSERT, never INSERT IGNORE: that would also hide a truncated key.
            Dialect::MySql => "",
            _ => " ON CONFLICT DO NOTHING",
        };
        let sql = format!(
            "INSERT INTO {} (saga_id, step, phase, part, state, http_status, response_body, \
             request_sha256, saga_created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?){conflict}",
            self.table
        );
        let args = [
            Arg::Str(&call.saga_id),
            Arg::Str(&call.step),
            Arg::Str(phase.as_str()),
            Arg::Str(&call.part),
            Arg::Str(state),
            Arg::Int(status),
            Arg::Str(body),
            Arg::Str(&sha),
            Arg::Time(call.created_at),
        ];
        match tx.exec(&sql, &args).await {
            Ok(n) => Ok(n > 0),
            Err(DbError::Duplicate) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn read<T: BarrierTx + ?Sized>(
        &self,
        tx: &mut T,
        call: &SagaCall,
        phase: Phase,
    ) -> Result<Option<StoredRow>, DbError> {
        // A shared lock: the rows read are never changed once committed, and the copies that
        // waited on a duplicate INSERT already hold one; an exclusive lock here would make
        // them deadlock on each other (MariaDB 1213, seen with 16 concurrent copies).
        let lock = match tx.dialect() {
            Dialect::MySql => " LOCK IN SHARE MODE",
            Dialect::Postgres => " FOR SHARE",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "SELECT state, http_status, response_body, request_sha256 FROM {} \
             WHERE saga_id = ? AND step = ? AND phase = ? AND part = ?{lock}",
            self.table
        );
        tx.row(
            &sql,
            &[
                Arg::Str(&call.saga_id),
                Arg::Str(&call.step),
                Arg::Str(phase.as_str()),
                Arg::Str(&call.part),
            ],
        )
        .await
    }
}
