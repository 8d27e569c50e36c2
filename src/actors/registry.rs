//! The registry actor: starts sagas, keeps one supervised actor per live saga, and rehydrates
//! unfinished sagas from the saga log at start-up (or whenever an actor is found dead).

use super::saga::{Disown, Operate, SagaActor, Tick};
use super::timer::{Schedule, Shutdown, Timer};
use super::{now_ms, Shared};
use crate::domain::{Event, Input, Rejected, SagaDefinition, SagaState};
use crate::store::{
    Claimed, Created, LeaseTerms, OperatorRequest, OwnedCursor, SagaRecord, StepMeta, StoreError,
};
use actix::prelude::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
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
    /// Abort or retry.
    pub op: Op,
    /// Who asked (the caller's address).
    pub who: String,
    /// Carry it out here or not at all (a request left by another instance).
    pub here_only: bool,
}

/// Operator actions of API.md section 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Stop going forward and compensate.
    Abort,
    /// Resume a stuck saga.
    Retry,
}

impl Op {
    /// The state machine's event for it.
    pub fn event(self) -> Event {
        match self {
            Op::Abort => Event::Abort,
            Op::Retry => Event::Retry,
        }
    }

    /// Its name in the history and in operator requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Abort => "abort",
            Op::Retry => "retry",
        }
    }

    /// Reads a name written by [`Op::as_str`].
    pub fn parse(s: &str) -> Option<Op> {
        [Op::Abort, Op::Retry].into_iter().find(|o| o.as_str() == s)
    }
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

/// Where an operator action goes after the first look.
enum Route {
    /// Answered.
    Done(Result<(), OpError>),
    /// Claimed here: start its actor and hand it the action.
    Claimed(Box<Claimed>),
    /// Another instance holds the saga (or nobody can): check the rule and leave a request.
    Elsewhere,
}

/// A saga actor has nothing to do for a while (terminal, stuck, or only waiting on a timer):
/// forget it, so that an idle saga costs no memory. A later wake loads it again from the log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    /// Saga id.
    pub id: String,
    /// The actor releasing itself; a newer actor for the same saga is left alone.
    pub addr: Addr<SagaActor>,
}

/// A released saga actor got work after all (a message queued before its release): keep it,
/// unless another actor already took the saga over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt {
    /// Saga id.
    pub id: String,
    /// The actor.
    pub addr: Addr<SagaActor>,
}

/// Resolves the definitions of sagas from older versions, then starts looking in the log for
/// work every `cluster.poll_ms` (due timers, expired leases, operator requests), resuming
/// first the sagas of `resume`, the token of an earlier run this one took over.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Rehydrate {
    /// The earlier run's token taken over at start-up (a restart), if any.
    pub resume: Option<Arc<str>>,
}

/// The walk through the sagas held by the token taken over from the earlier run: ids are read
/// a page at a time, the sagas loaded a few batches at once.
struct Resuming {
    /// The token (this run's current one, of generation 0).
    owner: Arc<str>,
    /// Where the next page of ids starts; none once every page was read.
    from: Option<OwnedCursor>,
    /// A page is being read.
    reading: bool,
    /// Ids read, waiting to be loaded.
    ids: Vec<String>,
    /// Sagas resumed so far.
    resumed: u64,
}

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

/// Most sagas claimed and loaded by one query.
const LOAD_BATCH: usize = 1000;
/// Batch loads in flight at once.
const LOADS: usize = 4;
/// Most sagas claimed by one poll of the log.
const POLL_BATCH: usize = 2000;
/// Polls in flight at once (after a takeover, each claims a batch of the sagas let go).
const POLLS: usize = 2;
/// One poll in this many also lets go of sagas held by a token without a row (a scan of the
/// unfinished sagas: rare, as such sagas should never exist).
const ORPHAN_SWEEP: u64 = 30;
/// Most ids of the earlier run's sagas read by one query.
const RESUME_PAGE: usize = 10_000;

