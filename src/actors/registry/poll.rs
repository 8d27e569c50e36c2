//! Finding this instance's work in the log: every `cluster.poll_ms` the sagas of dead
//! instances are let go and the due ones claimed (a full batch asks again at once, a few polls
//! at a time); sagas woken without an actor are claimed and loaded in batches, not a query each.

use super::Registry;
use crate::actors::RETRY_MS;
use crate::store::StoreError;
use actix::prelude::*;

/// Most sagas claimed and loaded by one query.
pub(super) const LOAD_BATCH: usize = 1000;
/// Batch loads in flight at once.
pub(super) const LOADS: usize = 4;
/// Most sagas claimed by one poll of the log.
const POLL_BATCH: usize = 2000;
/// Polls in flight at once (after a takeover, each claims a batch of the sagas let go).
const POLLS: usize = 2;
/// One poll in this many also lets go of sagas held by a token without a row (a scan of the
/// unfinished sagas: rare, as such sagas should never exist).
const ORPHAN_SWEEP: u64 = 30;

impl Registry {
    /// Asks the log for sagas that need a driver (due timers, expired leases) and starts them;
    /// a full batch asks again at once, a few polls at a time.
    pub(super) fn poll(&mut self, ctx: &mut Context<Self>) {
        self.shared.metrics.owned.set(self.live.len() as i64);
        // Wakes left waiting for room (see load_due).
        self.load_due(ctx);
        self.resume(ctx);
        let limit = self.room().min(POLL_BATCH);
        if self.polling >= POLLS || self.shared.is_stopping() || limit == 0 {
            return self.poll_requests(ctx);
        }
        let token = self.shared.lease.token();
        if self.shared.lease.remaining(&token).is_none() {
            return;
        }
        self.polling += 1;
        self.polls += 1;
        let (store, mut terms) = (self.shared.store.clone(), self.terms());
        terms.sweep_orphans = self.polls.is_multiple_of(ORPHAN_SWEEP);
        // Bounded: a query stuck on a cut connection must not hold a poll slot for good.
        let bound = std::time::Duration::from_millis(self.shared.lease.lease_ms());
        let fut = async move {
            tokio::time::timeout(bound, store.claim_due(&terms, limit as u64))
                .await
                .unwrap_or_else(|_| Err(StoreError::timed_out()))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.polling -= 1;
            match res {
                Ok(claims) => {
                    for (from, n) in &claims.taken_over {
                        act.shared.metrics.lease.taken_over.inc_by(*n);
                        if from.is_empty() {
                            tracing::warn!(actor = "registry", instance_id = %act.shared.lease.instance_id(), sagas = n, "let go of sagas held by a lease token that no longer exists");
                            continue;
                        }
                        tracing::info!(
                            actor = "registry",
                            instance_id = %act.shared.lease.instance_id(),
                            from = %from,
                            sagas = n,
                            "took over the sagas of an instance whose lease expired"
                        );
                    }
                    let full = claims.sagas.len() >= limit || !claims.taken_over.is_empty();
                    for c in claims.sagas {
                        act.claimed(c, false, ctx);
                    }
                    if full {
                        act.poll(ctx);
                        act.poll(ctx);
                    }
                }
                Err(e) => {
                    tracing::warn!(actor = "registry", error = %e, "cannot look for due sagas in the log")
                }
            }
        }));
        self.poll_requests(ctx);
    }

    /// Loads batches of woken sagas, one query each, and starts their actors; a few batches at
    /// a time, so that a start-up with 100,000 due sagas does not queue 100,000 queries.
    /// Wakes beyond the room for live actors wait here; every poll looks again.
    pub(super) fn load_due(&mut self, ctx: &mut Context<Self>) {
        while self.loading < LOADS && !self.due.is_empty() && self.room() > 0 {
            self.load_batch(ctx);
        }
    }

    /// Loads one batch of `due`.
    fn load_batch(&mut self, ctx: &mut Context<Self>) {
        self.loading += 1;
        let n = self.due.len().min(LOAD_BATCH).min(self.room());
        let ids: Vec<String> = self.due.drain(..n).collect();
        let (store, terms) = (self.shared.store.clone(), self.terms());
        let fut = async move {
            let res = store.claim(&ids, &terms).await;
            (ids, res)
        };
        ctx.spawn(fut.into_actor(self).map(|(ids, res), act, ctx| {
            act.loading -= 1;
            for id in &ids {
                act.due_set.remove(id);
            }
            match res {
                Ok(claimed) => {
                    // Sagas not claimed ended, are driven by another instance, or are
                    // unreadable (claimed by nobody until their actor reports them: rare).
                    for c in claimed {
                        act.claimed(c, false, ctx);
                    }
                }
                Err(e) => {
                    tracing::warn!(actor = "registry", error = %e, "cannot load woken sagas; trying again shortly");
                    for id in ids {
                        act.wake_in(id, RETRY_MS);
                    }
                }
            }
            act.load_due(ctx);
        }));
    }
}
