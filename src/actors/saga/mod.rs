//! One actor per live saga: applies events to the state machine, makes each transition durable,
//! and only then executes its commands (participant calls, timers, history is in the write).
//!
//! On any failure to write the log the actor stops; its Supervisor restarts it and
//! [`actix::Supervised::restarting`] drops the in-memory state, so it reloads from the log and
//! resumes (a call whose answer was not recorded is sent again, same Idempotency-Key).

mod report;

use super::lease::Token;
use super::registry::{Adopt, Op, OpError, Registry, Release};
use super::timer::{Cancel, Schedule, Timer};
use super::{now_ms, Shared};
use crate::domain::{Answer, Command, Endpoint, Event, Input, Phase, SagaDefinition, SagaState};
use crate::participant::CallSpec;
use crate::store::{LogRecord, SagaRecord, StoreError, Transition};
use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Instrument;

/// Something may be due: re-evaluate the saga.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

/// This instance lost the leases of every generation before `before`: an actor of one of them
/// stops at once and sends nothing more.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disown {
    /// The current generation.
    pub before: u64,
}

/// An operator action, answered once its transition is durable.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), OpError>")]
pub struct Operate {
    /// Abort or retry.
    pub op: Op,
    /// Who asked.
    pub who: String,
}

/// The loaded saga.
struct Live {
    def: Arc<SagaDefinition>,
    name: String,
    created_at: i64,
    version: i64,
    state: SagaState,
}

/// Runs one saga.
pub struct SagaActor {
    id: String,
    shared: Arc<Shared>,
    registry: Addr<Registry>,
    timer: Addr<Timer>,
    live: Option<Live>,
    /// Commands of the creating transition, executed once the actor runs.
    initial: Vec<Command>,
    /// The wake this actor last gave the timer.
    last_wake: Option<i64>,
    /// Participant calls this actor has in flight.
    calls: usize,
    /// The registry was told to forget this actor.
    released: bool,
    /// Claimed for an operator action, queued behind the load.
    for_operator: bool,
    /// Idle or not, the lease is kept until then (ms since epoch): a saga claimed for an
    /// operator action must still hold it when that action arrives.
    linger_until: i64,
    /// Supervised restarts since the last successful log write (sets the reload backoff).
    restarts: u32,
    /// Why the saga cannot be loaded, when it cannot (operator actions answer with it).
    unusable: Option<String>,
    /// The saga as the registry read it, taken over when the actor starts.
    record: Option<Box<SagaRecord>>,
    /// The saga's span: every line logged about the saga is inside it (saga_id, saga_name).
    span: tracing::Span,
    /// The lease token this actor writes and calls under.
    token: Token,
    /// The log says this instance (`token`) holds the saga: only then may it write or call.
    holds: bool,
}

type Reply = Option<oneshot::Sender<Result<(), OpError>>>;

impl SagaActor {
    fn with(
        id: String,
        live: Option<Live>,
        initial: Vec<Command>,
        shared: Arc<Shared>,
        registry: Addr<Registry>,
        timer: Addr<Timer>,
    ) -> Self {
        let name = live.as_ref().map(|l| l.name.as_str()).unwrap_or_default();
        let span = tracing::info_span!("saga", saga_id = %id, saga_name = %name);
        let token = shared.lease.token();
        SagaActor {
            token,
            holds: false,
            id,
            shared,
            registry,
            timer,
            live,
            initial,
            last_wake: None,
            calls: 0,
            released: false,
            for_operator: false,
            linger_until: 0,
            restarts: 0,
            unusable: None,
            record: None,
            span,
        }
    }

    /// An actor for a saga just recorded by the registry (held under `token`), with its first
    /// commands.
    pub fn fresh(
        r: SagaRecord,
        def: Arc<SagaDefinition>,
        initial: Vec<Command>,
        token: Token,
        shared: Arc<Shared>,
        registry: Addr<Registry>,
        timer: Addr<Timer>,
    ) -> Self {
        let live = Live {
            def,
            name: r.name,
            created_at: r.created_at,
            version: r.version,
            state: r.state,
        };
        let mut a = Self::with(r.id, Some(live), initial, shared, registry, timer);
        a.token = token;
        a.holds = true;
        a
    }

