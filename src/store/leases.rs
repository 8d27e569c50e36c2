//! Ownership of sagas by several instances: instance leases (`saga_instances`, one row per lease
//! token, renewed by its instance), claims of due sagas and of the sagas of dead instances,
//! releases, and the operator actions waiting for a saga's owner.
//!
//! A saga is held by the token in `sagas.owner` as long as that token's row in `saga_instances`
//! has a lease end in the future. A claim is a conditional UPDATE of the owner, so that of two
//! instances claiming the same saga exactly one gets it; on MariaDB/MySQL and PostgreSQL the candidates are read with
//! `FOR UPDATE SKIP LOCKED`, so that instances polling at once split the work instead of
//! queueing on each other's rows.

use super::entities::{saga, saga_instance, saga_operator_request};
use super::{queries, rows, Claimed, LeaseTerms, OperatorRequest, StoreError};
use crate::domain::machine::ACTIVE_STATUSES;
use crate::domain::SagaStatus;
use sea_orm::sea_query::{Condition, Expr, LockBehavior, LockType, Query, SelectStatement};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, IsolationLevel,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use std::collections::HashMap;

fn active() -> impl Iterator<Item = &'static str> {
    ACTIVE_STATUSES.iter().map(|s| s.as_str())
}

/// What a claim by id may take: unfinished sagas, and stuck ones (for an operator's retry).
fn drivable() -> impl Iterator<Item = &'static str> {
    active().chain([SagaStatus::Stuck.as_str()])
}

/// The tokens whose lease holds at `now`.
fn live_owners(now: i64) -> SelectStatement {
    Query::select()
        .column(saga_instance::Column::Owner)
        .from(saga_instance::Entity)
        .and_where(saga_instance::Column::LeaseUntil.gte(now))
        .to_owned()
}

/// Held by a token whose lease ended (its instance died, stalled or stopped).
fn orphaned(now: i64) -> Condition {
    Condition::all()
        .add(saga::Column::Owner.is_not_null())
        .add(saga::Column::Owner.not_in_subquery(live_owners(now)))
}

/// Who may take a saga: nobody holds it, or its owner's lease ended.
fn claimable(now: i64) -> Condition {
    Condition::any()
        .add(saga::Column::Owner.is_null())
        .add(orphaned(now))
}