impl Registry {
    /// A registry placing saga actors round-robin on `arbiters`.
    pub fn new(
        shared: Arc<Shared>,
        timer: Addr<Timer>,
        arbiters: Vec<ArbiterHandle>,
        poll_ms: u64,
        max_live: usize,
    ) -> Self {
        Registry {
            shared,
            timer,
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
    }

    /// How many more saga actors may start.
    fn room(&self) -> usize {
        self.max_live.saturating_sub(self.live.len())
    }

    /// The terms of a claim made now.
    fn terms(&self) -> LeaseTerms {
        let ahead = (self.poll_every.as_millis() as i64).min(self.shared.evict_idle_after_ms);
        LeaseTerms::new(&self.shared.lease.token().owner, now_ms(), ahead)
    }

    /// Asks the log for sagas that need a driver (due timers, expired leases) and starts them;
    /// a full batch asks again at once, a few polls at a time.
    fn poll(&mut self, ctx: &mut Context<Self>) {
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
                        act.shared.metrics.leases.with_label_values(&["taken_over"]).inc_by(*n);
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

    /// Resumes the sagas of the earlier run's token: reads the next page of their ids when
    /// none wait, and loads waiting ids a few batches at once, as room allows. Given up when
    /// the token's lease was lost (its sagas are then let go and claimed like any other).
    fn resume(&mut self, ctx: &mut Context<Self>) {
        let Some(r) = &self.resuming else { return };
        let t = self.shared.lease.token();
        if *t.owner != *r.owner {
            self.resuming = None;
            return;
        }
        if self.shared.is_stopping() || self.shared.lease.remaining(&t).is_none() {
            return;
        }
        while self.loading < LOADS && self.room() > 0 {
            let n = self.room().min(LOAD_BATCH);
            let Some(r) = self.resuming.as_mut().filter(|r| !r.ids.is_empty()) else {
                break;
            };
            let ids: Vec<String> = r.ids.drain(..n.min(r.ids.len())).collect();
            self.load_resumed(ids, t.owner.clone(), ctx);
        }
        let room = self.room();
        let Some(r) = self.resuming.as_mut() else {
            return;
        };
        // The next page is read while the last batches of this one load, so loads never wait.
        if r.reading || r.ids.len() >= LOADS * LOAD_BATCH || room <= r.ids.len() {
            return;
        }
        let Some(from) = r.from.clone() else {
            if !r.ids.is_empty() || self.loading > 0 {
                return;
            }
            tracing::info!(actor = "registry", instance_id = %self.shared.lease.instance_id(), sagas = r.resumed, "resumed the sagas of the earlier run");
            self.resuming = None;
            return;
        };
        r.reading = true;
        let (store, owner) = (self.shared.store.clone(), r.owner.clone());
        let limit = (room - r.ids.len()).min(RESUME_PAGE) as u64;
        let bound = std::time::Duration::from_millis(self.shared.lease.lease_ms());
        let fut = async move {
            tokio::time::timeout(bound, store.owned_page(&owner, &from, limit))
                .await
                .unwrap_or_else(|_| Err(StoreError::timed_out()))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let Some(r) = act.resuming.as_mut() else { return };
            r.reading = false;
            match res {
                Ok((ids, next)) => {
                    r.ids.extend(ids);
                    r.from = next;
                }
                Err(e) => {
                    tracing::warn!(actor = "registry", error = %e, "cannot read the sagas of the earlier run; trying again at the next poll");
                    return;
                }
            }
            act.resume(ctx);
        }));
    }

