//! saga-participant: a saga participant's barrier, so that each step and compensation is
//! idempotent, a compensation for an action never seen succeeds (and blocks it), and an action
//! arriving after its compensation is refused, by construction. The rules and the table are in
//! the orchestrator's docs/barrier.md; the Go kit (`sagakit`) shares them.
//!
//! Layout: [`call`] parses the saga headers; [`barrier`] holds the rules; [`conn`] runs their
//! statements on sqlx or sea-orm transactions; [`run`] is the whole call on a sqlx pool;
//! [`reply`] and the extractors speak actix-web and axum.

pub mod barrier;
pub mod call;
pub mod conn;
mod extract;
pub mod reply;
pub mod run;

pub use barrier::{Barrier, Entry, Guard};
pub use call::{Phase, SagaCall};
pub use conn::{BarrierTx, DbError, Dialect};
pub use reply::Reply;
pub use run::{StepError, StepFuture};