/// Claims the sagas that need a driver: unowned and due by the horizon, or with an expired lease.
pub(super) async fn claim_due(
    db: &DatabaseConnection,
    lease: &LeaseTerms,
    limit: u64,
) -> Result<Vec<Claimed>, StoreError> {
    let locking = db.get_database_backend() != DbBackend::Sqlite;
    let txn = if locking {
        // READ COMMITTED: InnoDB's locking reads then lock the rows they return, not the gaps
        // of the index ranges they scan, which would block the inserts of new sagas.
        db.begin_with_config(Some(IsolationLevel::ReadCommitted), None)
            .await?
    } else {
        super::writer::begin(db).await?
    };
    // Timers by idx_sagas_next_wake, sagas of dead tokens by owner (rarely any). Whole
    // rows, locked (or, on SQLite, under the write lock): what is read is what is claimed.
    let mut due = saga::Entity::find()
        .filter(saga::Column::NextWakeAt.lte(lease.horizon))
        .filter(saga::Column::Owner.is_null())
        .filter(saga::Column::Status.is_in(active()))
        .order_by_asc(saga::Column::NextWakeAt)
        .limit(limit);
    // The dead tokens first (a small table), then their sagas, only while there are any.
    let dead: Vec<String> = saga_instance::Entity::find()
        .select_only()
        .column(saga_instance::Column::Owner)
        .filter(saga_instance::Column::LeaseUntil.lt(lease.now))
        .into_tuple()
        .all(&txn)
        .await?;
    let mut expired = saga::Entity::find()
        .filter(saga::Column::Owner.is_in(dead.clone()))
        .filter(saga::Column::Status.is_in(active()))
        .limit(limit);
    if locking {
        due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        expired = expired.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let mut found = if dead.is_empty() {
        vec![]
    } else {
        expired.all(&txn).await?
    };
    if (found.len() as u64) < limit {
        // Dead tokens with no unfinished saga left (claimed by earlier polls) are forgotten, so
        // that they are not looked for again; a stuck saga left with one stays claimable by id.
        // A token with sagas found now waits for the next poll: rows skipped as locked by
        // another claim are seen again if that claim rolls back.
        let empty: Vec<String> = dead
            .iter()
            .filter(|d| !found.iter().any(|m| m.owner.as_deref() == Some(d.as_str())))
            .cloned()
            .collect();
        if !empty.is_empty() {
            saga_instance::Entity::delete_many()
                .filter(saga_instance::Column::Owner.is_in(empty))
                .filter(saga_instance::Column::LeaseUntil.lt(lease.now))
                .exec(&txn)
                .await?;
        }
    }
    if (found.len() as u64) < limit {
        found.extend(due.limit(limit - found.len() as u64).all(&txn).await?);
    }
    let ids: Vec<String> = found.iter().map(|m| m.id.clone()).collect();
    take(&txn, &ids, lease, claimable(lease.now), active()).await?;
    txn.commit().await?;
    Ok(found
        .into_iter()
        .filter_map(|mut m| {
            let taken_from = m.owner.take().filter(|o| *o != lease.owner);
            m.owner = Some(lease.owner.clone());
            match rows::record(m) {
                Ok(record) => Some(Claimed { record, taken_from }),
                Err(e) => {
                    // Claimed but unreadable: its lease ends with this instance's run.
                    tracing::warn!(error = %e, "claimed a saga that cannot be read");
                    None
                }
            }
        })
        .collect())
}

/// Claims the given sagas unless another instance holds a live lease on them.
pub(super) async fn claim(
    db: &DatabaseConnection,
    ids: &[String],
    lease: &LeaseTerms,
) -> Result<Vec<Claimed>, StoreError> {
    let before: HashMap<String, Option<String>> = saga::Entity::find()
        .select_only()
        .column(saga::Column::Id)
        .column(saga::Column::Owner)
        .filter(saga::Column::Id.is_in(ids.iter().cloned()))
        .into_tuple::<(String, Option<String>)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let mine = claimable(lease.now).add(saga::Column::Owner.eq(lease.owner.as_str()));
    take(db, ids, lease, mine, drivable()).await?;
    loaded(db, ids, lease, before).await
}

/// The conditional UPDATE of a claim: only rows that still satisfy `allowed` change hands.
async fn take<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
    lease: &LeaseTerms,
    allowed: Condition,
    statuses: impl Iterator<Item = &'static str>,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    saga::Entity::update_many()
        .col_expr(saga::Column::Owner, Expr::value(lease.owner.as_str()))
        .filter(saga::Column::Id.is_in(ids.iter().cloned()))
        .filter(saga::Column::Status.is_in(statuses))
        .filter(allowed)
        .exec(db)
        .await?;
    Ok(())
}

/// Loads the sagas of `ids` that `lease.owner` now holds; `before` tells whose lease each had.
async fn loaded(
    db: &DatabaseConnection,
    ids: &[String],
    lease: &LeaseTerms,
    before: HashMap<String, Option<String>>,
) -> Result<Vec<Claimed>, StoreError> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    Ok(queries::load_many(db, ids)
        .await?
        .into_iter()
        .filter(|r| r.owner.as_deref() == Some(lease.owner.as_str()))
        .map(|record| {
            let taken_from = before
                .get(&record.id)
                .cloned()
                .flatten()
                .filter(|o| *o != lease.owner);
            Claimed { record, taken_from }
        })
        .collect())
}

