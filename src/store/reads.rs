//! Reads of the saga log: plain queries over a connection. [`Reads`] serves the API, the
//! start-up and the metrics scrape (a new query is one method here, and its caller); the
//! actors read through [`super::SagaLog`], which uses the same functions.

use super::entities::{saga, saga_call, saga_operator_action};
use super::sealed::Sealer;
use super::{rows, CallRow, ListQuery, OperatorRow, SagaRecord, StoreError};
use crate::domain::machine::ACTIVE_STATUSES;
use crate::domain::{SagaDefinition, SagaStatus};
use sea_orm::sea_query::{Asterisk, Condition, Expr, ExprTrait, Func, Query};
use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, IsolationLevel, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    TransactionTrait,
};

/// The reads behind the API, over the pool of the saga log; header values sealed at rest are
/// opened on the way out.
#[derive(Clone)]
pub struct Reads {
    db: DatabaseConnection,
    sealer: Sealer,
}

impl Reads {
    /// Reads over `db`, opening sealed values with `sealer`.
    pub fn new(db: DatabaseConnection, sealer: Sealer) -> Self {
        Reads { db, sealer }
    }

    /// One saga, whole.
    pub async fn load(&self, id: &str) -> Result<Option<SagaRecord>, StoreError> {
        Ok(load(&self.db, id)
            .await?
            .map(|r| self.sealer.open_record(r)))
    }

    /// The tombstone of a purged saga, while its id stays reserved.
    pub async fn tombstone(&self, id: &str) -> Result<Option<super::Tombstone>, StoreError> {
        super::retention::tombstone(&self.db, id).await
    }

    /// The calls of a saga, in order.
    pub async fn calls(&self, id: &str) -> Result<Vec<CallRow>, StoreError> {
        calls(&self.db, id).await
    }

    /// The operator actions on a saga, in order.
    pub async fn operator_actions(&self, id: &str) -> Result<Vec<OperatorRow>, StoreError> {
        operator_actions(&self.db, id).await
    }

    /// A page of sagas, newest first (see [`list`]).
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<SagaRecord>, StoreError> {
        list(&self.db, q).await
    }

    /// How many sagas of each (name, status) have not ended.
    pub async fn open_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        open_counts(&self.db).await
    }

    /// How many sagas (of `name`, if given) are in each status, each count at most `cap`.
    pub async fn status_counts(
        &self,
        name: Option<&str>,
        cap: u64,
    ) -> Result<Vec<(SagaStatus, u64)>, StoreError> {
        status_counts(&self.db, name, cap).await
    }

    /// True when the database answers and every migration is applied.
    pub async fn ready(&self) -> bool {
        self.db.ping().await.is_ok() && super::connect::migrated(&self.db).await
    }

    /// Unfinished sagas written before definitions were stored: their ids and requests.
    pub async fn without_definition(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let rs = without_definition(&self.db).await?;
        Ok(rs
            .into_iter()
            .map(|(id, mut req)| {
                self.sealer.open_request(&mut req);
                (id, req)
            })
            .collect())
    }

    /// Stores the resolved definition of a saga that has none yet (a one-off upgrade).
    pub async fn set_definition(&self, id: &str, def: &SagaDefinition) -> Result<(), StoreError> {
        set_definition(&self.db, id, &self.sealer.seal_definition(def)).await
    }
}

/// Statuses of sagas that have not ended (active or stuck), as stored.
fn open_statuses() -> impl Iterator<Item = &'static str> {
    SagaStatus::all()
        .filter(|s| !s.is_terminal())
        .map(SagaStatus::as_str)
}

/// One saga, whole.
pub(super) async fn load(
    db: &DatabaseConnection,
    id: &str,
) -> Result<Option<SagaRecord>, StoreError> {
    match saga::Entity::find_by_id(id.to_string()).one(db).await? {
        Some(m) => rows::record(m).map(Some),
        None => Ok(None),
    }
}

