//! This instance's lease: its token, until when the sagas it holds are safe to act on, and the
//! keeper that renews it.
//!
//! Every saga this instance drives carries its token in `sagas.owner`; the token's row in
//! `saga_instances` has the lease end, renewed every `lease_ms / 5` (one row, whatever the
//! number of sagas). The instance trusts its lease until the start of its last successful
//! renewal + `lease_ms` − a margin (clock skew between instances, commit delay), measured on
//! the monotonic clock: a process paused past that (GC, SIGSTOP, a partition) finds its lease
//! gone when it wakes, sends no call, and registers a new token: its old sagas are claimed
//! afresh, by whichever instance is first. Tokens are `{instance_id}#{run}.{generation}`, with
//! a random `run` per process. A restart of a configured instance takes its earlier run's
//! newest token over as it is (its sagas are resumed with nothing rewritten) and writes itself
//! in as the token's `holder`: a renewal checks the holder, so that of two processes wrongly
//! given one id, the earlier loses its lease at its next renewal.

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
    /// `{instance_id}#{random}`: this process.
    run: String,
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
        // Valid once registered (`activate`), which the application does before anything runs.
        let run = format!("{instance_id}#{:08x}", rand::random::<u32>());
        Lease {
            instance_id: instance_id.to_string(),
            lease_ms,
            held: Mutex::new(Held {
                token: Self::token_of(&run, 0),
                run,
                generation: 0,
                valid_until: Instant::now(),
            }),
        }
    }

    fn token_of(run: &str, generation: u64) -> Arc<str> {
        Arc::from(format!("{run}.{generation}"))
    }

    /// This process (`{instance_id}#{run}`): the holder of its tokens.
    pub fn holder(&self) -> String {
        self.held.lock().expect("lease lock").run.clone()
    }

    /// Makes `token`, an earlier run's taken over at `sent`, the current one (a restart).
    fn adopt(&self, token: &str, sent: Instant) {
        let mut h = self.held.lock().expect("lease lock");
        h.token = Arc::from(token);
        h.valid_until = sent + Duration::from_millis(self.lease_ms) - self.margin();
    }

    /// The token of `generation` is no longer this process's (another took it over, or it
    /// was let go): nothing more is done on its word; the keeper expires it next round.
    fn disowned(&self, generation: u64) {
        let mut h = self.held.lock().expect("lease lock");
        if h.generation == generation {
            h.valid_until = Instant::now();
        }
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

    /// A lease end for a renewal or a registration made now (wall clock, ms).
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

    /// The token registered at `sent` holds from now on (a new generation, or the first).
    pub fn activate(&self, sent: Instant, generation: u64) {
        let mut h = self.held.lock().expect("lease lock");
        if h.generation == generation {
            h.valid_until = sent + Duration::from_millis(self.lease_ms) - self.margin();
        }
    }

    /// If the lease expired before a renewal: the generation lost. The next token is current at
    /// once but holds nothing (no call, no claim) until it is registered and activated.
    fn expire_if_late(&self) -> Option<u64> {
        let mut h = self.held.lock().expect("lease lock");
        if Instant::now() < h.valid_until {
            return None;
        }
        let lost = h.generation;
        h.generation += 1;
        h.token = Self::token_of(&h.run, h.generation);
        Some(lost)
    }
}

/// Which earlier runs a starting instance knows to be dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlierRuns {
    /// None known (a generated instance id): their sagas are taken over when their lease ends.
    MayLive,
    /// Those of this configured instance id: it is restarting.
    OfThisId,
    /// All (SQLite: this process holds the database's only lock).
    AllDead,
}

