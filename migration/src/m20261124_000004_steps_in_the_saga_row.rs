//! The saga log's second layout: the state of every step lives in the saga row (one UPDATE per
//! transition instead of one per changed step), and the call history is append-only (a call is
//! written once, when its answer is accepted; the start of a call in flight is in the step's
//! state).
//!
//! Adds `sagas.step_names` (names and service labels, written once) and `sagas.steps` (the
//! step states as JSON, the same field names as `saga_steps` had), fills them from
//! `saga_steps`, moves the start time of unfinished calls into the state of their step and
//! deletes those rows, then drops `saga_steps`. The history's unique index (saga, step, phase,
//! attempt) becomes a plain index on the saga id. Replaces the index on (name, created_at, id)
//! with one on (name, status, created_at, id), which listings filtered by name read.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, QueryResult};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Moves step states into `sagas` and drops `saga_steps`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sagas {
    Table,
    Id,
    Name,
    Status,
    CreatedAt,
    StepNames,
    Steps,
}

#[derive(DeriveIden)]
enum SagaSteps {
    Table,
    SagaId,
    Idx,
}

#[derive(DeriveIden)]
enum SagaCalls {
    Table,
    SagaId,
    StepIdx,
    StartedAt,
    FinishedAt,
}

/// Sagas converted per round trip.
const PAGE: u64 = 500;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let backend = m.get_database_backend();
        for col in [Sagas::StepNames, Sagas::Steps] {
            let mut c = ColumnDef::new(col);
            match backend {
                // TEXT holds 64 KiB on MySQL: 64 steps with long errors can pass that.
                DbBackend::MySql => c.custom(Alias::new("LONGTEXT")),
                _ => c.text(),
            };
            m.alter_table(
                Table::alter()
                    .table(Sagas::Table)
                    .add_column(c.null())
                    .to_owned(),
            )
            .await?;
        }
        let mut after = String::new();
        loop {
            let ids = page_of_ids(m, &after).await?;
            let Some(last) = ids.last() else { break };
            after = last.clone();
            convert(m, &ids).await?;
        }
        let db = m.get_connection();
        let unfinished = Query::delete()
            .from_table(SagaCalls::Table)
            .and_where(Expr::col(SagaCalls::FinishedAt).is_null())
            .to_owned();
        db.execute(&unfinished).await?;
        // History rows are written once and read by saga: a plain index on saga_id replaces the
        // unique one the insert-then-update layout needed (cheaper to maintain on insert).
        m.drop_index(
            Index::drop()
                .name("idx_saga_calls_call")
                .table(SagaCalls::Table)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_saga_calls_saga")
                .table(SagaCalls::Table)
                .col(SagaCalls::SagaId)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(SagaSteps::Table).to_owned())
            .await?;
        // Listings filtered by name read one range of this index per status; it replaces the
        // index on (name, created_at, id), so a write maintains as many indexes as before.
        m.drop_index(
            Index::drop()
                .name("idx_sagas_name_created")
                .table(Sagas::Table)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_sagas_name_status_created")
                .table(Sagas::Table)
                .col(Sagas::Name)
                .col(Sagas::Status)
                .col(Sagas::CreatedAt)
                .col(Sagas::Id)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, _: &SchemaManager) -> Result<(), DbErr> {
        Err(DbErr::Migration(
            "the step states moved into sagas.steps; restore a backup to go back".into(),
        ))
    }
}

async fn page_of_ids(m: &SchemaManager<'_>, after: &str) -> Result<Vec<String>, DbErr> {
    let db = m.get_connection();
    let q = Query::select()
        .column(Sagas::Id)
        .from(Sagas::Table)
        .and_where(Expr::col(Sagas::Id).gt(after))
        .order_by(Sagas::Id, Order::Asc)
        .limit(PAGE)
        .to_owned();
    db.query_all(&q)
        .await?
        .iter()
        .map(|r| r.try_get::<String>("", "id"))
        .collect()
}

fn get<T: sea_orm_migration::sea_orm::TryGetable>(r: &QueryResult, col: &str) -> Result<T, DbErr> {
    r.try_get::<T>("", col)
}

/// Writes `step_names` and `steps` of these sagas from their `saga_steps` rows.
async fn convert(m: &SchemaManager<'_>, ids: &[String]) -> Result<(), DbErr> {
    let db = m.get_connection();
    let started = Query::select()
        .column(SagaCalls::SagaId)
        .column(SagaCalls::StepIdx)
        .expr_as(
            Expr::col(SagaCalls::StartedAt).max(),
            Alias::new("started_at"),
        )
        .from(SagaCalls::Table)
        .and_where(Expr::col(SagaCalls::FinishedAt).is_null())
        .and_where(Expr::col(SagaCalls::SagaId).is_in(ids.iter().cloned()))
        .group_by_col(SagaCalls::SagaId)
        .group_by_col(SagaCalls::StepIdx)
        .to_owned();
    let mut started_at: HashMap<(String, i32), i64> = HashMap::new();
    for r in db.query_all(&started).await? {
        started_at.insert(
            (get(&r, "saga_id")?, get(&r, "step_idx")?),
            get(&r, "started_at")?,
        );
    }
    let steps = Query::select()
        .expr(Expr::cust("*"))
        .from(SagaSteps::Table)
        .and_where(Expr::col(SagaSteps::SagaId).is_in(ids.iter().cloned()))
        .order_by(SagaSteps::SagaId, Order::Asc)
        .order_by(SagaSteps::Idx, Order::Asc)
        .to_owned();
    let mut per_saga: HashMap<String, (Vec<Value>, Vec<Value>)> = HashMap::new();
    for r in db.query_all(&steps).await? {
        let saga: String = get(&r, "saga_id")?;
        let idx: i32 = get(&r, "idx")?;
        let in_flight: bool = get(&r, "in_flight")?;
        let mut state = json!({
            "status": get::<String>(&r, "status")?,
            "phase": get::<String>(&r, "operation")?,
            "attempts": get::<i32>(&r, "attempts")?,
            "compensation_attempts": get::<i32>(&r, "compensation_attempts")?,
            "confirm_attempts": get::<i32>(&r, "confirm_attempts")?,
            "budget_base": get::<i32>(&r, "budget_base")?,
            "may_have_effect": get::<bool>(&r, "may_have_effect")?,
            "in_flight": in_flight,
            "stuck": get::<bool>(&r, "stuck")?,
            "last_error": get::<Option<String>>(&r, "last_error")?,
            "next_attempt_at": get::<Option<i64>>(&r, "next_attempt_at")?,
            "updated_at": get::<i64>(&r, "updated_at")?,
        });
        if let Some(at) = started_at.get(&(saga.clone(), idx)).filter(|_| in_flight) {
            state["started_at"] = json!(at);
        }
        let name = json!({
            "name": get::<String>(&r, "name")?,
            "service": get::<String>(&r, "service_name")?,
        });
        let entry = per_saga.entry(saga).or_default();
        entry.0.push(name);
        entry.1.push(state);
    }
    for id in ids {
        let (names, states) = per_saga.remove(id).unwrap_or_default();
        let update = Query::update()
            .table(Sagas::Table)
            .value(Sagas::StepNames, Value::Array(names).to_string())
            .value(Sagas::Steps, Value::Array(states).to_string())
            .and_where(Expr::col(Sagas::Id).eq(id.as_str()))
            .to_owned();
        db.execute(&update).await?;
    }
    Ok(())
}