    /// Loads a batch of the earlier run's sagas and starts their actors: they are this run's
    /// already (the token was taken over), so nothing is written.
    fn load_resumed(&mut self, ids: Vec<String>, owner: Arc<str>, ctx: &mut Context<Self>) {
        self.loading += 1;
        let store = self.shared.store.clone();
        let fut = async move { (store.load_many(&ids).await, ids) };
        ctx.spawn(fut.into_actor(self).map(move |(res, ids), act, ctx| {
            act.loading -= 1;
            match res {
                Ok(records) => {
                    let mine: Vec<SagaRecord> = records
                        .into_iter()
                        .filter(|r| r.owner.as_deref() == Some(&*owner))
                        .collect();
                    let n = mine.len() as u64;
                    act.shared.metrics.leases.with_label_values(&["resumed"]).inc_by(n);
                    if let Some(r) = act.resuming.as_mut() {
                        r.resumed += n;
                    }
                    for record in mine {
                        act.start_loaded(record, false, ctx);
                    }
                }
                Err(e) => {
                    tracing::warn!(actor = "registry", error = %e, "cannot load sagas of the earlier run; trying again at the next poll");
                    if let Some(r) = act.resuming.as_mut() {
                        r.ids.extend(ids);
                    }
                }
            }
            act.resume(ctx);
            act.load_due(ctx);
        }));
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
                m.leases.with_label_values(&["taken_over"]).inc();
                tracing::info!(
                    actor = "registry",
                    instance_id = %self.shared.lease.instance_id(),
                    saga_id = %c.record.id,
                    from = %from,
                    "took over a saga whose lease expired"
                );
            }
            None => m.leases.with_label_values(&["claimed"]).inc(),
        }
        self.start_loaded(c.record, for_operator, ctx)
    }

    /// Carries out the operator actions asked of other instances for sagas this one can drive.
    fn poll_requests(&mut self, ctx: &mut Context<Self>) {
        if self.requests_busy {
            return;
        }
        self.requests_busy = true;
        let store = self.shared.store.clone();
        let limit = std::time::Duration::from_millis(self.shared.lease.lease_ms());
        let fut = async move {
            tokio::time::timeout(limit, store.operation_requests(100))
                .await
                .unwrap_or_else(|_| Err(StoreError::timed_out()))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.requests_busy = false;
            let Ok(requests) = res else { return };
            let me = ctx.address();
            for r in requests {
                let Some(op) = Op::parse(&r.action) else {
                    tracing::warn!(saga_id = %r.saga_id, action = %r.action, "unknown operator request dropped");
                    let store = act.shared.store.clone();
                    actix::spawn(async move { store.drop_operation_request(r.request_id).await });
                    continue;
                };
                let msg = OperatorAction {
                    id: r.saga_id.clone(),
                    op,
                    who: r.who.clone(),
                    here_only: true,
                };
                let (store, me) = (act.shared.store.clone(), me.clone());
                let stale = now_ms() - r.at > act.shared.lease.lease_ms() as i64 + 2 * act.poll_every.as_millis() as i64;
                actix::spawn(async move {
                    let res = me.send(msg).await;
                    let done = match &res {
                        Ok(Ok(())) | Ok(Err(OpError::Rejected(_))) | Ok(Err(OpError::Unloadable(_))) => true,
                        _ if stale => {
                            tracing::warn!(saga_id = %r.saga_id, action = %r.action, who = %r.who, "operator action not carried out: no instance took the saga");
                            true
                        }
                        _ => false,
                    };
                    if let Ok(Err(e)) = &res {
                        if done && !stale {
                            tracing::warn!(saga_id = %r.saga_id, action = %r.action, error = %e, "operator action asked of another instance refused");
                        }
                    }
                    if done {
                        let _ = store.drop_operation_request(r.request_id).await;
                    }
                });
            }
        }));
    }

    /// The live actor of `id`, if it is running.
    fn running(&self, id: &str) -> Option<&Addr<SagaActor>> {
        self.live.get(id).filter(|a| a.connected())
    }

    /// Loads batches of woken sagas, one query each, and starts their actors; a few batches at
    /// a time, so that a start-up with 100,000 due sagas does not queue 100,000 queries.
    /// Wakes beyond the room for live actors wait here; every poll looks again.
    fn load_due(&mut self, ctx: &mut Context<Self>) {
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
                    tracing::warn!(actor = "registry", error = %e, "cannot load woken sagas; trying again in 1 s");
                    for id in ids {
                        act.timer.do_send(Schedule { id, at_ms: now_ms() + 1_000 });
                    }
                }
            }
            act.load_due(ctx);
        }));
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
        let (shared, timer, id) = (self.shared.clone(), self.timer.clone(), r.id.clone());
        self.spawn(
            id,
            move |reg| SagaActor::loaded(r, for_operator, shared, reg, timer),
            ctx,
        )
    }

    /// Nudges the actor of `id`, starting it from the log if it has none.
    fn tick(&mut self, id: &str, ctx: &mut Context<Self>) {
        let addr = self.ensure_live(id, ctx);
        match addr.try_send(Tick) {
            Ok(()) => {}
            Err(SendError::Full(_)) => {
                // The actor is busy; a tick is only a nudge, so try again shortly.
                self.timer.do_send(Schedule {
                    id: id.to_string(),
                    at_ms: now_ms() + 50,
                });
            }
            Err(SendError::Closed(_)) => {
                self.live.remove(id);
                self.timer.do_send(Schedule {
                    id: id.to_string(),
                    at_ms: now_ms(),
                });
            }
        }
    }

    fn spawn(
        &mut self,
        id: String,
        actor: impl FnOnce(Addr<Registry>) -> SagaActor + Send + 'static,
        ctx: &mut Context<Self>,
    ) -> Addr<SagaActor> {
        let me = ctx.address();
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let addr = Supervisor::start_in_arbiter(arbiter, move |_| actor(me));
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
        let (shared, timer, sid) = (self.shared.clone(), self.timer.clone(), id.to_string());
        self.spawn(
            id.to_string(),
            move |reg| SagaActor::from_log(sid, shared, reg, timer),
            ctx,
        )
    }
}

