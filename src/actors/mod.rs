//! The actor shell around the pure core: a registry, one actor per live saga, and a timer.
//!
//! - [`registry::Registry`] starts sagas, supervises their actors and rehydrates them from the log.
//! - [`saga::SagaActor`] turns state-machine commands into I/O and results back into events.
//! - [`timer::Timer`] wakes sagas when a retry, a delayed compensation or a deadline is due.

pub mod registry;
pub mod saga;
pub mod timer;

use crate::domain::{Defaults, SagaStatus};
use crate::metrics::Metrics;
use crate::participant::Participant;
use crate::store::SagaStore;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Everything the actors share: the log, the HTTP client, metrics and the shutdown flags.
pub struct Shared {
    /// The saga log.
    pub store: Arc<dyn SagaStore>,
    /// Participant client.
    pub participant: Participant,
    /// Defaults for steps that do not set their own.
    pub defaults: Defaults,
    /// Metrics of this application.
    pub metrics: Arc<Metrics>,
    /// Every saga that reaches a terminal status, for long-polling readers.
    pub finished: broadcast::Sender<(String, SagaStatus)>,
    /// Set when the service is stopping: no new participant calls are sent.
    pub stopping: AtomicBool,
    /// Participant calls and log writes in flight: what a stop waits for.
    pub busy: AtomicUsize,
    /// Posts stuck-saga alerts to the webhook.
    pub alerter: crate::alerts::Alerter,
    /// A saga actor with nothing in flight and nothing due for this long is released.
    pub evict_idle_after_ms: i64,
}

impl Shared {
    /// True once shutdown began.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// Milliseconds since the Unix epoch: the only clock the shell reads.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
