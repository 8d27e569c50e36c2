//! The registry actor: keeps one supervised actor per live saga and finds the work of this
//! instance. Each of its jobs has a file:
//! - [`start`]: a new saga is recorded and its actor started;
//! - [`poll`]: the log is asked for due sagas and the sagas of dead instances, and woken sagas
//!   are loaded in batches;
//! - [`resume`]: at a restart, the earlier run's sagas are paged in;
//! - [`operator`]: operator actions, to the saga's actor here or left for the instance that
//!   drives it.
//!
//! Here: the map of live actors, starting one, nudging one, forgetting one that went idle, and
//! dropping them all when this instance's lease is lost.

mod operator;
mod poll;
mod resume;
mod start;

use super::messages::{Adopt, Disown, Release, Schedule, Shutdown, Tick, Wake};
use super::saga::SagaActor;
use super::timer::Timer;
use super::Shared;
use crate::store::{Claimed, LeaseTerms, SagaRecord};
use actix::prelude::*;
use resume::Resuming;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Owns the map of live saga actors.
pub struct Registry {
    shared: Arc<Shared>,
    timer: Addr<Timer>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    live: HashMap<String, Addr<SagaActor>>,
    /// Sagas woken without an actor, waiting to be loaded (in batches, not a query each).
    due: Vec<String>,
    due_set: HashSet<String>,
    /// Batches of `due` being loaded.
    loading: usize,
    /// Polls of the log in flight.
    polling: usize,
    /// Polls of the log so far (every `ORPHAN_SWEEP`th also sweeps orphans).
    polls: u64,
    /// A look at the operator requests is in flight.
    requests_busy: bool,
    /// How often the log is polled.
    poll_every: std::time::Duration,
    /// Most saga actors alive at once: beyond, starts get 503 and claims wait in the log.
    max_live: usize,
    /// Resuming the earlier run's sagas (a restart), until all are loaded.
    resuming: Option<Resuming>,
}

impl Registry {
    /// Starts the registry and its timer, saga actors going round-robin on `arbiters`.
    pub fn start(
        shared: Arc<Shared>,
        arbiters: Vec<ArbiterHandle>,
        poll_ms: u64,
        max_live: usize,
    ) -> (Addr<Registry>, Addr<Timer>) {
        let mut timer = None;
        let registry = Registry::create(|ctx| {
            let t = Timer::new(
                ctx.address().recipient(),
                shared.clock.clone(),
                shared.metrics.clone(),
            )
            .start();
            timer = Some(t.clone());
            Registry {
                shared,
                timer: t,
                arbiters,
                next_arbiter: 0,
                live: HashMap::new(),
                due: Vec::new(),
                due_set: HashSet::new(),
                loading: 0,
                polling: 0,
                polls: 0,
                requests_busy: false,
                poll_every: std::time::Duration::from_millis(poll_ms),
                max_live: max_live.max(1),
                resuming: None,
            }
        });
        let timer = timer.expect("the registry was created");
        (registry, timer)
    }

    /// How many more saga actors may start.
    fn room(&self) -> usize {
        self.max_live.saturating_sub(self.live.len())
    }

    fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    /// The terms of a claim made now.
    fn terms(&self) -> LeaseTerms {
        let ahead = (self.poll_every.as_millis() as i64).min(self.shared.evict_idle_after_ms);
        LeaseTerms::new(&self.shared.lease.token().owner, self.now_ms(), ahead)
    }

    /// Asks the timer to wake `id` after `ms`.
    fn wake_in(&self, id: String, ms: i64) {
        self.timer.do_send(Schedule {
            id,
            at_ms: self.now_ms() + ms,
        });
    }

    /// The live actor of `id`, if it is running.
    fn running(&self, id: &str) -> Option<&Addr<SagaActor>> {
        self.live.get(id).filter(|a| a.connected())
    }

    /// Counts and logs a claim, then starts the saga's actor.
    /// `for_operator`: claimed to carry out an operator action, sent right after.
    fn claimed(
        &mut self,
        c: Claimed,
        for_operator: bool,
        ctx: &mut Context<Self>,
    ) -> Addr<SagaActor> {
        let m = &self.shared.metrics;
        match &c.taken_from {
            Some(from) => {
                m.lease.taken_over.inc();
                tracing::info!(
                    actor = "registry",
                    instance_id = %self.shared.lease.instance_id(),
                    saga_id = %c.record.id,
                    from = %from,
                    "took over a saga whose lease expired"
                );
            }
            None => m.lease.claimed.inc(),
        }
        self.start_loaded(c.record, for_operator, ctx)
    }

