//! Retention in the log (docs/saga-log.md, "Retention"): which ended sagas are due, purging
//! them whole with a tombstone each, the tombstones' own end, pinning a saga, and the turn
//! that lets one instance at a time sweep.
//!
//! When a saga is due is decided by the domain (`Retention::purge_at`, written by the
//! transition that ends it); here it is only read back through `idx_sagas_purge`.

use super::connect::begin;
use super::entities::{
    saga, saga_call, saga_operator_action, saga_operator_request, saga_sweep, saga_tombstone,
};
use super::StoreError;
use crate::domain::SagaStatus;
use sea_orm::sea_query::{Expr, LockType, OnConflict};
use sea_orm::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};

/// What is left of a purged saga while its id stays reserved.
#[derive(Debug, Clone, PartialEq)]
pub struct Tombstone {
    /// The saga's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// SHA-256 (hex) of its start request as received.
    pub request_sha256: String,
    /// How it ended.
    pub status: SagaStatus,
    /// When it ended (ms).
    pub finished_at: i64,
    /// When it was purged (ms).
    pub purged_at: i64,
    /// The archive file holding it (relative to `retention.archive_dir`), if archived.
    pub archived_in: Option<String>,
    /// When the id is free again (ms).
    pub expires_at: i64,
}

impl Tombstone {
    fn from_row(m: saga_tombstone::Model) -> Result<Self, StoreError> {
        Ok(Tombstone {
            status: SagaStatus::parse(&m.status)
                .ok_or_else(|| StoreError::Corrupt(format!("tombstone {}: status", m.id)))?,
            id: m.id,
            name: m.name,
            request_sha256: m.request_sha256,
            finished_at: m.finished_at,
            purged_at: m.purged_at,
            archived_in: m.archived_in,
            expires_at: m.expires_at,
        })
    }

    fn row(&self) -> saga_tombstone::ActiveModel {
        saga_tombstone::ActiveModel {
            id: Set(self.id.clone()),
            name: Set(self.name.clone()),
            request_sha256: Set(self.request_sha256.clone()),
            status: Set(self.status.as_str().to_string()),
            finished_at: Set(self.finished_at),
            purged_at: Set(self.purged_at),
            archived_in: Set(self.archived_in.clone()),
            expires_at: Set(self.expires_at),
        }
    }
}

/// The sweep's side of the log, over its own pool (never the log writer's queue).
#[derive(Clone)]
pub struct Purger {
    db: DatabaseConnection,
}

/// The name of the retention sweep's row in `saga_sweeps`.
const SWEEP: &str = "retention";

impl Purger {
    /// Over `db`.
    pub(super) fn new(db: DatabaseConnection) -> Self {
        Purger { db }
    }

