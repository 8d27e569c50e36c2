//! The registry actor: starts sagas, keeps one supervised actor per live saga, and rehydrates
//! unfinished sagas from the saga log at start-up (or whenever an actor is found dead).

use super::saga::{Operate, SagaActor, Tick};
use super::timer::{Schedule, Shutdown, Timer};
use super::{now_ms, Shared};
use crate::domain::{Event, Input, Rejected, SagaDefinition, SagaState};
use crate::store::{Created, SagaRecord, StepMeta, StoreError};
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
}

/// Operator actions of API.md section 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Stop going forward and compensate.
    Abort,
    /// Resume a stuck saga.
    Retry,
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

/// Schedule a wake for every unfinished saga in the log. Answers how many.
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct Rehydrate;

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
}

/// Most sagas loaded by one query when they are woken.
const LOAD_BATCH: usize = 500;
/// Batch loads in flight at once.
const LOADS: usize = 4;

impl Registry {
    /// A registry placing saga actors round-robin on `arbiters`.
    pub fn new(shared: Arc<Shared>, timer: Addr<Timer>, arbiters: Vec<ArbiterHandle>) -> Self {
        Registry {
            shared,
            timer,
            arbiters,
            next_arbiter: 0,
            live: HashMap::new(),
            due: Vec::new(),
            due_set: HashSet::new(),
            loading: 0,
        }
    }

    /// The live actor of `id`, if it is running.
    fn running(&self, id: &str) -> Option<&Addr<SagaActor>> {
        self.live.get(id).filter(|a| a.connected())
    }

    /// Loads batches of woken sagas, one query each, and starts their actors; a few batches at
    /// a time, so that a start-up with 100,000 due sagas does not queue 100,000 queries.
    fn load_due(&mut self, ctx: &mut Context<Self>) {
        while self.loading < LOADS && !self.due.is_empty() {
            self.load_batch(ctx);
        }
    }

    /// Loads one batch of `due`.
    fn load_batch(&mut self, ctx: &mut Context<Self>) {
        self.loading += 1;
        let n = self.due.len().min(LOAD_BATCH);
        let ids: Vec<String> = self.due.drain(..n).collect();
        let store = self.shared.store.clone();
        let fut = async move {
            let res = store.load_many(&ids).await;
            (ids, res)
        };
        ctx.spawn(fut.into_actor(self).map(|(ids, res), act, ctx| {
            act.loading -= 1;
            for id in &ids {
                act.due_set.remove(id);
            }
            match res {
                Ok(records) => {
                    let mut found = HashSet::with_capacity(records.len());
                    for r in records {
                        found.insert(r.id.clone());
                        act.start_loaded(r, ctx);
                    }
                    // Missing or unreadable rows take the one-by-one path, which reports them.
                    for id in ids.iter().filter(|id| !found.contains(*id)) {
                        act.tick(id, ctx);
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

    /// Starts the actor of a saga loaded by the registry (or ticks the one that started meanwhile).
    fn start_loaded(&mut self, r: SagaRecord, ctx: &mut Context<Self>) {
        if self.running(&r.id).is_some() {
            let id = r.id.clone();
            return self.tick(&id, ctx);
        }
        let (shared, timer, id) = (self.shared.clone(), self.timer.clone(), r.id.clone());
        self.spawn(id, move |reg| SagaActor::loaded(r, shared, reg, timer), ctx);
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

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
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
        let now = now_ms();
        let def = Arc::new(msg.def);
        // The first transition is folded into the insert: one commit, then the first calls.
        let mut state = SagaState::new(&def, now);
        let cmds = state
            .apply(&def, Input::new(now, 1.0), &Event::Start)
            .unwrap_or_default();
        let record = SagaRecord {
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
                        act.spawn(id, move |reg| SagaActor::fresh(r, def, cmds, shared, reg, timer), ctx);
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
    type Result = ResponseFuture<Result<(), OpError>>;

    fn handle(&mut self, msg: OperatorAction, ctx: &mut Context<Self>) -> Self::Result {
        let addr = self.ensure_live(&msg.id, ctx);
        let me = ctx.address();
        Box::pin(async move {
            match addr
                .send(Operate {
                    op: msg.op,
                    who: msg.who,
                })
                .await
            {
                Ok(r) => r,
                Err(_) => {
                    me.do_send(Wake { id: msg.id });
                    Err(OpError::Unavailable)
                }
            }
        })
    }
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
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, _: Rehydrate, _: &mut Context<Self>) -> Self::Result {
        let (store, defaults) = (self.shared.store.clone(), self.shared.defaults);
        Box::pin(
            async move {
                resolve_legacy_definitions(&*store, &defaults).await?;
                store.active_wakes().await
            }
            .into_actor(self)
            .map(|res, act, _| {
                // Only timers are loaded: a saga gets an actor when it is due, so that
                // many sagas waiting on long delays cost no memory after a restart.
                let wakes = res?;
                let now = now_ms();
                for (id, at) in &wakes {
                    act.timer.do_send(Schedule {
                        id: id.clone(),
                        at_ms: at.unwrap_or(now),
                    });
                }
                tracing::info!(
                    actor = "registry",
                    sagas = wakes.len(),
                    "rehydrated unfinished sagas from the saga log"
                );
                Ok(wakes.len())
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
