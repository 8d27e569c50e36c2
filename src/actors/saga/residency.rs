//! Where a saga actor stands with its saga, and the one rule of when it gives the saga up.
//!
//! An actor loads its saga (claiming it under this instance's lease), drives it while it holds
//! the lease, and lets it go when it is idle: nothing in flight, no lingering for an operator
//! action, and nothing due within `runtime.evict_idle_after_ms` (or only waiting for its client:
//! a prepared DTM transaction, which any instance may be asked to go on with). Letting go gives up the lease
//! (with the write that leaves the saga idle, or by itself) and tells the registry to forget
//! the actor, so that an idle saga costs no memory; the log keeps its due time, where any
//! instance's poll finds it.

use super::{Live, SagaActor};
use crate::actors::messages::{Adopt, Cancel, Release};
use crate::actors::RETRY_MS;
use crate::domain::{Event, SagaState, SagaStatus};
use crate::store::{LeaseTerms, SagaRecord};
use actix::prelude::*;
use std::time::Duration;

/// Where the actor stands with its saga.
pub(super) enum Residency {
    /// Waiting for its saga to be loaded and claimed.
    Loading,
    /// Holds the saga's lease and drives it.
    Driving(Box<Live>),
    /// Gave the lease up (idle, or another writer or instance has the saga now): it answers
    /// operator actions `Released`, so the registry claims the saga again.
    LetGo,
    /// The saga cannot be loaded; operator actions are answered with why.
    Unusable(String),
}

/// What decides whether a saga is idle.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    /// The actor holds the saga's lease.
    pub holds: bool,
    /// Participant calls in flight.
    pub calls: usize,
    /// Now (ms).
    pub now: i64,
    /// The lease is kept until then, idle or not (an operator action is on its way).
    pub linger_until: i64,
    /// When the saga is next due, if ever.
    pub next_wake: Option<i64>,
    /// `runtime.evict_idle_after_ms`.
    pub evict_after: i64,
    /// The saga waits for its client (prepared): nothing but its deadline is due.
    pub waits_for_client: bool,
}

/// Whether the saga can be let go: not held, or nothing in flight, no lingering, and nothing
/// due before `evict_after` (or only waiting for its client, whose next call may reach any
/// instance).
pub(super) fn idle(f: Facts) -> bool {
    !f.holds
        || f.calls == 0
            && f.now >= f.linger_until
            && (f.waits_for_client || f.next_wake.is_none_or(|at| at - f.now >= f.evict_after))
}

impl SagaActor {
    /// The facts of this actor now, for [`idle`].
    fn facts(&self) -> Facts {
        let live = self.live();
        Facts {
            holds: live.is_some(),
            calls: self.calls,
            now: self.now_ms(),
            linger_until: self.linger_until,
            next_wake: live.and_then(|l| l.state.next_wake()),
            evict_after: self.shared().evict_idle_after_ms,
            waits_for_client: live.is_some_and(|l| l.state.status == SagaStatus::Prepared),
        }
    }

    /// Whether a write that leaves the saga in `next_wake` with `calls` in flight leaves it
    /// idle: then the lease is given up with that write.
    pub(super) fn idle_after(&self, calls: usize, next: &SagaState) -> bool {
        idle(Facts {
            holds: true,
            calls,
            next_wake: next.next_wake(),
            waits_for_client: next.status == SagaStatus::Prepared,
            ..self.facts()
        })
    }

    /// Tells the registry to forget this actor, whatever its state, and gives up the saga's
    /// lease if the log still has it (a saga claimed but left as it was: stuck, ended).
    pub(super) fn release(&mut self, ctx: &mut Context<Self>) {
        if let Residency::Driving(_) = self.residency {
            self.residency = Residency::LetGo;
            let shared = self.links.shared.clone();
            let (id, owner) = (self.id.clone(), self.token.owner.clone());
            shared.metrics.lease.released.inc();
            actix::spawn(async move {
                if let Err(e) = shared.store.release(&id, &owner).await {
                    tracing::warn!(saga_id = %id, error = %e, "cannot give up the lease of a saga (it expires)");
                }
            });
        }
        if self.registered {
            self.registered = false;
            self.links.release.do_send(Release {
                id: self.id.clone(),
                addr: ctx.address(),
            });
        }
    }

    /// Releases the actor while it only waits (nothing in flight, nothing due soon), and
    /// registers it again if work arrived after all.
    pub(super) fn sync_registration(&mut self, ctx: &mut Context<Self>) {
        if matches!(self.residency, Residency::Loading | Residency::Unusable(_)) {
            return;
        }
        if idle(self.facts()) {
            self.release(ctx);
        } else if !self.registered {
            self.registered = true;
            self.links.adopt.do_send(Adopt {
                id: self.id.clone(),
                addr: ctx.address(),
            });
        }
    }