/// Records a new lease token of instance `instance_id`, holding until `until`.
pub(super) async fn register(
    db: &DatabaseConnection,
    owner: &str,
    instance_id: &str,
    until: i64,
) -> Result<(), StoreError> {
    saga_instance::Entity::insert(saga_instance::ActiveModel {
        owner: Set(owner.to_string()),
        instance_id: Set(instance_id.to_string()),
        lease_until: Set(until),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Ends the leases of the earlier runs of `instance_id` (of every instance when none: SQLite,
/// where this process holds the only lock) (a restart: they are dead), so that
/// their sagas are taken over at once rather than after the lease.
pub(super) async fn end_earlier_runs(
    db: &DatabaseConnection,
    instance_id: Option<&str>,
    except: &str,
) -> Result<u64, StoreError> {
    let mut q = saga_instance::Entity::update_many()
        .col_expr(saga_instance::Column::LeaseUntil, Expr::value(0i64))
        .filter(saga_instance::Column::Owner.ne(except))
        .filter(saga_instance::Column::LeaseUntil.gt(0i64));
    if let Some(id) = instance_id {
        q = q.filter(saga_instance::Column::InstanceId.eq(id));
    }
    let res = q.exec(db).await?;
    Ok(res.rows_affected)
}

/// Extends the lease of `owner`: one row, whatever the number of sagas it holds. Answers
/// whether the token is still registered.
pub(super) async fn renew(
    db: &DatabaseConnection,
    owner: &str,
    until: i64,
) -> Result<bool, StoreError> {
    let res = saga_instance::Entity::update_many()
        .col_expr(saga_instance::Column::LeaseUntil, Expr::value(until))
        .filter(saga_instance::Column::Owner.eq(owner))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Gives up the lease of `owner` on one saga it left as it was.
pub(super) async fn release(
    db: &DatabaseConnection,
    id: &str,
    owner: &str,
) -> Result<(), StoreError> {
    saga::Entity::update_many()
        .col_expr(saga::Column::Owner, Expr::value(Option::<String>::None))
        .filter(saga::Column::Id.eq(id))
        .filter(saga::Column::Owner.eq(owner))
        .exec(db)
        .await?;
    Ok(())
}

/// Gives up the leases of `owner`; what was due stays due, so another instance takes it at once.
pub(super) async fn release_all(db: &DatabaseConnection, owner: &str) -> Result<u64, StoreError> {
    let res = saga::Entity::update_many()
        .col_expr(saga::Column::Owner, Expr::value(Option::<String>::None))
        .col_expr(
            saga::Column::NextWakeAt,
            Expr::expr(sea_orm::sea_query::Func::coalesce([
                Expr::col(saga::Column::NextWakeAt),
                Expr::col(saga::Column::UpdatedAt),
            ])),
        )
        .filter(saga::Column::Owner.eq(owner))
        .exec(db)
        .await?;
    saga_instance::Entity::delete_by_id(owner.to_string())
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// Stores an operator action for the saga's owner.
pub(super) async fn request_operation(
    db: &DatabaseConnection,
    r: &OperatorRequest,
) -> Result<(), StoreError> {
    saga_operator_request::Entity::insert(saga_operator_request::ActiveModel {
        id: NotSet,
        saga_id: Set(r.saga_id.clone()),
        action: Set(r.action.clone()),
        who: Set(r.who.chars().take(255).collect()),
        at: Set(r.at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The waiting operator actions, oldest first.
pub(super) async fn operation_requests(
    db: &DatabaseConnection,
    limit: u64,
) -> Result<Vec<OperatorRequest>, StoreError> {
    Ok(saga_operator_request::Entity::find()
        .order_by_asc(saga_operator_request::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|m| OperatorRequest {
            request_id: m.id,
            saga_id: m.saga_id,
            action: m.action,
            who: m.who,
            at: m.at,
        })
        .collect())
}

/// Forgets a waiting operator action.
pub(super) async fn drop_operation_request(
    db: &DatabaseConnection,
    request_id: i64,
) -> Result<(), StoreError> {
    saga_operator_request::Entity::delete_by_id(request_id)
        .exec(db)
        .await?;
    Ok(())
}
