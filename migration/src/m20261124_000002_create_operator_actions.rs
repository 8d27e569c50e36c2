//! Operator actions (abort, retry) with who and when, kept beside the call history.

use sea_orm_migration::prelude::*;

/// Creates `saga_operator_actions`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SagaOperatorActions {
    Table,
    Id,
    SagaId,
    Action,
    Who,
    At,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(SagaOperatorActions::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SagaOperatorActions::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(SagaOperatorActions::SagaId)
                        .string_len(128)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaOperatorActions::Action)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaOperatorActions::Who)
                        .string_len(255)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaOperatorActions::At)
                        .big_integer()
                        .not_null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_saga_operator_actions_saga")
                .table(SagaOperatorActions::Table)
                .col(SagaOperatorActions::SagaId)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(SagaOperatorActions::Table).to_owned())
            .await
    }
}
