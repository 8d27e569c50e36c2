//! sea-orm entities of the saga log tables (see the `migration` crate for the schema).

mod definition;
mod operator;
mod retention;
pub mod saga;
pub mod saga_call;
pub mod saga_instance;
mod service;

pub use definition::saga_definition;
pub use operator::{saga_operator_action, saga_operator_request};
pub use retention::{saga_sweep, saga_tombstone};
pub use service::{service_action, service_pause};
