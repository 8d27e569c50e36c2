//! This instance's leases: its token, until when the leases it holds are safe to act on, and the
//! keeper that renews them.
//!
//! Every saga this instance drives carries its token in `sagas.owner` and a lease end in
//! `sagas.lease_until`. One statement renews all of them every `lease_ms / 5`. The instance
//! trusts its leases until the start of its last successful renewal + `lease_ms` − a margin
//! (clock skew between instances, commit delay), measured on the monotonic clock: a process
//! paused past that (GC, SIGSTOP, a partition) finds its leases gone when it wakes, sends no
//! call, and takes a new token: its old sagas are claimed afresh, by whichever instance is first.

use super::now_ms;
use super::registry::{LeaseLost, Registry};
use crate::metrics::Metrics;
use crate::store::SagaStore;
use actix::Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lease state of this instance, shared by its actors.
pub struct Lease {
    instance_id: String,
    lease_ms: u64,
    held: Mutex<Held>,
}

struct Held {
    token: Arc<str>,
    generation: u64,
    /// Until when (monotonic) the leases of `token` are safe to act on.
    valid_until: Instant,
}

/// A token and the generation it belongs to, as an actor took it.
#[derive(Debug, Clone)]
pub struct Token {
    /// The owner value written to the log.
    pub owner: Arc<str>,
    /// Changes whenever the instance lost its leases.
    pub generation: u64,
}

impl Lease {
    /// Leases of `lease_ms` for the instance `instance_id`.
    pub fn new(instance_id: &str, lease_ms: u64) -> Self {
        // Nothing is held yet: what is claimed from now on has a full lease.
        let full = Duration::from_millis(lease_ms) - Duration::from_millis(lease_ms / 5);
        Lease {
            instance_id: instance_id.to_string(),
            lease_ms,
            held: Mutex::new(Held {
                token: Self::token_of(instance_id, 0),
                generation: 0,
                valid_until: Instant::now() + full,
            }),
        }
    }

    fn token_of(instance_id: &str, generation: u64) -> Arc<str> {
        Arc::from(format!("{instance_id}#{generation}"))
    }

    /// The instance id (`cluster.instance_id`).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Length of a lease (ms).
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    fn margin(&self) -> Duration {
        Duration::from_millis(self.lease_ms / 5)
    }

    /// The current token.
    pub fn token(&self) -> Token {
        let h = self.held.lock().expect("lease lock");
        Token {
            owner: h.token.clone(),
            generation: h.generation,
        }
    }

    /// How long the leases of `t` still hold; none once they are lost or expired.
    pub fn remaining(&self, t: &Token) -> Option<Duration> {
        let h = self.held.lock().expect("lease lock");
        if h.generation != t.generation {
            return None;
        }
        h.valid_until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// A lease end for a claim or a create made now (wall clock, ms).
    pub fn until(&self) -> i64 {
        now_ms() + self.lease_ms as i64
    }

    /// A renewal sent at `sent` succeeded for generation `generation`. One that comes back
    /// after the leases expired extends nothing: actors may already have let go of sagas on
    /// the word of the expiry, so that generation is given up (see `expire_if_late`).
    fn renewed(&self, sent: Instant, generation: u64) {
        let mut h = self.held.lock().expect("lease lock");
        if h.generation == generation && Instant::now() < h.valid_until {
            h.valid_until = sent + Duration::from_millis(self.lease_ms) - self.margin();
        }
    }

    /// If the leases expired before a renewal: a new token, and the generation that was lost.
    fn expire_if_late(&self) -> Option<u64> {
        let mut h = self.held.lock().expect("lease lock");
        if Instant::now() < h.valid_until {
            return None;
        }
        let lost = h.generation;
        h.generation += 1;
        h.token = Self::token_of(&self.instance_id, h.generation);
        h.valid_until = Instant::now() + Duration::from_millis(self.lease_ms) - self.margin();
        Some(lost)
    }
}

/// Renews this instance's leases every `lease_ms / 5` until the process ends; when a renewal
/// came too late (the database was unreachable, the process was paused), tells the registry to
/// drop every saga actor of the lost generation.
pub async fn keep(
    lease: Arc<Lease>,
    store: Arc<dyn SagaStore>,
    registry: Addr<Registry>,
    metrics: Arc<Metrics>,
) {
    let every = Duration::from_millis((lease.lease_ms() / 5).max(10));
    loop {
        tokio::time::sleep(every).await;
        if let Some(generation) = lease.expire_if_late() {
            metrics.leases.with_label_values(&["lost"]).inc();
            tracing::warn!(
                instance_id = %lease.instance_id(),
                generation,
                "leases expired before they could be renewed; dropping every saga of this instance (they are claimed again from the log)"
            );
            registry.do_send(LeaseLost { generation });
            continue;
        }
        let t = lease.token();
        let sent = Instant::now();
        // A renewal stuck on a cut connection must not keep the keeper from noticing expiry.
        let renewal = tokio::time::timeout(every, store.renew(&t.owner, lease.until()));
        match renewal.await.unwrap_or_else(|_| {
            Err(crate::store::StoreError::Db(sea_orm::DbErr::Custom(
                "lease renewal timed out".into(),
            )))
        }) {
            Ok(n) => {
                lease.renewed(sent, t.generation);
                metrics.leases.with_label_values(&["renewed"]).inc_by(n);
                metrics.owned.set(n as i64);
            }
            Err(e) => {
                tracing::warn!(instance_id = %lease.instance_id(), error = %e, "cannot renew leases")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_hold_until_expiry_and_a_late_renewal_does_not_revive_them() {
        let lease = Lease::new("i", 1_000);
        let t = lease.token();
        let left = lease.remaining(&t).expect("a fresh lease holds");
        assert!(
            left <= Duration::from_millis(800),
            "{left:?}: the margin is kept"
        );
        assert_eq!(lease.expire_if_late(), None, "not late yet");
        let sent = Instant::now();
        std::thread::sleep(Duration::from_millis(850));
        assert_eq!(lease.remaining(&t), None, "expired: no call may be sent");
        // The renewal sent before the expiry answers after it: it must not revive the lease.
        lease.renewed(sent, t.generation);
        assert_eq!(lease.remaining(&t), None);
        assert_eq!(lease.expire_if_late(), Some(0), "generation 0 is given up");
        let t1 = lease.token();
        assert_eq!(t1.generation, 1);
        assert_eq!(&*t1.owner, "i#1");
        assert_eq!(lease.remaining(&t), None, "the old token never holds again");
        assert!(lease.remaining(&t1).is_some(), "the new token holds");
        // A renewal of the old generation does not extend the new one.
        lease.renewed(Instant::now(), 0);
        assert!(lease.remaining(&t1).unwrap() <= Duration::from_millis(800));
    }
}