    /// An actor for a saga the registry read from the log; it resumes it. `for_operator`: it
    /// was claimed for an operator action, which follows.
    pub fn loaded(
        r: SagaRecord,
        for_operator: bool,
        shared: Arc<Shared>,
        registry: Addr<Registry>,
        timer: Addr<Timer>,
    ) -> Self {
        let mut a = Self::with(r.id.clone(), None, vec![], shared, registry, timer);
        a.record = Some(Box::new(r));
        a.for_operator = for_operator;
        a
    }

    /// An actor that loads its saga from the log and resumes it.
    pub fn from_log(
        id: String,
        shared: Arc<Shared>,
        registry: Addr<Registry>,
        timer: Addr<Timer>,
    ) -> Self {
        Self::with(id, None, vec![], shared, registry, timer)
    }

    /// Tells the registry to forget this actor, whatever its state, and gives up the saga's
    /// lease if the log still has it (a saga claimed but left as it was: stuck, ended).
    fn release(&mut self, ctx: &mut Context<Self>) {
        if self.holds {
            self.holds = false;
            let (store, id, owner) = (
                self.shared.store.clone(),
                self.id.clone(),
                self.token.owner.clone(),
            );
            self.shared
                .metrics
                .leases
                .with_label_values(&["released"])
                .inc();
            actix::spawn(async move {
                if let Err(e) = store.release(&id, &owner).await {
                    tracing::warn!(saga_id = %id, error = %e, "cannot give up the lease of a saga (it expires)");
                }
            });
        }
        if !self.released {
            self.released = true;
            self.registry.do_send(Release {
                id: self.id.clone(),
                addr: ctx.address(),
            });
        }
    }

    /// Releases the actor while it only waits (nothing in flight, nothing due soon), and
    /// registers it again if work arrived after all.
    fn sync_registration(&mut self, ctx: &mut Context<Self>) {
        let Some(live) = &self.live else { return };
        let idle = !self.holds
            || self.calls == 0
                && now_ms() >= self.linger_until
                && (live.state.next_wake().is_none()
                    || self
                        .last_wake
                        .is_none_or(|at| at - now_ms() >= self.shared.evict_idle_after_ms));
        if idle {
            self.release(ctx);
        } else if self.released {
            self.released = false;
            self.registry.do_send(Adopt {
                id: self.id.clone(),
                addr: ctx.address(),
            });
        }
    }

