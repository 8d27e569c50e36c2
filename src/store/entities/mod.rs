//! sea-orm entities of the saga log tables (see the `migration` crate for the schema).

mod operator;
pub mod saga;
pub mod saga_call;
pub mod saga_instance;

pub use operator::{saga_operator_action, saga_operator_request};
