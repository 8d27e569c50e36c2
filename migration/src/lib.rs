//! Database migrations of the saga log; the same files serve SQLite, MariaDB/MySQL and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_create_saga_log;
mod m20261124_000002_create_operator_actions;
mod m20261124_000003_exact_ids_and_definitions;
mod m20261124_000004_steps_in_the_saga_row;
mod m20261124_000005_leases;
mod m20261124_000006_lease_holder;
mod m20261206_000007_retention;
mod m20261207_000008_operator_surgery;
mod m20261207_000009_service_pauses;
mod m20261207_000010_saga_definitions;
mod m20261207_000011_postgres_batch_function;

/// PostgreSQL's log-writer function as the latest migration creates it (the writer's tests check
/// it against the order in which it serialises rows).
pub use m20261207_000011_postgres_batch_function::POSTGRES_BATCH_FUNCTION;

/// Applies the saga log's migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_saga_log::Migration),
            Box::new(m20261124_000002_create_operator_actions::Migration),
            Box::new(m20261124_000003_exact_ids_and_definitions::Migration),
            Box::new(m20261124_000004_steps_in_the_saga_row::Migration),
            Box::new(m20261124_000005_leases::Migration),
            Box::new(m20261124_000006_lease_holder::Migration),
            Box::new(m20261206_000007_retention::Migration),
            Box::new(m20261207_000008_operator_surgery::Migration),
            Box::new(m20261207_000009_service_pauses::Migration),
            Box::new(m20261207_000010_saga_definitions::Migration),
            Box::new(m20261207_000011_postgres_batch_function::Migration),
        ]
    }
}
