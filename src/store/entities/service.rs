//! `service_pauses` (the participant services an operator paused) and `service_actions`
//! (every pause and resume: who, when, why).

/// A row of `service_pauses`.
pub mod service_pause {
    use sea_orm::entity::prelude::*;

    /// A paused service.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "service_pauses")]
    pub struct Model {
        /// The service label.
        #[sea_orm(primary_key, auto_increment = false)]
        pub service: String,
        /// Since when (ms).
        pub paused_at: i64,
        /// Who paused it.
        pub who: String,
        /// Why.
        #[sea_orm(column_type = "Text", nullable)]
        pub reason: Option<String>,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A row of `service_actions`.
pub mod service_action {
    use sea_orm::entity::prelude::*;

    /// One pause or resume of a service.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "service_actions")]
    pub struct Model {
        /// Row id, increasing.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// The service label.
        pub service: String,
        /// `pause` or `resume`.
        pub action: String,
        /// Who.
        pub who: String,
        /// When (ms).
        pub at: i64,
        /// Why.
        #[sea_orm(column_type = "Text", nullable)]
        pub reason: Option<String>,
    }

    /// No relations are navigated through sea-orm.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
