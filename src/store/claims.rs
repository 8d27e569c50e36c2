//! Ownership of sagas by several instances: claims of due sagas and of the sagas of dead
//! instances, releases, and the walk through the sagas an earlier run held.
//!
//! A saga is held by the token in `sagas.owner` as long as that token's row in `saga_instances`
//! ([`super::instances`]) has a lease end in the future. A claim is a conditional UPDATE of the
//! owner, so that of two instances claiming the same saga exactly one gets it; on MariaDB/MySQL
//! and PostgreSQL the candidates are read with `FOR UPDATE SKIP LOCKED`, so that instances
//! polling at once split the work instead of queueing on each other's rows.

use super::connect::begin;
use super::entities::{saga, saga_instance};
use super::{instances, rows, Claimed, Claims, LeaseTerms, OwnedCursor, StoreError};
use crate::domain::machine::UNFINISHED_STATUSES;
use sea_orm::sea_query::{Condition, Expr, LockBehavior, LockType, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, IsolationLevel,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

/// What a claim may take: sagas that have not ended. A stuck one is claimed by id for an
/// operator's action, or when due (a call of another step whose answer was lost goes again).
fn unfinished() -> impl Iterator<Item = &'static str> {
    UNFINISHED_STATUSES.iter().map(|s| s.as_str())
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

/// Claims the sagas that need a driver. First the sagas of tokens whose lease ended are let go
/// (one UPDATE per dead token, whose row is then deleted; each dead token is handled by one
/// instance: its row is locked); then the unowned sagas due by the horizon are claimed, at most
/// `limit`, through `idx_sagas_next_wake`.
pub(super) async fn claim_due(
    db: &DatabaseConnection,
    lease: &LeaseTerms,
    limit: u64,
) -> Result<Claims, StoreError> {
    let locking = db.get_database_backend() != DbBackend::Sqlite;
    let txn = if locking {
        // READ COMMITTED: InnoDB's locking reads then lock the rows they return, not the gaps
        // of the index ranges they scan, which would block the inserts of new sagas.
        db.begin_with_config(Some(IsolationLevel::ReadCommitted), None)
            .await?
    } else {
        begin(db).await?
    };
    let mut dead = saga_instance::Entity::find()
        .filter(saga_instance::Column::LeaseUntil.lt(lease.now))
        .filter(saga_instance::Column::Owner.ne(lease.owner.as_str()));
    let mut due = saga::Entity::find()
        .filter(saga::Column::NextWakeAt.lte(lease.horizon))
        .filter(saga::Column::Owner.is_null())
        .filter(saga::Column::Status.is_in(unfinished()))
        .order_by_asc(saga::Column::NextWakeAt)
        .limit(limit);
    if locking {
        dead = dead.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        due = due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    }
    let mut taken_over = Vec::new();
    for token in dead.all(&txn).await? {
        let n = let_go(&txn, &token.owner).await?;
        instances::delete(&txn, &token.owner).await?;
        taken_over.push((token.owner, n));
    }
    if lease.sweep_orphans {
        let n = let_go_orphans(&txn).await?;
        if n > 0 {
            taken_over.push((String::new(), n));
        }
    }
    // Whole rows, locked (or, on SQLite, under the write lock): what is read is what is claimed.
    let mut found = due.all(&txn).await?;
    let ids: Vec<String> = found.iter().map(|m| m.id.clone()).collect();
    if !take(&txn, &ids, lease, claimable(lease.now)).await? {
        found.clear();
    }
    txn.commit().await?;
    let sagas = found
        .into_iter()
        .filter_map(|mut m| {
            m.owner = Some(lease.owner.clone());
            match rows::record(m) {
                Ok(record) => Some(Claimed {
                    record,
                    taken_from: None,
                }),
                Err(e) => {
                    // Claimed but unreadable: its lease ends with this instance's run.
                    tracing::warn!(error = %e, "claimed a saga that cannot be read");
                    None
                }
            }
        })
        .collect();
    Ok(Claims { sagas, taken_over })
}

/// Lets go of every saga of `owner`. Answers how many.
async fn let_go<C: ConnectionTrait>(db: &C, owner: &str) -> Result<u64, StoreError> {
    let_go_where(db, Condition::all().add(saga::Column::Owner.eq(owner))).await
}

/// Lets go of the sagas matching `which`: no owner, and an unfinished one is due at once if it
/// had no timer (its calls in flight are lost with their owner). Answers how many.
async fn let_go_where<C: ConnectionTrait>(db: &C, which: Condition) -> Result<u64, StoreError> {
    let due_now = sea_orm::sea_query::CaseStatement::new()
        .case(
            saga::Column::Status.is_in(unfinished()),
            Expr::expr(sea_orm::sea_query::Func::coalesce([
                Expr::col(saga::Column::NextWakeAt),
                Expr::col(saga::Column::UpdatedAt),
            ])),
        )
        .finally(Expr::col(saga::Column::NextWakeAt));
    let res = saga::Entity::update_many()
        .col_expr(saga::Column::Owner, Expr::value(Option::<String>::None))
        .col_expr(saga::Column::NextWakeAt, due_now.into())
        .filter(which)
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// Lets go of the unfinished sagas whose token has no row: nobody would ever let go of them
/// otherwise. Creates and claims check the row (see [`token_exists`]), but that check rests on
/// row locks, which a multi-primary cluster (Galera) does not share between nodes; this sweep
/// is the net under it. A token without a row is dead for good: its holder's next renewal
/// fails (a renewal needs the row), and a write still under way is fenced off by the owner.
async fn let_go_orphans<C: ConnectionTrait>(db: &C) -> Result<u64, StoreError> {
    let all_tokens = Query::select()
        .column(saga_instance::Column::Owner)
        .from(saga_instance::Entity)
        .to_owned();
    let orphans = Condition::all()
        .add(saga::Column::Status.is_in(unfinished()))
        .add(saga::Column::Owner.is_not_null())
        .add(saga::Column::Owner.not_in_subquery(all_tokens));
    let_go_where(db, orphans).await
}

/// Claims the given sagas unless another instance holds a live lease on them (those this
/// instance holds already count as claimed). One transaction: the rows are read whole and
/// locked (on SQLite, under the write lock), the claimable ones taken by a conditional UPDATE;
/// what was read is what is claimed, with whose lease each had before.
pub(super) async fn claim(
    db: &DatabaseConnection,
    ids: &[String],
    lease: &LeaseTerms,
) -> Result<Vec<Claimed>, StoreError> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let mine = claimable(lease.now).add(saga::Column::Owner.eq(lease.owner.as_str()));
    let mut rows = saga::Entity::find()
        .filter(saga::Column::Id.is_in(ids.iter().cloned()))
        .filter(saga::Column::Status.is_in(unfinished()))
        .filter(mine.clone());
    if db.get_database_backend() != DbBackend::Sqlite {
        rows = rows.lock(LockType::Update);
    }
    let txn = begin(db).await?;
    let mut found = rows.all(&txn).await?;
    let taken: Vec<String> = found.iter().map(|m| m.id.clone()).collect();
    if !take(&txn, &taken, lease, mine).await? {
        found.clear();
    }
    txn.commit().await?;
    Ok(found
        .into_iter()
        .filter_map(|mut m| {
            let before = m.owner.replace(lease.owner.clone());
            let taken_from = before.filter(|o| *o != lease.owner);
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

/// The conditional UPDATE of a claim: only rows that still satisfy `allowed` change hands, and
/// only while the claimer's token has its row (see [`token_exists`]; `db` is a transaction).
async fn take<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
    lease: &LeaseTerms,
    allowed: Condition,
) -> Result<bool, StoreError> {
    if ids.is_empty() || !instances::token_exists(db, &lease.owner).await? {
        return Ok(false);
    }
    // The timer leaves the log with the claim (the owner keeps it in memory, and its next
    // transition writes the saga's next one): claimed sagas drop out of the index range that
    // polls read, which would otherwise grow with every saga claimed and not yet written.
    // Should the owner die first, `let_go` makes the saga due at once.
    saga::Entity::update_many()
        .col_expr(saga::Column::Owner, Expr::value(lease.owner.as_str()))
        .col_expr(saga::Column::NextWakeAt, Expr::value(Option::<i64>::None))
        .filter(saga::Column::Id.is_in(ids.iter().cloned()))
        .filter(saga::Column::Status.is_in(unfinished()))
        .filter(allowed)
        .exec(db)
        .await?;
    Ok(true)
}

/// A page of the ids of the unfinished sagas `owner` holds, from `from` on, at most `limit`;
/// answers where the next page starts (none: this was the last). Read per active status
/// through the index on (status, created_at, id), so that the walk costs the unfinished sagas,
/// not the log; ids only, so that the sagas themselves can be loaded several batches at once.
pub(super) async fn owned_page(
    db: &DatabaseConnection,
    owner: &str,
    from: &OwnedCursor,
    limit: u64,
) -> Result<(Vec<String>, Option<OwnedCursor>), StoreError> {
    let (mut cur, limit) = (from.clone(), limit.max(1));
    let mut page: Vec<String> = Vec::new();
    while let Some(status) = UNFINISHED_STATUSES.get(cur.status) {
        let mut q = saga::Entity::find()
            .select_only()
            .column(saga::Column::CreatedAt)
            .column(saga::Column::Id)
            .filter(saga::Column::Status.eq(status.as_str()))
            .filter(saga::Column::Owner.eq(owner));
        if let Some((created, id)) = &cur.after {
            // As in listings: `created_at >= c` bounds the index range, the OR sorts out the
            // sagas created in the cursor's millisecond.
            q = q.filter(saga::Column::CreatedAt.gte(*created)).filter(
                Condition::any()
                    .add(saga::Column::CreatedAt.gt(*created))
                    .add(saga::Column::Id.gt(id.as_str())),
            );
        }
        let left = limit - page.len() as u64;
        let rows: Vec<(i64, String)> = q
            .order_by_asc(saga::Column::CreatedAt)
            .order_by_asc(saga::Column::Id)
            .limit(left)
            .into_tuple()
            .all(db)
            .await?;
        let full = rows.len() as u64 == left;
        cur.after = rows.last().cloned();
        page.extend(rows.into_iter().map(|(_, id)| id));
        if full {
            return Ok((page, Some(cur)));
        }
        cur = OwnedCursor {
            status: cur.status + 1,
            after: None,
        };
    }
    Ok((page, None))
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
    let n = let_go(db, owner).await?;
    instances::delete(db, owner).await?;
    Ok(n)
}
