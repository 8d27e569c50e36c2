//! `saga_instances`: one row per lease token of a running instance, with the end of its lease.

use sea_orm::entity::prelude::*;

/// A row of `saga_instances`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "saga_instances")]
pub struct Model {
    /// The lease token (`sagas.owner` of the sagas it drives).
    #[sea_orm(primary_key, auto_increment = false)]
    pub owner: String,
    /// `cluster.instance_id` of the instance.
    pub instance_id: String,
    /// Until when its lease holds (ms).
    pub lease_until: i64,
    /// The process (`{instance_id}#{run}`) renewing it; a restart that takes the token over
    /// writes its own. None on rows of older versions.
    pub holder: Option<String>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