impl Registry {
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

/// The per-step facts stored beside the state, for listings.
pub fn step_metas(def: &SagaDefinition) -> Vec<StepMeta> {
    def.steps
        .iter()
        .map(|s| StepMeta {
            name: s.name.clone(),
            service: s.forward.service.clone(),
        })
        .collect()
}

impl Handler<StartSaga> for Registry {
    type Result = ResponseActFuture<Self, Result<StartOutcome, StoreError>>;

    fn handle(&mut self, msg: StartSaga, _: &mut Context<Self>) -> Self::Result {
        if self.room() == 0 {
            let why = format!(
                "{} sagas are live (runtime.max_live_sagas)",
                self.live.len()
            );
            return Box::pin(actix::fut::ready(Err(StoreError::Unavailable(why))));
        }
        let now = now_ms();
        let def = Arc::new(msg.def);
        // The first transition is folded into the insert: one commit, then the first calls.
        let mut state = SagaState::new(&def, now);
        let cmds = state
            .apply(&def, Input::new(now, 1.0), &Event::Start)
            .unwrap_or_default();
        let token = self.shared.lease.token();
        let record = SagaRecord {
            owner: Some(token.owner.to_string()),
            id: msg.id,
            name: def.name.clone(),
            mode: def.mode.as_str().into(),
            request: msg.request,
            definition: Ok(def.clone()),
            created_at: now,
            updated_at: now,
            version: 0,
            steps: step_metas(&def),
            state,
        };
        let store = self.shared.store.clone();
        let t = std::time::Instant::now();
        Box::pin(
            async move {
                let res = store.create(&record).await;
                (res, record)
            }
            .into_actor(self)
            .map(move |(res, record), act, ctx| {
                act.shared.metrics.store_write.with_label_values(&["create"]).observe(t.elapsed().as_secs_f64());
                match res? {
                    Created::Existing(r) => Ok(StartOutcome::Existing(r)),
                    Created::New => {
                        act.shared.metrics.started.with_label_values(&[&record.name]).inc();
                        tracing::info!(saga_id = %record.id, saga_name = %record.name, steps = record.steps.len(), "saga started");
                        let (shared, timer, r) = (act.shared.clone(), act.timer.clone(), record.clone());
                        let id = record.id.clone();
                        act.spawn(id, move |reg| SagaActor::fresh(r, def, cmds, token, shared, reg, timer), ctx);
                        Ok(StartOutcome::Created(Box::new(record)))
                    }
                }
            }),
        )
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

impl Handler<OperatorAction> for Registry {
    type Result = ResponseActFuture<Self, Result<(), OpError>>;

    /// To the saga's actor here; else the saga is claimed here; else (another instance drives
    /// it) the rule is checked on the log and the action left for its owner, who carries it
    /// out within one poll interval.
    fn handle(&mut self, msg: OperatorAction, _: &mut Context<Self>) -> Self::Result {
        let live = self.running(&msg.id).cloned();
        let (store, terms) = (self.shared.store.clone(), self.terms());
        let (id, op, who, here_only) = (msg.id, msg.op, msg.who, msg.here_only);
        let operate = Operate {
            op,
            who: who.clone(),
        };
        let first = {
            let (id, operate) = (id.clone(), operate.clone());
            async move {
                if let Some(addr) = live {
                    match addr.send(operate).await {
                        Ok(Err(OpError::Released)) | Err(_) => {}
                        Ok(r) => return Route::Done(r),
                    }
                }
                match store.claim(std::slice::from_ref(&id), &terms).await {
                    Ok(mut c) if !c.is_empty() => Route::Claimed(Box::new(c.remove(0))),
                    Ok(_) if here_only => Route::Done(Err(OpError::Unavailable)),
                    Ok(_) => Route::Elsewhere,
                    Err(_) => Route::Done(Err(OpError::Unavailable)),
                }
            }
        };
        let store = self.shared.store.clone();
        Box::pin(first.into_actor(self).then(move |route, act, ctx| {
            let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), OpError>>>> =
                match route {
                    Route::Done(r) => Box::pin(async move { r }),
                    Route::Claimed(c) => {
                        let addr = act.claimed(*c, true, ctx);
                        Box::pin(async move {
                            addr.send(operate)
                                .await
                                .unwrap_or(Err(OpError::Unavailable))
                        })
                    }
                    Route::Elsewhere => {
                        Box::pin(async move { leave_for_owner(&*store, &id, op, who).await })
                    }
                };
            fut.into_actor(act)
        }))
    }
}

/// Checks the action against the saga's state in the log (the rule is the state machine's)
/// and leaves it for the instance that drives the saga.
async fn leave_for_owner(
    store: &dyn crate::store::SagaStore,
    id: &str,
    op: Op,
    who: String,
) -> Result<(), OpError> {
    let r = match store.load(id).await {
        Ok(Some(r)) => r,
        Ok(None) | Err(_) => return Err(OpError::Unavailable),
    };
    let def = r.definition.map_err(OpError::Unloadable)?;
    r.state
        .decide(&def, Input::new(now_ms(), 1.0), &op.event())?;
    store
        .request_operation(&OperatorRequest {
            request_id: 0,
            saga_id: id.to_string(),
            action: op.as_str().into(),
            who,
            at: now_ms(),
        })
        .await
        .map_err(|_| OpError::Unavailable)
}

impl Handler<Release> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Release, _: &mut Context<Self>) {
        if self.live.get(&msg.id) != Some(&msg.addr) {
            return;
        }
        // Dropping the address lets the actor stop once its work is done; the
        // Supervisor does not restart an actor nobody can reach.
        self.live.remove(&msg.id);
    }
}