/// Registers this instance's token. When its earlier runs are known dead, the newest of their
/// tokens is taken over instead (answered: its sagas are this run's to resume) and the leases
/// of the others end, so that their sagas are taken over at once. Called before anything runs.
pub async fn register(
    lease: &Lease,
    store: &dyn SagaStore,
    earlier_runs: EarlierRuns,
) -> Result<Option<Arc<str>>, crate::store::StoreError> {
    let t = lease.token();
    let sent = Instant::now();
    let dead = match earlier_runs {
        EarlierRuns::MayLive => None,
        EarlierRuns::OfThisId => Some(Some(lease.instance_id())),
        EarlierRuns::AllDead => Some(None),
    };
    let holder = lease.holder();
    let Some(which) = dead else {
        store
            .register(&t.owner, lease.instance_id(), &holder, lease.until())
            .await?;
        lease.activate(sent, t.generation);
        return Ok(None);
    };
    let adopted = store
        .adopt_earlier_run(which, lease.instance_id(), &holder, lease.until())
        .await?;
    match &adopted {
        Some(token) => {
            lease.adopt(token, sent);
            tracing::info!(instance_id = %lease.instance_id(), token = %token, "took over the lease token of the earlier run; its sagas resume now");
        }
        None => {
            store
                .register(&t.owner, lease.instance_id(), &holder, lease.until())
                .await?;
            lease.activate(sent, t.generation);
        }
    }
    let current = lease.token();
    let n = store.end_earlier_runs(which, &current.owner).await?;
    if n > 0 {
        tracing::info!(instance_id = %lease.instance_id(), runs = n, "ended the leases of earlier runs of this instance; their sagas resume now");
    }
    Ok(adopted.map(|_| current.owner))
}

/// Renews this instance's lease every `lease_ms / 5` until the process ends; when a renewal
/// came too late (the database was unreachable, the process was paused), tells the registry to
/// drop every saga actor of the lost generation and registers a new token.
pub async fn keep(
    lease: Arc<Lease>,
    store: Arc<dyn SagaStore>,
    registry: Addr<Registry>,
    metrics: Arc<Metrics>,
) {
    let every = Duration::from_millis((lease.lease_ms() / 5).max(10));
    let holder = lease.holder();
    let timed_out =
        || crate::store::StoreError::Db(sea_orm::DbErr::Custom("lease statement timed out".into()));
    loop {
        tokio::time::sleep(every).await;
        if let Some(generation) = lease.expire_if_late() {
            metrics.leases.with_label_values(&["lost"]).inc();
            tracing::warn!(
                instance_id = %lease.instance_id(),
                generation,
                "lease expired before it could be renewed; dropping every saga of this instance (they are claimed again from the log)"
            );
            registry.do_send(LeaseLost { generation });
        }
        let t = lease.token();
        let sent = Instant::now();
        if lease.remaining(&t).is_none() {
            // A new token: registered before it holds anything.
            let reg = tokio::time::timeout(
                every,
                store.register(&t.owner, lease.instance_id(), &holder, lease.until()),
            );
            match reg.await.unwrap_or_else(|_| Err(timed_out())) {
                Ok(()) => lease.activate(sent, t.generation),
                Err(e) => {
                    tracing::warn!(instance_id = %lease.instance_id(), error = %e, "cannot register a new lease token")
                }
            }
            continue;
        }
        // Bounded: a renewal stuck on a cut connection must not keep the keeper from noticing
        // the expiry.
        let renewal = tokio::time::timeout(every, store.renew(&t.owner, &holder, lease.until()));
        match renewal.await.unwrap_or_else(|_| Err(timed_out())) {
            Ok(true) => {
                lease.renewed(sent, t.generation);
                metrics.leases.with_label_values(&["renewed"]).inc();
            }
            Ok(false) => {
                lease.disowned(t.generation);
                tracing::warn!(instance_id = %lease.instance_id(), "lease token no longer registered, or taken over by another process; giving up its sagas")
            }
            Err(e) => {
                tracing::warn!(instance_id = %lease.instance_id(), error = %e, "cannot renew the lease")
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
        assert_eq!(
            lease.remaining(&t),
            None,
            "nothing holds before registration"
        );
        lease.activate(Instant::now(), t.generation);
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
        assert!(
            t1.owner.starts_with("i#") && t1.owner.ends_with(".1"),
            "{}",
            t1.owner
        );
        assert_eq!(
            lease.remaining(&t1),
            None,
            "the new token holds once registered"
        );
        lease.activate(Instant::now(), 1);
        assert_eq!(lease.remaining(&t), None, "the old token never holds again");
        assert!(lease.remaining(&t1).is_some(), "the new token holds");
        // A renewal of the old generation does not extend the new one.
        lease.renewed(Instant::now(), 0);
        assert!(lease.remaining(&t1).unwrap() <= Duration::from_millis(800));
    }
}
