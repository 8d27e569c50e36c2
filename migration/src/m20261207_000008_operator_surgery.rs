//! Saga surgery (docs/api.md, "Operator actions"): a saga an operator paused, and why each
//! operator action was taken (its reason, the step it named).

use sea_orm_migration::prelude::*;

/// Adds `sagas.paused_at`, `detail` to both operator-action tables, and the index by saga of
/// `saga_operator_requests` (a purge deletes a saga's requests by it).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sagas {
    Table,
    PausedAt,
}

#[derive(DeriveIden)]
enum SagaOperatorActions {
    Table,
    Detail,
}

#[derive(DeriveIden)]
enum SagaOperatorRequests {
    Table,
    SagaId,
    Detail,
}

const REQUESTS_INDEX: &str = "idx_saga_operator_requests_saga";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite adds one at a time.
        m.alter_table(
            Table::alter()
                .table(Sagas::Table)
                .add_column(ColumnDef::new(Sagas::PausedAt).big_integer().null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(SagaOperatorActions::Table)
                .add_column(ColumnDef::new(SagaOperatorActions::Detail).text().null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(SagaOperatorRequests::Table)
                .add_column(ColumnDef::new(SagaOperatorRequests::Detail).text().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name(REQUESTS_INDEX)
                .table(SagaOperatorRequests::Table)
                .col(SagaOperatorRequests::SagaId)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name(REQUESTS_INDEX)
                .table(SagaOperatorRequests::Table)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(SagaOperatorRequests::Table)
                .drop_column(SagaOperatorRequests::Detail)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(SagaOperatorActions::Table)
                .drop_column(SagaOperatorActions::Detail)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Sagas::Table)
                .drop_column(Sagas::PausedAt)
                .to_owned(),
        )
        .await
    }
}
