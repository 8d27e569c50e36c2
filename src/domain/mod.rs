//! The pure core: saga definitions, their validation and the state machine.
//!
//! Nothing in here does I/O, reads a clock or knows about actix: time and randomness come in
//! as data, decisions go out as [`machine::Command`]s. That keeps every rule of the API contract
//! testable in isolation and the actor shell replaceable.

/// An enum whose variants each have one wire name (snake_case) for serde, strum and the
/// `as_str` / `parse` pair every caller uses: the names are said once, by the variants.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
            strum::IntoStaticStr, strum::EnumString, strum::EnumIter,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        $vis enum $name {
            $($(#[$vmeta])* $variant),*
        }

        impl $name {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                self.into()
            }

            /// Parses a wire name.
            pub fn parse(s: &str) -> Option<Self> {
                s.parse().ok()
            }
        }
    };
}
pub(crate) use wire_enum;

pub mod breaker;
pub mod catalog;
pub mod definition;
pub mod dtm;
pub mod limits;
pub mod machine;
pub mod plan;
pub mod policy;
pub mod protocol;
pub mod retention;
pub mod secrets;
pub mod trace;
pub mod validation;

pub use definition::{CallBody, Defaults, Endpoint, Mode, RetryPolicy, SagaDefinition, StepDef};
pub use machine::{
    Answer, CallOutcome, CallRecord, Command, Event, Input, Op, Operation, Phase, Rejected,
    SagaState, SagaStatus, StepState, StepStatus,
};
pub use policy::OutboundPolicy;
pub use protocol::Protocol;
pub use retention::{Retention, RetentionOverride, RetentionRules};
pub use secrets::SecretHeaders;
pub use trace::TraceContext;
pub use validation::{
    parse_bulk, parse_operator_body, parse_request, parse_step_edit, FieldError, StepEdit,
};
