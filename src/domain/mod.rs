//! The pure core: saga definitions, their validation and the state machine.
//!
//! Nothing in here does I/O, reads a clock or knows about actix: time and randomness come in
//! as data, decisions go out as [`machine::Command`]s. That keeps every rule of the API contract
//! testable in isolation and the actor shell replaceable.

pub mod definition;
pub mod limits;
pub mod machine;
pub mod policy;
pub mod secrets;
pub mod validation;

pub use definition::{Defaults, Endpoint, Mode, RetryPolicy, SagaDefinition, StepDef};
pub use machine::{
    Answer, CallOutcome, CallRecord, Command, Event, Input, Op, Phase, Rejected, SagaState,
    SagaStatus, StepState, StepStatus,
};
pub use policy::OutboundPolicy;
pub use secrets::SecretHeaders;
pub use validation::{parse_bulk_ids, parse_request, FieldError};