    /// Takes (or keeps) the turn to sweep for `holder` until `until`, unless another holder's
    /// turn lasts past `now`. Answers whether it is `holder`'s turn.
    pub async fn take_turn(&self, holder: &str, now: i64, until: i64) -> Result<bool, StoreError> {
        let res = saga_sweep::Entity::update_many()
            .col_expr(saga_sweep::Column::Holder, Expr::value(holder))
            .col_expr(saga_sweep::Column::HeldUntil, Expr::value(until))
            .filter(saga_sweep::Column::Name.eq(SWEEP))
            .filter(
                saga_sweep::Column::Holder
                    .eq(holder)
                    .or(saga_sweep::Column::HeldUntil.lt(now))
                    .or(saga_sweep::Column::Holder.is_null()),
            )
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Gives the turn up (a stop), so that another instance sweeps at once.
    pub async fn give_up_turn(&self, holder: &str) -> Result<(), StoreError> {
        saga_sweep::Entity::update_many()
            .col_expr(saga_sweep::Column::HeldUntil, Expr::value(0i64))
            .filter(saga_sweep::Column::Name.eq(SWEEP))
            .filter(saga_sweep::Column::Holder.eq(holder))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The ids of at most `limit` sagas due to leave by `now`, the longest due first.
    pub async fn due(&self, now: i64, limit: u64) -> Result<Vec<String>, StoreError> {
        Ok(due_by(now, limit)
            .column(saga::Column::Id)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }

    /// When the saga due the longest was due, if any is due by `now`.
    pub async fn oldest_due(&self, now: i64) -> Result<Option<i64>, StoreError> {
        Ok(due_by(now, 1)
            .column(saga::Column::PurgeAt)
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten())
    }

    /// Deletes these sagas, each whole with its calls and operator rows, and writes their
    /// tombstones, in one transaction; a saga pinned or changed since it was found due is left
    /// alone. Answers the tombstones written.
    pub async fn purge(
        &self,
        doomed: &[Tombstone],
        now: i64,
    ) -> Result<Vec<Tombstone>, StoreError> {
        if doomed.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<String> = doomed.iter().map(|t| t.id.clone()).collect();
        let txn = begin(&self.db).await?;
        // Read by primary key only: with the due condition in the query, SQLite walked the
        // whole due range of idx_sagas_purge instead (a backlog of a million: seconds per
        // batch, the log writer waiting meanwhile). The condition is `due_by`'s, checked here.
        let mut find = saga::Entity::find()
            .select_only()
            .column(saga::Column::Id)
            .column(saga::Column::Kept)
            .column(saga::Column::PurgeAt)
            .filter(saga::Column::Id.is_in(ids.iter().cloned()));
        if self.db.get_database_backend() != DbBackend::Sqlite {
            // A keep that comes meanwhile waits for this transaction, or this one skips it.
            find = find.lock(LockType::Update);
        }
        let rows: Vec<(String, bool, Option<i64>)> = find.into_tuple().all(&txn).await?;
        let found: Vec<String> = rows
            .into_iter()
            .filter(|(_, kept, at)| !kept && at.is_some_and(|at| at <= now))
            .map(|(id, ..)| id)
            .collect();
        if found.is_empty() {
            txn.commit().await?;
            return Ok(vec![]);
        }
        let gone: Vec<Tombstone> = doomed
            .iter()
            .filter(|t| found.contains(&t.id))
            .cloned()
            .collect();
        saga_call::Entity::delete_many()
            .filter(saga_call::Column::SagaId.is_in(found.iter().cloned()))
            .exec(&txn)
            .await?;
        saga_operator_action::Entity::delete_many()
            .filter(saga_operator_action::Column::SagaId.is_in(found.iter().cloned()))
            .exec(&txn)
            .await?;
        saga_operator_request::Entity::delete_many()
            .filter(saga_operator_request::Column::SagaId.is_in(found.iter().cloned()))
            .exec(&txn)
            .await?;
        let deleted = saga::Entity::delete_many()
            .filter(saga::Column::Id.is_in(found.iter().cloned()))
            .exec(&txn)
            .await?;
        if deleted.rows_affected != found.len() as u64 {
            let _ = txn.rollback().await;
            return Err(StoreError::Conflict(found.join(",")));
        }
        // A tombstone left from an earlier saga of the same id (expired, not yet swept) is
        // replaced.
        saga_tombstone::Entity::insert_many(gone.iter().map(Tombstone::row))
            .on_conflict(
                OnConflict::column(saga_tombstone::Column::Id)
                    .update_columns([
                        saga_tombstone::Column::Name,
                        saga_tombstone::Column::RequestSha256,
                        saga_tombstone::Column::Status,
                        saga_tombstone::Column::FinishedAt,
                        saga_tombstone::Column::PurgedAt,
                        saga_tombstone::Column::ArchivedIn,
                        saga_tombstone::Column::ExpiresAt,
                    ])
                    .to_owned(),
            )
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(gone)
    }

    /// Deletes at most `limit` tombstones that expired by `now` (their ids are free again).
    pub async fn expire_tombstones(&self, now: i64, limit: u64) -> Result<u64, StoreError> {
        let ids: Vec<String> = saga_tombstone::Entity::find()
            .select_only()
            .column(saga_tombstone::Column::Id)
            .filter(saga_tombstone::Column::ExpiresAt.lte(now))
            .order_by_asc(saga_tombstone::Column::ExpiresAt)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        // By primary key only (see `purge`): an expired tombstone stays expired, and its id
        // takes no new saga while it exists.
        Ok(saga_tombstone::Entity::delete_many()
            .filter(saga_tombstone::Column::Id.is_in(ids))
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    /// Pins (`kept`) or unpins a saga, with an operator-action row naming `who` (its audit),
    /// in one transaction. Answers whether the saga exists.
    pub async fn set_kept(
        &self,
        id: &str,
        kept: bool,
        who: &str,
        at: i64,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let txn = begin(&self.db).await?;
        let mut find = saga::Entity::find_by_id(id.to_string())
            .select_only()
            .column(saga::Column::Id);
        if self.db.get_database_backend() != DbBackend::Sqlite {
            find = find.lock(LockType::Update);
        }
        if find.into_tuple::<String>().one(&txn).await?.is_none() {
            txn.commit().await?;
            return Ok(false);
        }
        saga::Entity::update_many()
            .col_expr(saga::Column::Kept, Expr::value(kept))
            .filter(saga::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        saga_operator_action::ActiveModel {
            id: sea_orm::NotSet,
            saga_id: Set(id.to_string()),
            action: Set(if kept { super::KEEP } else { super::UNKEEP }.to_string()),
            who: Set(who.to_string()),
            at: Set(at),
            detail: Set(super::OperatorDetail {
                reason: reason.map(String::from),
                ..Default::default()
            }
            .column()),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// The tombstone of a purged saga, while its id stays reserved.
    pub async fn tombstone(&self, id: &str) -> Result<Option<Tombstone>, StoreError> {
        tombstone(&self.db, id).await
    }
}

/// The sagas due by `now` through `idx_sagas_purge`, the longest due first, no column chosen.
fn due_by(now: i64, limit: u64) -> sea_orm::Select<saga::Entity> {
    saga::Entity::find()
        .select_only()
        .filter(saga::Column::Kept.eq(false))
        .filter(saga::Column::PurgeAt.lte(now))
        .order_by_asc(saga::Column::PurgeAt)
        .limit(limit)
}

/// The tombstone of `id`, if there is one.
pub(super) async fn tombstone<C: ConnectionTrait>(
    db: &C,
    id: &str,
) -> Result<Option<Tombstone>, StoreError> {
    saga_tombstone::Entity::find_by_id(id.to_string())
        .one(db)
        .await?
        .map(Tombstone::from_row)
        .transpose()
}

/// Which of `ids` have a tombstone: read by the log writer after inserting new sagas, in the
/// same transaction, so that a purge committed just before cannot be missed.
pub(super) async fn tombstoned<C: ConnectionTrait>(
    db: &C,
    ids: &[&str],
) -> Result<Vec<String>, sea_orm::DbErr> {
    saga_tombstone::Entity::find()
        .select_only()
        .column(saga_tombstone::Column::Id)
        .filter(saga_tombstone::Column::Id.is_in(ids.iter().map(|s| s.to_string())))
        .into_tuple()
        .all(db)
        .await
}

/// SHA-256 (hex) of a start request as received, kept in its saga's tombstone so that a late
/// retry can be told apart from another request under the same id.
pub fn request_sha256(request: &serde_json::Value) -> String {
    crate::auth::sha256_hex(&request.to_string())
}