    /// Starts the actor of a saga claimed by the registry (or ticks the one that started meanwhile).
    fn start_loaded(
        &mut self,
        r: SagaRecord,
        for_operator: bool,
        ctx: &mut Context<Self>,
    ) -> Addr<SagaActor> {
        if let Some(a) = self.running(&r.id).cloned() {
            let id = r.id.clone();
            self.tick(&id, ctx);
            return a;
        }
        let id = r.id.clone();
        self.spawn(
            id,
            move |links| SagaActor::loaded(r, for_operator, links),
            ctx,
        )
    }

    /// Nudges the actor of `id`, starting it from the log if it has none.
    fn tick(&mut self, id: &str, ctx: &mut Context<Self>) {
        let addr = self.ensure_live(id, ctx);
        match addr.try_send(Tick) {
            Ok(()) => {}
            // The actor is busy; a tick is only a nudge, so try again shortly.
            Err(SendError::Full(_)) => self.wake_in(id.to_string(), 50),
            Err(SendError::Closed(_)) => {
                self.live.remove(id);
                self.wake_in(id.to_string(), 0);
            }
        }
    }

    /// Starts a saga actor on the next arbiter and records it as the saga's live actor.
    fn spawn(
        &mut self,
        id: String,
        actor: impl FnOnce(super::saga::Links) -> SagaActor + Send + 'static,
        ctx: &mut Context<Self>,
    ) -> Addr<SagaActor> {
        let links = super::saga::Links {
            shared: self.shared.clone(),
            release: ctx.address().recipient(),
            adopt: ctx.address().recipient(),
            schedule: self.timer.clone().recipient(),
            cancel: self.timer.clone().recipient(),
        };
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let addr = Supervisor::start_in_arbiter(arbiter, move |_| actor(links));
        self.live.insert(id, addr.clone());
        addr
    }

    /// The live actor of `id`, started from the log if there is none.
    fn ensure_live(&mut self, id: &str, ctx: &mut Context<Self>) -> Addr<SagaActor> {
        if let Some(a) = self.live.get(id) {
            if a.connected() {
                return a.clone();
            }
            tracing::warn!(saga_id = %id, actor = "saga", "saga actor found dead; rehydrating from the saga log");
        }
        let sid = id.to_string();
        self.spawn(
            id.to_string(),
            move |links| SagaActor::from_log(sid, links),
            ctx,
        )
    }

    /// Watches this instance's lease: when a generation is lost (not renewed in time), every
    /// saga actor of it stops at once; their sagas are claimed again from the log.
    fn watch_lease(&mut self, seen: u64, ctx: &mut Context<Self>) {
        let lease = self.shared.lease.clone();
        let next = async move { lease.generation_after(seen).await };
        ctx.spawn(next.into_actor(self).map(|current, act, ctx| {
            for (_, addr) in act.live.drain() {
                addr.do_send(Disown { before: current });
            }
            act.watch_lease(current, ctx);
        }));
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
        let seen = self.shared.lease.token().generation;
        self.watch_lease(seen, ctx);
        tracing::info!(
            actor = "registry",
            arbiters = self.arbiters.len(),
            "registry started"
        );
    }
}

impl Handler<Wake> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Wake, ctx: &mut Context<Self>) {
        if self.running(&msg.id).is_some() {
            return self.tick(&msg.id, ctx);
        }
        if self.due_set.insert(msg.id.clone()) {
            self.due.push(msg.id);
        }
        self.load_due(ctx);
    }
}

impl Handler<Release<SagaActor>> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Release<SagaActor>, _: &mut Context<Self>) {
        if self.live.get(&msg.id) != Some(&msg.addr) {
            return;
        }
        // Dropping the address lets the actor stop once its work is done; the
        // Supervisor does not restart an actor nobody can reach.
        self.live.remove(&msg.id);
    }
}

impl Handler<Adopt<SagaActor>> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Adopt<SagaActor>, _: &mut Context<Self>) {
        match self.live.get(&msg.id) {
            Some(a) if *a == msg.addr => {}
            // Another actor drives this saga here already: one driver per saga and process,
            // or both would send the same call.
            Some(a) if a.connected() => msg.addr.do_send(Disown { before: u64::MAX }),
            _ => {
                self.live.insert(msg.id, msg.addr);
            }
        }
    }
}

impl Handler<Shutdown> for Registry {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        // Saga actors stop with their arbiters; the log keeps what they did.
        self.live.clear();
        ctx.stop();
    }
}