    /// Claims the saga and loads it (another instance may hold it: then this actor goes).
    pub(super) fn load(&mut self, ctx: &mut Context<Self>) {
        let store = self.shared().store.clone();
        let id = self.id.clone();
        let terms = LeaseTerms::new(&self.token.owner, self.now_ms(), 0);
        let fut = async move {
            let claimed = store.claim(std::slice::from_ref(&id), &terms).await?;
            match claimed.into_iter().next() {
                Some(c) => Ok(Some(c.record)),
                // Not claimable: still report a saga that cannot be read at all.
                None => store.load(&id).await.map(|_| None),
            }
        };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(Some(r)) => act.adopt(r, false, ctx),
            Ok(None) => {
                act.residency = Residency::LetGo;
                act.release(ctx)
            }
            Err(e) => {
                act.span.in_scope(
                    || tracing::error!(error = %e, "cannot load saga; trying again shortly"),
                );
                let wait = Duration::from_millis(RETRY_MS as u64);
                ctx.run_later(wait, |act, ctx| act.load(ctx));
            }
        }));
    }

    /// Drives saga `r` with `def`; its log lines carry its trace id from now on.
    pub(super) fn drive(
        &mut self,
        r: SagaRecord,
        def: std::sync::Arc<crate::domain::SagaDefinition>,
    ) {
        let trace = crate::domain::TraceContext::of_saga(def.trace.as_ref(), &r.id);
        self.span.record("trace_id", trace.trace_id.as_str());
        self.residency = Residency::Driving(Live::of(r, def));
    }

    /// Takes over a saga read from the log: an unfinished one resumes (calls whose answers were
    /// not recorded count as lost); an ended or stuck one waits for operator messages.
    /// `for_operator`: it was claimed for an operator action, which follows.
    pub(super) fn adopt(&mut self, mut r: SagaRecord, for_operator: bool, ctx: &mut Context<Self>) {
        self.span.record("saga_name", r.name.as_str());
        if r.owner.as_deref() != Some(&*self.token.owner) {
            // Claimed under a token this instance has since lost: the claim expires.
            self.residency = Residency::LetGo;
            return self.release(ctx);
        }
        let (unfinished, active) = (!r.state.status.is_terminal(), r.state.status.is_active());
        let def = match std::mem::replace(&mut r.definition, Err(String::new())) {
            Ok(d) => d,
            Err(why) if active => return self.unloadable(r.name, why, ctx),
            Err(why) => {
                self.residency = Residency::Unusable(why);
                return self.release(ctx);
            }
        };
        self.drive(r, def);
        if for_operator || !active {
            // Claimed for an operator action, which is queued right behind (a stuck saga, or
            // an active one idle until a distant retry): give it a moment before giving the
            // lease up again. (A saga claimed because it is due needs no such moment.)
            let linger = self.shared().evict_idle_after_ms.max(100);
            self.linger_until = self.now_ms() + linger;
            ctx.run_later(Duration::from_millis(linger as u64), |act, ctx| {
                act.sync_registration(ctx)
            });
        }
        if unfinished {
            // A stuck saga too: a call of another step may have lost its answer.
            self.handle_event(Event::Resume, None, ctx, None);
        }
    }

    /// A saga whose definition cannot be read back cannot run: it becomes `stuck` with an alert
    /// rather than sit silently unfinished.
    fn unloadable(&mut self, name: String, why: String, ctx: &mut Context<Self>) {
        let reason = format!("the saga cannot be loaded: {why}");
        let (store, id, msg) = (self.shared().store.clone(), self.id.clone(), reason.clone());
        let now = self.now_ms();
        let fut = async move { store.mark_stuck(&id, &msg, now).await };
        ctx.wait(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(true) => act.report_unloadable(&name, &reason),
                Ok(false) => {}
                Err(e) => act.span.in_scope(
                    || tracing::error!(error = %e, "cannot record that the saga cannot be loaded"),
                ),
            }
            act.residency = Residency::Unusable(reason);
            act.links.cancel.do_send(Cancel { id: act.id.clone() });
            act.release(ctx);
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::{idle, Facts};

    const NOW: i64 = 1_000_000;

    fn driving() -> Facts {
        Facts {
            holds: true,
            calls: 0,
            now: NOW,
            linger_until: 0,
            next_wake: None,
            evict_after: 1_000,
            waits_for_client: false,
        }
    }

    #[test]
    fn a_saga_is_idle_when_nothing_is_in_flight_lingering_or_due_soon() {
        assert!(idle(driving()), "ended or stuck: nothing due");
        let far = Facts {
            next_wake: Some(NOW + 1_000),
            ..driving()
        };
        assert!(idle(far), "due exactly evict_after away: let go");
        let soon = Facts {
            next_wake: Some(NOW + 999),
            ..driving()
        };
        assert!(!idle(soon), "due sooner: kept in memory");
        let calling = Facts {
            calls: 1,
            ..driving()
        };
        assert!(!idle(calling), "a call in flight: kept");
        let lingering = Facts {
            linger_until: NOW + 1,
            ..driving()
        };
        assert!(!idle(lingering), "an operator action on its way: kept");
        let lingered = Facts {
            linger_until: NOW,
            ..driving()
        };
        assert!(idle(lingered), "the linger is over");
        let not_held = Facts {
            holds: false,
            calls: 3,
            linger_until: NOW + 5_000,
            next_wake: Some(NOW),
            ..driving()
        };
        assert!(idle(not_held), "without the lease nothing keeps it");
        let overdue = Facts {
            next_wake: Some(NOW - 50),
            ..driving()
        };
        assert!(!idle(overdue), "due already: kept");
        let never_evict = Facts {
            evict_after: 0,
            next_wake: Some(NOW + 1),
            ..driving()
        };
        assert!(
            idle(never_evict),
            "evict_idle_after_ms = 0: any wait lets it go"
        );
        let prepared = Facts {
            waits_for_client: true,
            next_wake: Some(NOW + 1),
            ..driving()
        };
        assert!(idle(prepared), "waiting for its client: let go");
        let prepared_lingering = Facts {
            linger_until: NOW + 1,
            ..prepared
        };
        assert!(!idle(prepared_lingering), "an action on its way: kept");
    }
}
