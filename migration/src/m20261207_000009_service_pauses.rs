//! Participant services an operator paused (docs/operations.md, "When a participant is down"):
//! the pause holds on every instance, so it lives in the log, with its audit.

use sea_orm_migration::prelude::*;

/// Adds `service_pauses` (the services paused now) and `service_actions` (every pause and
/// resume: who, when, why).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ServicePauses {
    Table,
    Service,
    PausedAt,
    Who,
    Reason,
}

#[derive(DeriveIden)]
enum ServiceActions {
    Table,
    Id,
    Service,
    Action,
    Who,
    At,
    Reason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ServicePauses::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(ServicePauses::Service)
                        .string_len(64)
                        .not_null()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(ServicePauses::PausedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ServicePauses::Who)
                        .string_len(255)
                        .not_null(),
                )
                .col(ColumnDef::new(ServicePauses::Reason).text().null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ServiceActions::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(ServiceActions::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(
                    ColumnDef::new(ServiceActions::Service)
                        .string_len(64)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ServiceActions::Action)
                        .string_len(16)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ServiceActions::Who)
                        .string_len(255)
                        .not_null(),
                )
                .col(ColumnDef::new(ServiceActions::At).big_integer().not_null())
                .col(ColumnDef::new(ServiceActions::Reason).text().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_service_actions_service")
                .table(ServiceActions::Table)
                .col(ServiceActions::Service)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ServiceActions::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(ServicePauses::Table).to_owned())
            .await
    }
}