impl Handler<Adopt> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Adopt, _: &mut Context<Self>) {
        self.live.entry(msg.id).or_insert(msg.addr);
    }
}

impl Handler<Rehydrate> for Registry {
    type Result = ResponseActFuture<Self, Result<(), StoreError>>;

    fn handle(&mut self, msg: Rehydrate, _: &mut Context<Self>) -> Self::Result {
        self.resuming = msg.resume.map(|owner| Resuming {
            owner,
            from: Some(OwnedCursor::default()),
            reading: false,
            ids: Vec::new(),
            resumed: 0,
        });
        let (store, defaults) = (self.shared.store.clone(), self.shared.defaults);
        Box::pin(
            async move { resolve_legacy_definitions(&*store, &defaults).await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    res?;
                    // Work is found by query, not by memory: nothing is loaded up front, and
                    // sagas with long delays cost no memory until they are due.
                    act.poll(ctx);
                    ctx.run_interval(act.poll_every, |act, ctx| act.poll(ctx));
                    tracing::info!(
                        actor = "registry",
                        instance_id = %act.shared.lease.instance_id(),
                        "looking for due sagas in the saga log"
                    );
                    Ok(())
                }),
        )
    }
}

/// Unfinished sagas recorded before definitions were stored get theirs once, resolved with
/// today's defaults (the only ones known); from then on they keep it. A request that no longer
/// validates is left to its actor, which makes the saga stuck with an alert.
async fn resolve_legacy_definitions(
    store: &dyn crate::store::SagaStore,
    defaults: &crate::domain::Defaults,
) -> Result<(), StoreError> {
    for (id, request) in store.without_definition().await? {
        match crate::domain::parse_request(&request, defaults) {
            Ok(def) => {
                store.set_definition(&id, &def).await?;
                tracing::info!(saga_id = %id, "stored the resolved definition of a saga from an older version");
            }
            Err(errors) => {
                tracing::warn!(saga_id = %id, errors = ?errors, "stored request no longer validates");
            }
        }
    }
    Ok(())
}

impl Handler<Shutdown> for Registry {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        // Saga actors stop with their arbiters; the log keeps what they did.
        self.live.clear();
        ctx.stop();
    }
}