/// Several sagas, whole, with one query; unreadable rows are left out (logged).
pub(super) async fn load_many(
    db: &DatabaseConnection,
    ids: &[String],
) -> Result<Vec<SagaRecord>, StoreError> {
    let rows = saga::Entity::find()
        .filter(saga::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|m| {
            rows::record(m)
                .map_err(|e| tracing::warn!(error = %e, "saga left out of a batch load"))
                .ok()
        })
        .collect())
}

/// A page of sagas, newest first, without their requests and definitions.
///
/// Several statuses are read as one index range each (`status, created_at, id` or
/// `name, status, created_at, id`) and merged here: one range per query keeps a deep page as
/// cheap as the first on every database. The ranges are read in one snapshot: a saga that
/// moves from one status to another meanwhile is listed once, not twice or never.
pub(super) async fn list(
    db: &DatabaseConnection,
    q: &ListQuery,
) -> Result<Vec<SagaRecord>, StoreError> {
    // A name without statuses reads every status's range of (name, status, created_at, id).
    let all: Vec<SagaStatus>;
    let statuses = if q.statuses.is_empty() && q.name.is_some() {
        all = SagaStatus::all().collect();
        &all
    } else {
        &q.statuses
    };
    if statuses.len() <= 1 {
        return list_range(db, q).await;
    }
    let txn = read_snapshot(db).await?;
    let mut all: Vec<SagaRecord> = vec![];
    for st in statuses {
        let one = ListQuery {
            statuses: vec![*st],
            ..q.clone()
        };
        all.extend(list_range(&txn, &one).await?);
    }
    txn.commit().await?;
    all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    all.truncate(q.limit as usize);
    Ok(all)
}

/// A read-only transaction whose reads all see the log as of one moment.
async fn read_snapshot(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        // SQLite's transactions are serializable already (and sea-orm warns on a level).
        db.begin().await
    } else {
        // PostgreSQL's default (READ COMMITTED) takes a new snapshot per statement.
        db.begin_with_config(
            Some(IsolationLevel::RepeatableRead),
            Some(AccessMode::ReadOnly),
        )
        .await
    }
}

/// A page of one index range (at most one status).
async fn list_range(
    db: &impl ConnectionTrait,
    q: &ListQuery,
) -> Result<Vec<SagaRecord>, StoreError> {
    let mut query = saga::Entity::find().select_only().columns(rows::LISTED);
    if !q.statuses.is_empty() {
        query = query.filter(saga::Column::Status.is_in(q.statuses.iter().map(|s| s.as_str())));
    }
    if let Some(name) = &q.name {
        query = query.filter(saga::Column::Name.eq(name.as_str()));
    }
    if let Some((created, id)) = &q.after {
        // `created_at <= c` bounds the index range on every database; the OR only sorts out
        // the sagas created in the same millisecond as the cursor.
        query = query.filter(saga::Column::CreatedAt.lte(*created)).filter(
            Condition::any()
                .add(saga::Column::CreatedAt.lt(*created))
                .add(saga::Column::Id.lt(id.as_str())),
        );
    }
    query
        .order_by_desc(saga::Column::CreatedAt)
        .order_by_desc(saga::Column::Id)
        .limit(q.limit)
        .into_model::<rows::Listed>()
        .all(db)
        .await?
        .into_iter()
        .map(rows::listed_record)
        .collect()
}

