//! The saga log: one row per saga, one per step, one per participant call.
//!
//! Times are BIGINT milliseconds since the Unix epoch: the same precision on every database
//! (MySQL's DATETIME drops milliseconds unless declared otherwise) and cheap to compare.

use sea_orm_migration::prelude::*;

/// Creates the `sagas`, `saga_steps` and `saga_calls` tables with their indexes.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sagas {
    Table,
    Id,
    Name,
    Mode,
    Status,
    Request,
    Error,
    DeadlineAt,
    NextWakeAt,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
    Version,
    Owner,
    LeaseUntil,
}

#[derive(DeriveIden)]
enum SagaSteps {
    Table,
    SagaId,
    Idx,
    Name,
    ServiceName,
    Operation,
    Payload,
    Status,
    Attempts,
    CompensationAttempts,
    ConfirmAttempts,
    BudgetBase,
    MayHaveEffect,
    InFlight,
    Stuck,
    LastError,
    NextAttemptAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SagaCalls {
    Table,
    Id,
    SagaId,
    StepIdx,
    Step,
    Phase,
    Attempt,
    StartedAt,
    FinishedAt,
    HttpStatus,
    Outcome,
    Error,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Sagas::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(Sagas::Id)
                        .string_len(128)
                        .not_null()
                        .primary_key(),
                )
                .col(ColumnDef::new(Sagas::Name).string_len(64).not_null())
                .col(ColumnDef::new(Sagas::Mode).string_len(8).not_null())
                .col(ColumnDef::new(Sagas::Status).string_len(16).not_null())
                .col(ColumnDef::new(Sagas::Request).json().not_null())
                .col(ColumnDef::new(Sagas::Error).text().null())
                .col(ColumnDef::new(Sagas::DeadlineAt).big_integer().null())
                .col(ColumnDef::new(Sagas::NextWakeAt).big_integer().null())
                .col(ColumnDef::new(Sagas::CreatedAt).big_integer().not_null())
                .col(ColumnDef::new(Sagas::UpdatedAt).big_integer().not_null())
                .col(ColumnDef::new(Sagas::FinishedAt).big_integer().null())
                .col(
                    ColumnDef::new(Sagas::Version)
                        .big_integer()
                        .not_null()
                        .default(0),
                )
                .col(ColumnDef::new(Sagas::Owner).string_len(128).null())
                .col(ColumnDef::new(Sagas::LeaseUntil).big_integer().null())
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            ("idx_sagas_created", vec![Sagas::CreatedAt, Sagas::Id]),
            (
                "idx_sagas_status_created",
                vec![Sagas::Status, Sagas::CreatedAt, Sagas::Id],
            ),
            (
                "idx_sagas_name_created",
                vec![Sagas::Name, Sagas::CreatedAt, Sagas::Id],
            ),
            ("idx_sagas_next_wake", vec![Sagas::NextWakeAt]),
        ] {
            let mut idx = Index::create();
            idx.name(name).table(Sagas::Table).if_not_exists();
            for c in cols {
                idx.col(c);
            }
            m.create_index(idx.to_owned()).await?;
        }

        m.create_table(
            Table::create()
                .table(SagaSteps::Table)
                .if_not_exists()
                .col(ColumnDef::new(SagaSteps::SagaId).string_len(128).not_null())
                .col(ColumnDef::new(SagaSteps::Idx).integer().not_null())
                .col(ColumnDef::new(SagaSteps::Name).string_len(64).not_null())
                .col(
                    ColumnDef::new(SagaSteps::ServiceName)
                        .string_len(255)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaSteps::Operation)
                        .string_len(16)
                        .not_null(),
                )
                .col(ColumnDef::new(SagaSteps::Payload).json().not_null())
                .col(ColumnDef::new(SagaSteps::Status).string_len(32).not_null())
                .col(ColumnDef::new(SagaSteps::Attempts).integer().not_null())
                .col(
                    ColumnDef::new(SagaSteps::CompensationAttempts)
                        .integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaSteps::ConfirmAttempts)
                        .integer()
                        .not_null(),
                )
                .col(ColumnDef::new(SagaSteps::BudgetBase).integer().not_null())
                .col(
                    ColumnDef::new(SagaSteps::MayHaveEffect)
                        .boolean()
                        .not_null(),
                )
                .col(ColumnDef::new(SagaSteps::InFlight).boolean().not_null())
                .col(ColumnDef::new(SagaSteps::Stuck).boolean().not_null())
                .col(ColumnDef::new(SagaSteps::LastError).text().null())
                .col(
                    ColumnDef::new(SagaSteps::NextAttemptAt)
                        .big_integer()
                        .null(),
                )
                .col(
                    ColumnDef::new(SagaSteps::CreatedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(
                    ColumnDef::new(SagaSteps::UpdatedAt)
                        .big_integer()
                        .not_null(),
                )
                .primary_key(Index::create().col(SagaSteps::SagaId).col(SagaSteps::Idx))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(SagaCalls::Table)
                .if_not_exists()
                .col(
                    ColumnDef::new(SagaCalls::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(ColumnDef::new(SagaCalls::SagaId).string_len(128).not_null())
                .col(ColumnDef::new(SagaCalls::StepIdx).integer().not_null())
                .col(ColumnDef::new(SagaCalls::Step).string_len(64).not_null())
                .col(ColumnDef::new(SagaCalls::Phase).string_len(16).not_null())
                .col(ColumnDef::new(SagaCalls::Attempt).integer().not_null())
                .col(
                    ColumnDef::new(SagaCalls::StartedAt)
                        .big_integer()
                        .not_null(),
                )
                .col(ColumnDef::new(SagaCalls::FinishedAt).big_integer().null())
                .col(ColumnDef::new(SagaCalls::HttpStatus).integer().null())
                .col(ColumnDef::new(SagaCalls::Outcome).string_len(16).null())
                .col(ColumnDef::new(SagaCalls::Error).text().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_saga_calls_call")
                .table(SagaCalls::Table)
                .col(SagaCalls::SagaId)
                .col(SagaCalls::StepIdx)
                .col(SagaCalls::Phase)
                .col(SagaCalls::Attempt)
                .unique()
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Table::drop().table(SagaCalls::Table).to_owned(),
            Table::drop().table(SagaSteps::Table).to_owned(),
            Table::drop().table(Sagas::Table).to_owned(),
        ] {
            m.drop_table(t).await?;
        }
        Ok(())
    }
}
