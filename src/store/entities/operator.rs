//! The two tables of operator actions, which have the same columns: `saga_operator_actions`
//! (who aborted or retried a saga, and when: its history) and `saga_operator_requests` (an
//! action asked of an instance that does not drive the saga, waiting for the one that does).

/// The sea-orm entity of one operator-action table.
macro_rules! operator_table {
    ($module:ident, $table:literal) => {
        #[doc = concat!("`", $table, "`.")]
        pub mod $module {
            use sea_orm::entity::prelude::*;

            #[doc = concat!("A row of `", $table, "`.")]
            #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
            #[sea_orm(table_name = $table)]
            pub struct Model {
                /// Row id, increasing.
                #[sea_orm(primary_key)]
                pub id: i64,
                /// Saga id.
                pub saga_id: String,
                /// An [`crate::domain::Op`]'s wire name, `keep` or `unkeep`.
                pub action: String,
                /// Who asked (the token's name, or the caller's address).
                pub who: String,
                /// When (ms).
                pub at: i64,
                /// Why, and the step it named: JSON `{"reason": …, "step": …}` (none: neither).
                pub detail: Option<String>,
            }

            /// No relations are navigated through sea-orm.
            #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
            pub enum Relation {}

            impl ActiveModelBehavior for ActiveModel {}
        }
    };
}

operator_table!(saga_operator_action, "saga_operator_actions");
operator_table!(saga_operator_request, "saga_operator_requests");