    /// Claims the saga and loads it (another instance may hold it: then this actor goes).
    fn load(&mut self, ctx: &mut Context<Self>) {
        let store = self.shared.store.clone();
        let id = self.id.clone();
        let terms = crate::store::LeaseTerms::new(&self.token.owner, now_ms(), 0);
        let fut = async move {
            let claimed = store.claim(std::slice::from_ref(&id), &terms).await?;
            match claimed.into_iter().next() {
                Some(c) => Ok(Some(c.record)),
                // Not claimable: still report a saga that cannot be read at all.
                None => store.load(&id).await.map(|_| None),
            }
        };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(Some(r)) => act.adopt(r, ctx),
            Ok(None) => act.release(ctx),
            Err(e) => {
                act.span.in_scope(
                    || tracing::error!(error = %e, "cannot load saga; trying again in 1 s"),
                );
                ctx.run_later(Duration::from_secs(1), |act, ctx| act.load(ctx));
            }
        }));
    }

    /// Takes over a saga read from the log: an unfinished one resumes (calls whose answers were
    /// not recorded count as lost); an ended or stuck one waits for operator messages.
    fn adopt(&mut self, r: SagaRecord, ctx: &mut Context<Self>) {
        self.span.record("saga_name", r.name.as_str());
        self.holds = r.owner.as_deref() == Some(&*self.token.owner);
        if !self.holds {
            // Claimed under a token this instance has since lost: the claim expires.
            return self.release(ctx);
        }
        let (unfinished, active) = (!r.state.status.is_terminal(), r.state.status.is_active());
        let def = match r.definition {
            Ok(d) => d,
            Err(why) if active => return self.unloadable(r.name, why, ctx),
            Err(why) => {
                self.unusable = Some(why);
                return self.release(ctx);
            }
        };
        self.live = Some(Live {
            def,
            name: r.name,
            created_at: r.created_at,
            version: r.version,
            state: r.state,
        });
        if self.for_operator || !active {
            // Claimed for an operator action, which is queued right behind (a stuck saga, or
            // an active one idle until a distant retry): give it a moment before giving the
            // lease up again. (A saga claimed because it is due needs no such moment.)
            let linger = self.shared.evict_idle_after_ms.max(100);
            self.linger_until = now_ms() + linger;
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
        let (store, id, msg) = (self.shared.store.clone(), self.id.clone(), reason.clone());
        let fut = async move { store.mark_stuck(&id, &msg, now_ms()).await };
        ctx.wait(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(true) => act.report_unloadable(&name, &reason),
                Ok(false) => {}
                Err(e) => act.span.in_scope(
                    || tracing::error!(error = %e, "cannot record that the saga cannot be loaded"),
                ),
            }
            act.unusable = Some(reason);
            act.timer.do_send(Cancel { id: act.id.clone() });
            act.release(ctx);
        }));
    }

    /// Decides, persists, then executes. `operator` is the history row of an operator action,
    /// written in the same transaction (call rows come from the machine's `Record` commands).
    fn handle_event(
        &mut self,
        event: Event,
        operator: Option<LogRecord>,
        ctx: &mut Context<Self>,
        reply: Reply,
    ) {
        if !self.holds && self.live.is_some() {
            if let Some(r) = reply {
                let _ = r.send(Err(OpError::Released));
            }
            return;
        }
        let Some(live) = &self.live else {
            if let Some(r) = reply {
                let _ = r.send(Err(match &self.unusable {
                    Some(why) => OpError::Unloadable(why.clone()),
                    None => OpError::Unavailable,
                }));
            }
            return;
        };
        let now = now_ms();
        let input = Input {
            now_ms: now,
            jitter: rand::random_range(0.5..=1.0),
            // Once stopping, answers are still recorded but nothing new is sent.
            hold_calls: self.shared.is_stopping(),
        };
        let (new, cmds) = match live.state.decide(&live.def, input, &event) {
            Ok(x) => x,
            Err(rej) => {
                if let Some(r) = reply {
                    let _ = r.send(Err(rej.into()));
                }
                return;
            }
        };
        if new == live.state && operator.is_none() {
            // Nothing changed (an early or repeated tick): nothing to record.
            self.execute(cmds, ctx);
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        }
        let history: Vec<LogRecord> = operator
            .into_iter()
            .chain(cmds.iter().filter_map(|c| match c {
                Command::Record(record) => Some(LogRecord::Call {
                    step_name: live.def.steps[record.step].name.clone(),
                    record: record.clone(),
                }),
                _ => None,
            }))
            .collect();
        // The lease is given up with the write that leaves the saga idle (ended, or waiting on
        // a timer further away than `evict_idle_after_ms`): any instance finds it when it is due.
        let calls_after = self.calls
            + cmds
                .iter()
                .filter(|c| matches!(c, Command::Call { .. }))
                .count();
        let release = calls_after == 0
            && now >= self.linger_until
            && new
                .next_wake()
                .is_none_or(|at| at - now >= self.shared.evict_idle_after_ms);
        let (store, id, version) = (self.shared.store.clone(), self.id.clone(), live.version);
        let owner = self.token.owner.clone();
        let t = Instant::now();
        let fut = async move {
            let res = store
                .save(Transition {
                    id: &id,
                    owner: &owner,
                    version,
                    state: &new,
                    history: &history,
                    now,
                    release,
                })
                .await;
            (res, new)
        };
        // The write of an answer is work a stop waits for.
        let work = self.shared.work.token();
        ctx.wait(fut.into_actor(self).map(move |(res, new), act, ctx| {
            let _work = work;
            act.shared
                .metrics
                .store_write
                .with_label_values(&["transition"])
                .observe(t.elapsed().as_secs_f64());
            match res {
                Ok(v) => {
                    act.restarts = 0;
                    if release {
                        act.holds = false;
                        act.shared
                            .metrics
                            .leases
                            .with_label_values(&["released"])
                            .inc();
                    }
                    let Some(live) = act.live.as_mut() else {
                        return;
                    };
                    live.version = v;
                    let old = std::mem::replace(&mut live.state, new);
                    act.report(&old, &cmds);
                    act.execute(cmds, ctx);
                    if let Some(r) = reply {
                        let _ = r.send(Ok(()));
                    }
                }
                Err(e) => {
                    if let Some(r) = reply {
                        let _ = r.send(Err(OpError::Unavailable));
                    }
                    act.write_failed(e, ctx);
                }
            }
        }));
    }

    /// A transition could not be recorded: nothing of it happened. Stop; the log is the truth.
    fn write_failed(&mut self, e: StoreError, ctx: &mut Context<Self>) {
        if matches!(e, StoreError::Conflict(_)) {
            self.holds = false;
            // Another writer changed this saga, or another instance holds it now: step aside and let a wake load it afresh.
            self.span.in_scope(|| {
                tracing::warn!(
                    actor = "saga",
                    "saga changed by another writer; reloading it from the log"
                )
            });
            self.release(ctx);
        } else {
            self.span.in_scope(|| tracing::error!(actor = "saga", error = %e, "saga log write failed; restarting the actor to reload from the log"));
        }
        // The supervisor restarts a registered actor; a wake covers a released one.
        self.timer.do_send(Schedule {
            id: self.id.clone(),
            at_ms: now_ms() + 1_000,
        });
        ctx.stop();
    }

    fn execute(&mut self, cmds: Vec<Command>, ctx: &mut Context<Self>) {
        let mut wake = None;
        for c in cmds {
            match c {
                Command::Call {
                    step,
                    phase,
                    attempt,
                } => self.call(step, phase, attempt, ctx),
                Command::WakeAt(at) => wake = Some(at),
                Command::Finished(_) => self.shared.finished.notify(&self.id),
                Command::Alert { .. }
                | Command::Record(_)
                | Command::RetryScheduled { .. }
                | Command::UndoStarted { .. } => {}
            }
        }
        self.sync_wake(wake);
        self.sync_registration(ctx);
    }

    /// Keeps the saga's one timer entry equal to what the machine waits for.
    fn sync_wake(&mut self, wake: Option<i64>) {
        if self.shared.is_stopping() {
            // Held calls are due "now": scheduling them would spin until exit. The log keeps
            // the wake for the next start.
            return;
        }
        let ended = self
            .live
            .as_ref()
            .is_some_and(|l| l.state.next_wake().is_none());
        let id = self.id.clone();
        // A saga this instance gave up is found in the log when due, not kept in memory.
        let wake = wake.filter(|_| self.holds);
        match wake {
            Some(at) if self.last_wake != Some(at) => {
                self.timer.do_send(Schedule { id, at_ms: at })
            }
            // An ended saga may still have a wake from before this actor (start-up, a nudge).
            None if self.last_wake.is_some() || ended => self.timer.do_send(Cancel { id }),
            _ => {}
        }
        self.last_wake = wake;
    }

    fn endpoint(def: &SagaDefinition, step: usize, phase: Phase) -> Option<&Endpoint> {
        let s = &def.steps[step];
        match phase {
            Phase::Action | Phase::Try => Some(&s.forward),
            Phase::Compensation | Phase::Cancel => s.undo.as_ref(),
            Phase::Confirm => s.confirm.as_ref(),
        }
    }

    /// Sends one participant call and feeds its answer back as an event. Sent even when a stop
    /// began after the call was decided: it is recorded as sent, and calls in flight get the
    /// grace period (decisions made while stopping start no call).
    fn call(&mut self, step: usize, phase: Phase, attempt: u32, ctx: &mut Context<Self>) {
        let Some(live) = &self.live else { return };
        if Self::endpoint(&live.def, step, phase).is_none() {
            return;
        }
        let (shared, def, created_at) = (self.shared.clone(), live.def.clone(), live.created_at);
        let (id, name, token) = (self.id.clone(), live.name.clone(), self.token.clone());
        let work = shared.work.token();
        self.calls += 1;
        let sname = def.steps[step].name.clone();
        // One span per call: its lines carry saga_id, saga_name, step, phase and attempt.
        let span = tracing::info_span!(parent: &self.span, "participant_call", step = %sname, phase = phase.as_str(), attempt);
        let fut = async move {
            let s = &def.steps[step];
            let endpoint = Self::endpoint(&def, step, phase)?;
            tracing::debug!(url = %endpoint.url, "calling participant");
            let spec = CallSpec {
                saga_id: &id,
                step: &s.name,
                phase,
                attempt,
                endpoint,
                body: def.body_of(endpoint),
                created_at,
                timeout_ms: s.timeout_ms,
                instance: "",
            };
            // A call waiting for a slot stays small: its HTTP future exists once it has one.
            let slot = shared.participant.slot().await;
            // Only under a live lease: a renewal that is late is waited for (counted) rather
            // than a call sent that would soon be cut.
            let lease = &shared.lease;
            if lease
                .remaining(&token)
                .is_some_and(|left| left < lease.period())
            {
                let leases = &shared.metrics.leases;
                leases.with_label_values(&["renewal_awaited"]).inc();
            }
            if !lease.fresh(&token, lease.period()).await {
                tracing::warn!("lease lost before the call was sent; not sending it");
                return Some(Err(work));
            }
            let spec = CallSpec {
                instance: &token.owner,
                ..spec
            };
            let t = Instant::now();
            // With its whole timeout, and cut only if the lease ends under it: from then on
            // another instance may send this call again.
            let r = tokio::select! {
                r = Box::pin(shared.participant.call(slot, &spec)) => r,
                _ = lease.lost(&token) => {
                    shared.metrics.leases.with_label_values(&["call_cut"]).inc();
                    tracing::warn!("lease lost while the call was in flight; cut");
                    return Some(Err(work));
                }
            };
            report::call_answered(&shared.metrics, &name, &s.name, phase, &r, t.elapsed());
            Some(Ok((r, work)))
        }
        .instrument(span);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.calls -= 1;
            let (r, work) = match res {
                Some(Ok(x)) => x,
                Some(Err(_work)) => {
                    act.holds = false;
                    act.release(ctx);
                    return ctx.stop();
                }
                None => return,
            };
            let answer = Answer {
                step,
                phase,
                attempt,
                outcome: r.outcome,
                http_status: r.http_status,
                error: r.error,
            };
            act.handle_event(Event::CallFinished(answer), None, ctx, None);
            // Released only once the write of this answer holds its own token.
            drop(work);
        }));
    }
}

