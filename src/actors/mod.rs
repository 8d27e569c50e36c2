//! The actor shell around the pure core: a registry, one actor per live saga, and a timer.
//! docs/architecture.md walks one request through them.
//!
//! - [`registry::Registry`] starts sagas, supervises their actors and finds this instance's
//!   work in the log (due sagas, sagas of dead instances, an earlier run's sagas).
//! - [`saga::SagaActor`] turns state-machine commands into I/O and results back into events.
//! - [`timer::Timer`] wakes sagas when a retry, a delayed compensation or a deadline is due.
//! - [`messages`] holds what these exchange, so that none needs another's module.
//! - [`finished::Finished`] wakes the requests that wait for a saga's end.
//! - [`lease`] holds this instance's leases on its sagas; [`lease_keeper`] renews them.
//! - [`clock`] is the wall clock the shell reads (a trait: tests drive it).

pub mod clock;
pub mod finished;
pub mod lease;
pub mod lease_keeper;
pub mod messages;
pub mod registry;
pub mod saga;
pub mod timer;

use crate::domain::Defaults;
use crate::metrics::Metrics;
use crate::participant::Participant;
use crate::store::SagaLog;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::task::TaskTracker;

/// Everything the actors share: the log, the HTTP client, metrics and the shutdown flags.
pub struct Shared {
    /// The saga log, as the actors use it.
    pub store: Arc<dyn SagaLog>,
    /// The saga log's reads, for the API.
    pub reads: crate::store::Reads,
    /// Participant client.
    pub participant: Participant,
    /// Defaults for steps that do not set their own (applied when a saga is accepted).
    pub defaults: Defaults,
    /// Where calls may go; also checked when a saga is accepted.
    pub outbound: std::sync::Arc<crate::domain::OutboundPolicy>,
    /// Metrics of this application.
    pub metrics: Arc<Metrics>,
    /// Requests waiting for sagas to end.
    pub finished: Arc<finished::Finished>,
    /// Set when the service is stopping: no new participant calls are decided.
    pub stopping: AtomicBool,
    /// Participant calls and log writes in flight: what a stop waits for.
    pub work: TaskTracker,
    /// Posts stuck-saga alerts to the webhook.
    pub alerter: crate::alerts::Alerter,
    /// A saga actor with nothing in flight and nothing due for this long is released.
    pub evict_idle_after_ms: i64,
    /// This instance's leases on the sagas it drives.
    pub lease: Arc<lease::Lease>,
    /// The time of day.
    pub clock: Arc<dyn clock::Clock>,
    /// Each participant service's breaker, figures and pause: the gate every call passes.
    pub services: Arc<crate::services::Services>,
    /// Header names whose values an audit masks.
    pub secrets: crate::domain::SecretHeaders,
}

impl Shared {
    /// True once shutdown began.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// After a failed read or write of the log, the saga is tried again after this long (ms).
pub const RETRY_MS: i64 = 1_000;
