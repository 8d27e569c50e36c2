//! This instance's lease: its token, and until when the sagas it holds are safe to act on.
//! The keeper that renews it is [`super::lease_keeper`].
//!
//! Every saga this instance drives carries its token in `sagas.owner`; the token's row in
//! `saga_instances` has the lease end, renewed every `lease_ms / 5` (one row, whatever the
//! number of sagas). The instance trusts its lease until the start of its last successful
//! renewal + `lease_ms` − a margin (clock skew between instances, commit delay), measured on
//! the monotonic clock (tokio's, so that tests can stop it): a process paused past that (GC,
//! SIGSTOP, a partition) finds its lease gone when it wakes, sends no call, and registers a new
//! token: its old sagas are claimed afresh, by whichever instance is first. Tokens are
//! `{instance_id}#{run}.{generation}`, with a random `run` per process. A call is sent only
//! while the lease holds and runs with its whole timeout; it is cut only if the lease ends
//! under it ([`Lease::lost`]), never shortened by a renewal that is merely late.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The lease state of this instance, shared by its actors.
pub struct Lease {
    instance_id: String,
    lease_ms: u64,
    held: Mutex<Held>,
    /// Bumped on every change of `held`: waiters look again.
    changed: watch::Sender<u64>,
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
            changed: watch::Sender::new(0),
        }
    }

    fn token_of(run: &str, generation: u64) -> Arc<str> {
        Arc::from(format!("{run}.{generation}"))
    }

    /// Changes the held state and wakes whoever waits on it.
    fn update<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        let out = f(&mut self.held.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        out
    }

    fn read<T>(&self, f: impl FnOnce(&Held) -> T) -> T {
        f(&self.held.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// This process (`{instance_id}#{run}`): the holder of its tokens.
    pub fn holder(&self) -> String {
        self.read(|h| h.run.clone())
    }

    /// Makes `token`, an earlier run's taken over at `sent`, the current one (a restart).
    pub(super) fn adopt(&self, token: &str, sent: Instant) {
        let until = self.until_after(sent);
        self.update(|h| {
            h.token = Arc::from(token);
            h.valid_until = until;
        });
    }

    /// The token of `generation` is no longer this process's (another took it over, or it
    /// was let go): nothing more is done on its word; the keeper expires it next round.
    pub(super) fn disowned(&self, generation: u64) {
        self.update(|h| {
            if h.generation == generation {
                h.valid_until = Instant::now();
            }
        });
    }

    /// The instance id (`cluster.instance_id`).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Length of a lease (ms).
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// How often the lease is renewed: a fifth of it.
    pub fn period(&self) -> Duration {
        Duration::from_millis((self.lease_ms / 5).max(10))
    }

    /// Until when a lease renewed (or registered) at `sent` holds, by this instance's word.
    fn until_after(&self, sent: Instant) -> Instant {
        // The margin (one period) covers clock skew between instances and commit delay.
        sent + Duration::from_millis(self.lease_ms) - self.period()
    }

    /// The current token.
    pub fn token(&self) -> Token {
        self.read(|h| Token {
            owner: h.token.clone(),
            generation: h.generation,
        })
    }

    /// How long the leases of `t` still hold; none once they are lost or expired.
    pub fn remaining(&self, t: &Token) -> Option<Duration> {
        let until = self.read(|h| (h.generation == t.generation).then_some(h.valid_until))?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Resolves when the leases of `t` end: not renewed in time, disowned, or a new generation.
    /// A call in flight is cut then, and only then.
    pub async fn lost(&self, t: &Token) {
        let mut changed = self.changed.subscribe();
        while let Some(left) = self.remaining(t) {
            tokio::select! {
                _ = tokio::time::sleep(left) => {}
                _ = changed.changed() => {}
            }
        }
    }

    /// Waits until the generation moves past `seen` (its leases were lost); answers the new one.
    pub async fn generation_after(&self, seen: u64) -> u64 {
        let mut changed = self.changed.subscribe();
        loop {
            let g = self.read(|h| h.generation);
            if g > seen || changed.changed().await.is_err() {
                return g;
            }
        }
    }

    /// Waits until the leases of `t` hold for at least `need` (a renewal that is late is
    /// waited for rather than a call sent that would soon be cut); false once they are lost.
    pub async fn fresh(&self, t: &Token, need: Duration) -> bool {
        let mut changed = self.changed.subscribe();
        loop {
            match self.remaining(t) {
                None => return false,
                Some(left) if left >= need => return true,
                Some(left) => {
                    tokio::select! {
                        _ = tokio::time::sleep(left) => {}
                        _ = changed.changed() => {}
                    }
                }
            }
        }
    }

    /// A lease end for a renewal or a registration made now (wall clock, ms).
    pub fn until(&self, now_ms: i64) -> i64 {
        now_ms + self.lease_ms as i64
    }

    /// A renewal sent at `sent` succeeded for generation `generation`. One that comes back
    /// after the leases expired extends nothing: actors may already have let go of sagas on
    /// the word of the expiry, so that generation is given up (see `expire_if_late`).
    pub(super) fn renewed(&self, sent: Instant, generation: u64) {
        let until = self.until_after(sent);
        self.update(|h| {
            if h.generation == generation && Instant::now() < h.valid_until {
                h.valid_until = h.valid_until.max(until);
            }
        });
    }

    /// The token registered at `sent` holds from now on (a new generation, or the first).
    pub fn activate(&self, sent: Instant, generation: u64) {
        let until = self.until_after(sent);
        self.update(|h| {
            if h.generation == generation {
                h.valid_until = until;
            }
        });
    }

    /// If the lease expired before a renewal: the generation lost. The next token is current at
    /// once but holds nothing (no call, no claim) until it is registered and activated.
    pub(super) fn expire_if_late(&self) -> Option<u64> {
        if self.read(|h| Instant::now() < h.valid_until) {
            return None;
        }
        Some(self.update(|h| {
            let lost = h.generation;
            h.generation += 1;
            h.token = Self::token_of(&h.run, h.generation);
            lost
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leases_hold_until_expiry_and_a_late_renewal_does_not_revive_them() {
        let lease = Lease::new("i", 1_000);
        let t = lease.token();
        assert_eq!(
            lease.remaining(&t),
            None,
            "nothing holds before registration"
        );
        lease.activate(Instant::now(), t.generation);
        assert_eq!(
            lease.remaining(&t),
            Some(Duration::from_millis(800)),
            "the margin is kept"
        );
        assert_eq!(lease.expire_if_late(), None, "not late yet");
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(850)).await;
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
        lease.renewed(Instant::now() + Duration::from_secs(5), 0);
        assert_eq!(lease.remaining(&t1), Some(Duration::from_millis(800)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_cut_when_the_lease_ends_and_not_before() {
        let lease = Arc::new(Lease::new("i", 1_000));
        let t = lease.token();
        lease.activate(Instant::now(), t.generation);
        let start = Instant::now();
        let cut = {
            let (lease, t) = (lease.clone(), t.clone());
            tokio::spawn(async move {
                lease.lost(&t).await;
                Instant::now()
            })
        };
        // Renewed in time, late but in time, then no more: the lease ends 800 ms after the last
        // renewal that was sent, and the call under it is cut then, not at the first end.
        for at in [200u64, 700] {
            tokio::time::advance(Duration::from_millis(at) - (Instant::now() - start)).await;
            lease.renewed(Instant::now(), t.generation);
        }
        let end = cut.await.unwrap();
        assert_eq!(end - start, Duration::from_millis(1_500));
        // A disowned lease cuts at once.
        let t1 = lease.token();
        lease.activate(Instant::now(), t1.generation);
        let cut = {
            let (lease, t1) = (lease.clone(), t1.clone());
            tokio::spawn(async move { lease.lost(&t1).await })
        };
        tokio::task::yield_now().await;
        lease.disowned(t1.generation);
        tokio::time::timeout(Duration::from_millis(1), cut)
            .await
            .expect("cut at once")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_for_a_late_renewal_rather_than_leave_under_a_dying_lease() {
        let lease = Arc::new(Lease::new("i", 1_000));
        let t = lease.token();
        lease.activate(Instant::now(), t.generation);
        assert!(
            lease.fresh(&t, lease.period()).await,
            "a fresh lease: at once"
        );
        tokio::time::advance(Duration::from_millis(700)).await;
        let waiting = {
            let (lease, t) = (lease.clone(), t.clone());
            tokio::spawn(async move { lease.fresh(&t, lease.period()).await })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "100 ms left: it waits for the renewal"
        );
        lease.renewed(Instant::now(), t.generation);
        assert!(waiting.await.unwrap(), "renewed: the call goes");
        tokio::time::advance(Duration::from_millis(750)).await;
        let waiting = {
            let (lease, t) = (lease.clone(), t.clone());
            tokio::spawn(async move { lease.fresh(&t, lease.period()).await })
        };
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!waiting.await.unwrap(), "never renewed: not sent");
    }
}