/// The calls of a saga, in order.
async fn calls(db: &DatabaseConnection, id: &str) -> Result<Vec<CallRow>, StoreError> {
    saga_call::Entity::find()
        .filter(saga_call::Column::SagaId.eq(id))
        .order_by_asc(saga_call::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(rows::call_from_row)
        .collect()
}

/// The operator actions on a saga, in order.
async fn operator_actions(
    db: &DatabaseConnection,
    id: &str,
) -> Result<Vec<OperatorRow>, StoreError> {
    saga_operator_action::Entity::find()
        .filter(saga_operator_action::Column::SagaId.eq(id))
        .order_by_asc(saga_operator_action::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(rows::operator_from_row)
        .collect()
}

/// How many sagas of each (name, status) have not ended.
async fn open_counts(db: &DatabaseConnection) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(saga::Entity::find()
        .select_only()
        .column(saga::Column::Name)
        .column(saga::Column::Status)
        .column_as(Expr::expr(Func::count(Expr::col(saga::Column::Id))), "n")
        .filter(saga::Column::Status.is_in(open_statuses()))
        .group_by(saga::Column::Name)
        .group_by(saga::Column::Status)
        .into_tuple::<(String, String, i64)>()
        .all(db)
        .await?)
}

/// How many sagas there are in each status (of one name, if given), each counted up to `cap`:
/// a count reads at most `cap` entries of one index range, so it stays cheap on a large log.
/// All in one snapshot: a saga that changes status meanwhile counts once.
async fn status_counts(
    db: &DatabaseConnection,
    name: Option<&str>,
    cap: u64,
) -> Result<Vec<(SagaStatus, u64)>, StoreError> {
    let txn = read_snapshot(db).await?;
    let mut counts = Vec::new();
    for st in SagaStatus::all() {
        let mut ids = saga::Entity::find()
            .select_only()
            .column(saga::Column::Id)
            .filter(saga::Column::Status.eq(st.as_str()));
        if let Some(name) = name {
            ids = ids.filter(saga::Column::Name.eq(name));
        }
        let count = Query::select()
            .expr(Func::count(Expr::col(Asterisk)))
            .from_subquery(ids.limit(cap).into_query(), "capped")
            .to_owned();
        let n: i64 = match txn.query_one(&count).await? {
            Some(row) => row.try_get_by_index(0)?,
            None => 0,
        };
        counts.push((st, u64::try_from(n).unwrap_or(0)));
    }
    txn.commit().await?;
    Ok(counts)
}

/// Unfinished sagas without a stored definition: ids and requests.
async fn without_definition(
    db: &DatabaseConnection,
) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
    Ok(saga::Entity::find()
        .select_only()
        .column(saga::Column::Id)
        .column(saga::Column::Request)
        .filter(saga::Column::Definition.is_null())
        .filter(saga::Column::Status.is_in(open_statuses()))
        .into_tuple::<(String, serde_json::Value)>()
        .all(db)
        .await?
        .into_iter()
        .filter_map(|(id, r)| rows::request_of(r).ok().map(|r| (id, r)))
        .collect())
}

/// Fills a missing definition (never replaces one).
async fn set_definition(
    db: &DatabaseConnection,
    id: &str,
    def: &SagaDefinition,
) -> Result<(), StoreError> {
    saga::Entity::update_many()
        .col_expr(
            saga::Column::Definition,
            Expr::value(rows::definition_column(def)),
        )
        .filter(saga::Column::Id.eq(id))
        .filter(saga::Column::Definition.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Makes an active saga stuck with `reason`; answers whether it was active.
pub(super) async fn mark_stuck(
    db: &DatabaseConnection,
    id: &str,
    reason: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let res = saga::Entity::update_many()
        .col_expr(
            saga::Column::Status,
            Expr::value(SagaStatus::Stuck.as_str()),
        )
        .col_expr(saga::Column::Error, Expr::value(reason))
        .col_expr(saga::Column::NextWakeAt, Expr::value(Option::<i64>::None))
        .col_expr(saga::Column::Owner, Expr::value(Option::<String>::None))
        .col_expr(saga::Column::UpdatedAt, Expr::value(now))
        .col_expr(
            saga::Column::Version,
            Expr::col(saga::Column::Version).add(1),
        )
        .filter(saga::Column::Id.eq(id))
        .filter(saga::Column::Status.is_in(ACTIVE_STATUSES.map(|s| s.as_str())))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}
