//! The messages several actors exchange, in one place, so that no actor module needs another's:
//! saga actors and the timer reach the registry through [`actix::Recipient`]s of these, never
//! through its concrete address.
//!
//! - to the registry: [`StartSaga`] and [`OperatorAction`] (from the API), [`Wake`] (from the
//!   timer), [`Release`] and [`Adopt`] (from saga actors), [`Rehydrate`] and [`Shutdown`] (from
//!   the start-up);
//! - to a saga actor: [`Tick`], [`Operate`], [`Disown`] (from the registry);
//! - to the timer: [`Schedule`] and [`Cancel`] (from saga actors and the registry), [`Shutdown`].

pub use crate::domain::{Op, Operation};
use crate::domain::{Rejected, SagaDefinition};
use crate::store::{SagaRecord, StoreError};
use actix::prelude::*;
use serde_json::Value;
use std::sync::Arc;

/// Start a new saga (or find the existing one with that id).
#[derive(Message)]
#[rtype(result = "Result<StartOutcome, StoreError>")]
pub struct StartSaga {
    /// Saga id (client-chosen or generated).
    pub id: String,
    /// The request as received, stored for idempotent starts.
    pub request: Value,
    /// The validated definition.
    pub def: SagaDefinition,
}

/// What [`StartSaga`] found.
#[derive(Debug)]
pub enum StartOutcome {
    /// Recorded now; the record is its state at commit time.
    Created(Box<SagaRecord>),
    /// A saga with that id already existed.
    Existing(Box<SagaRecord>),
    /// A saga with that id ran and was purged; its id is still reserved.
    Purged(Box<crate::store::Tombstone>),
}

/// Wake a saga: something it waits for may be due.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake {
    /// Saga id.
    pub id: String,
}

/// An operator action on a saga, routed to its actor.
#[derive(Message)]
#[rtype(result = "Result<(), OpError>")]
pub struct OperatorAction {
    /// Saga id.
    pub id: String,
    /// The action, its step and reason.
    pub op: Operation,
    /// Who asked (the token's name, or the caller's address).
    pub who: String,
    /// Carry it out here or not at all (a request left by another instance).
    pub here_only: bool,
}

/// Why an operator action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The saga's status does not allow it (409).
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The saga's actor could not take it now; try again (503).
    #[error("the saga is busy or restarting; try again")]
    Unavailable,
    /// The saga cannot be loaded (its stored definition is unreadable): nothing to act on (409).
    #[error("{0}")]
    Unloadable(String),
    /// The actor asked gave up the saga's lease: the registry claims the saga again.
    #[error("the saga was released; try again")]
    Released,
}

/// A saga actor has nothing to do for a while (terminal, stuck, or only waiting on a timer):
/// forget it, so that an idle saga costs no memory. A later wake loads it again from the log.
pub struct Release<A: Actor> {
    /// Saga id.
    pub id: String,
    /// The actor releasing itself; a newer actor for the same saga is left alone.
    pub addr: Addr<A>,
}

impl<A: Actor> Message for Release<A> {
    type Result = ();
}

/// A released saga actor got work after all (a message queued before its release): keep it,
/// unless another actor already took the saga over.
pub struct Adopt<A: Actor> {
    /// Saga id.
    pub id: String,
    /// The actor.
    pub addr: Addr<A>,
}

impl<A: Actor> Message for Adopt<A> {
    type Result = ();
}

/// Starts looking in the log for work every `cluster.poll_ms` (due timers, expired leases,
/// operator requests), resuming first the sagas of `resume`, the token of an earlier run this
/// one took over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rehydrate {
    /// The earlier run's token taken over at start-up (a restart), if any.
    pub resume: Option<Arc<str>>,
}

/// Stops the actor (the timer or the registry) at shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Something may be due: re-evaluate the saga.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

/// This instance lost the leases of every generation before `before`: an actor of one of them
/// stops at once and sends nothing more.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disown {
    /// The current generation.
    pub before: u64,
}

/// An operator action, answered once its transition is durable.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), OpError>")]
pub struct Operate {
    /// The action, its step and reason.
    pub op: Operation,
    /// Who asked.
    pub who: String,
}

/// Ask for a [`Wake`] of saga `id` at `at_ms`, replacing its pending wake if it has one.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Schedule {
    /// Saga id.
    pub id: String,
    /// Due time, ms since epoch.
    pub at_ms: i64,
}

/// Forget the pending wake of saga `id` (it ended, got stuck, or waits for nothing now).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Cancel {
    /// Saga id.
    pub id: String,
}
