//! sea-orm entities of the saga log tables (see the `migration` crate for the schema).

pub mod saga;
pub mod saga_call;
pub mod saga_instance;
pub mod saga_operator_action;
pub mod saga_operator_request;