impl Actor for SagaActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
        self.shared.metrics.actors.inc();
        self.span
            .in_scope(|| tracing::debug!(actor = "saga", "saga actor started"));
        if self.live.is_some() {
            let cmds = std::mem::take(&mut self.initial);
            self.execute(cmds, ctx);
        } else if let Some(r) = self.record.take() {
            self.adopt(*r, ctx);
        } else if self.restarts > 0 {
            // Back off while the log keeps failing, rather than spin on restarts.
            let wait = 100u64.saturating_mul(1 << self.restarts.min(7));
            ctx.run_later(Duration::from_millis(wait), |act, ctx| act.load(ctx));
        } else {
            self.load(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.shared.metrics.actors.dec();
        self.live = None;
        self.span
            .in_scope(|| tracing::debug!(actor = "saga", "saga actor stopped"));
    }
}

impl Supervised for SagaActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.shared.metrics.actor_restarts.inc();
        self.restarts = self.restarts.saturating_add(1);
        self.span.in_scope(|| {
            tracing::warn!(
                actor = "saga",
                restarts = self.restarts,
                "saga actor restarting; state will be reloaded from the saga log"
            )
        });
        self.live = None;
        self.record = None;
        self.token = self.shared.lease.token();
        self.holds = false;
        self.initial.clear();
        self.last_wake = None;
        self.calls = 0;
    }
}

impl Handler<Tick> for SagaActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        if !self.holds {
            return;
        }
        self.last_wake = None;
        self.handle_event(Event::Tick, None, ctx, None);
    }
}

impl Handler<Operate> for SagaActor {
    type Result = ResponseFuture<Result<(), OpError>>;

    fn handle(&mut self, msg: Operate, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let (event, action) = (msg.op.event(), msg.op.as_str());
        self.span
            .in_scope(|| tracing::info!(operator = %msg.who, action, "operator action"));
        let record = LogRecord::Operator {
            action: action.into(),
            who: msg.who,
            at: now_ms(),
        };
        self.handle_event(event, Some(record), ctx, Some(tx));
        Box::pin(async move { rx.await.unwrap_or(Err(OpError::Unavailable)) })
    }
}

impl Handler<Disown> for SagaActor {
    type Result = ();

    fn handle(&mut self, msg: Disown, ctx: &mut Context<Self>) {
        if self.token.generation < msg.before {
            // Not `release`: the log's rows of the lost token are claimed afresh, by anyone.
            self.holds = false;
            self.released = true;
            ctx.stop();
        }
    }
}
