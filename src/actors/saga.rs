//! One actor per live saga: applies events to the state machine, makes each transition durable,
//! and only then executes its commands (participant calls, timers, alerts).
//!
//! On any failure to write the log the actor stops; its Supervisor restarts it and
//! [`actix::Supervised::restarting`] drops the in-memory state, so it reloads from the log and
//! resumes (a call whose answer was not recorded is sent again, same Idempotency-Key).

use super::registry::{started_calls, Adopt, Op, OpError, Registry, Release};
use super::timer::{Cancel, Schedule, Timer};
use super::{now_ms, Shared};
use crate::domain::machine::ACTIVE_STATUSES;
use crate::domain::{
    CallOutcome, Command, Endpoint, Event, Input, Phase, SagaDefinition, SagaState, SagaStatus,
};
use crate::participant::CallSpec;
use crate::store::{LogRecord, SagaRecord, StoreError};
use actix::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::Instrument;

/// Something may be due: re-evaluate the saga.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

/// An operator action, answered once its transition is durable.
#[derive(Message)]
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

/// Counts work that shutdown waits for — a participant call, then the log write of its answer —
/// for as long as it lives (also when dropped by a restart).
struct Busy(Arc<Shared>);

impl Busy {
    fn new(shared: Arc<Shared>) -> Self {
        shared.busy.fetch_add(1, Ordering::SeqCst);
        Busy(shared)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
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
    last_wake: Option<i64>,
    /// Participant calls this actor has in flight.
    calls: usize,
    /// The registry was told to forget this actor.
    released: bool,
    /// Supervised restarts since the last successful log write (sets the reload backoff).
    restarts: u32,
    /// Why the saga cannot be loaded, when it cannot (operator actions answer with it).
    unusable: Option<String>,
    /// The saga's span: every line logged about the saga is inside it (saga_id, saga_name).
    span: tracing::Span,
}

type Reply = Option<oneshot::Sender<Result<(), OpError>>>;

impl SagaActor {
    /// An actor for a saga just recorded by the registry, with its first commands.
    pub fn fresh(
        r: SagaRecord,
        def: Arc<SagaDefinition>,
        initial: Vec<Command>,
        shared: Arc<Shared>,
        registry: Addr<Registry>,
        timer: Addr<Timer>,
    ) -> Self {
        let span = tracing::info_span!("saga", saga_id = %r.id, saga_name = %r.name);
        let live = Live {
            def,
            name: r.name,
            created_at: r.created_at,
            version: r.version,
            state: r.state,
        };
        SagaActor {
            id: r.id,
            shared,
            registry,
            timer,
            live: Some(live),
            initial,
            last_wake: None,
            calls: 0,
            released: false,
            restarts: 0,
            unusable: None,
            span,
        }
    }

    /// An actor that loads its saga from the log and resumes it.
    pub fn from_log(
        id: String,
        shared: Arc<Shared>,
        registry: Addr<Registry>,
        timer: Addr<Timer>,
    ) -> Self {
        let span = tracing::info_span!("saga", saga_id = %id, saga_name = tracing::field::Empty);
        SagaActor {
            id,
            shared,
            registry,
            timer,
            live: None,
            initial: vec![],
            last_wake: None,
            calls: 0,
            released: false,
            restarts: 0,
            unusable: None,
            span,
        }
    }

    /// Tells the registry to forget this actor, whatever its state.
    fn release(&mut self, ctx: &mut Context<Self>) {
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
        let st = live.state.status;
        let idle = self.calls == 0
            && (st.is_terminal()
                || st == SagaStatus::Stuck
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

    fn load(&mut self, ctx: &mut Context<Self>) {
        let store = self.shared.store.clone();
        let id = self.id.clone();
        let fut = async move { store.load(&id).await };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok(Some(r)) => {
                act.span.record("saga_name", r.name.as_str());
                let active = ACTIVE_STATUSES.contains(&r.state.status);
                let def = match r.definition {
                    Ok(d) => d,
                    Err(why) => {
                        if active {
                            act.unloadable(r.name, why, ctx);
                        } else {
                            act.unusable = Some(why);
                            act.release(ctx);
                        }
                        return;
                    }
                };
                act.live = Some(Live {
                    def,
                    name: r.name,
                    created_at: r.created_at,
                    version: r.version,
                    state: r.state,
                });
                if active {
                    act.handle_event(Event::Resume, None, ctx, None);
                } else {
                    // Terminal or stuck: nothing to do unless an operator message is queued.
                    act.sync_registration(ctx);
                }
            }
            Ok(None) => act.release(ctx),
            Err(e) => {
                act.span.in_scope(
                    || tracing::error!(error = %e, "cannot load saga; trying again in 1 s"),
                );
                ctx.run_later(Duration::from_secs(1), |act, ctx| act.load(ctx));
            }
        }));
    }

    /// A saga whose definition cannot be read back cannot run: it becomes `stuck` with an alert
    /// rather than sit silently unfinished.
    fn unloadable(&mut self, name: String, why: String, ctx: &mut Context<Self>) {
        let reason = format!("the saga cannot be loaded: {why}");
        let (store, id) = (self.shared.store.clone(), self.id.clone());
        let msg = reason.clone();
        let fut = async move { store.mark_stuck(&id, &msg, now_ms()).await };
        ctx.wait(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(true) => {
                    act.shared.metrics.stuck_total.with_label_values(&[&name, ""]).inc();
                    act.shared.alerter.raise(serde_json::json!({
                        "alert": "saga_stuck",
                        "saga_id": act.id,
                        "saga_name": name,
                        "step": null,
                        "phase": null,
                        "error": reason,
                        "at": crate::api::resource::rfc3339(now_ms()),
                        "retry": format!("/v1/sagas/{}/retry", act.id),
                    }));
                    act.span.in_scope(|| tracing::error!(alert = true, error = %reason, "saga stuck: it cannot be loaded"));
                }
                Ok(false) => {}
                Err(e) => act.span.in_scope(|| tracing::error!(error = %e, "cannot record that the saga cannot be loaded")),
            }
            act.unusable = Some(reason);
            act.timer.do_send(Cancel { id: act.id.clone() });
            act.release(ctx);
        }));
    }

    /// Decides, persists, then executes. `record` is the history row of the event itself (a call
    /// answer or an operator action), written in the same transaction.
    fn handle_event(
        &mut self,
        event: Event,
        record: Option<LogRecord>,
        ctx: &mut Context<Self>,
        reply: Reply,
    ) {
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
        if new == live.state && record.is_none() {
            // Nothing changed (an early or repeated tick): nothing to record.
            self.execute(cmds, ctx);
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return;
        }
        let mut calls: Vec<LogRecord> = record.into_iter().collect();
        if event == Event::Resume {
            for (i, s) in live
                .state
                .steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.in_flight)
            {
                calls.push(LogRecord::Finished {
                    step: i,
                    phase: s.phase,
                    attempt: s.calls(s.phase),
                    at: now,
                    http_status: None,
                    outcome: CallOutcome::Unknown,
                    error: Some("the orchestrator restarted before the answer was recorded".into()),
                });
            }
        }
        calls.extend(started_calls(&live.def, &cmds, now));
        let old = live.state.clone();
        let (store, id, version) = (self.shared.store.clone(), self.id.clone(), live.version);
        let t = Instant::now();
        let saved = new.clone();
        let fut = async move {
            store
                .save(&id, version, &old, &saved, &calls, now)
                .await
                .map(|v| (v, old))
        };
        let busy = Busy::new(self.shared.clone());
        ctx.wait(fut.into_actor(self).map(move |res, act, ctx| {
            let _busy = busy;
            act.shared.metrics.store_write.with_label_values(&["transition"]).observe(t.elapsed().as_secs_f64());
            match res {
                Ok((v, old)) => {
                    act.restarts = 0;
                    if let Some(live) = act.live.as_mut() {
                        live.version = v;
                        live.state = new;
                    }
                    act.observe(&old, &event, &cmds);
                    act.execute(cmds, ctx);
                    if let Some(r) = reply {
                        let _ = r.send(Ok(()));
                    }
                }
                Err(e) => {
                    if let Some(r) = reply {
                        let _ = r.send(Err(OpError::Unavailable));
                    }
                    if matches!(e, StoreError::Conflict(_)) {
                        // Another actor wrote this saga: the log is the truth. Step aside and
                        // let a wake load it afresh.
                        act.span.in_scope(|| tracing::warn!(actor = "saga", "saga changed by another writer; reloading it from the log"));
                        act.release(ctx);
                    } else {
                        act.span.in_scope(|| tracing::error!(actor = "saga", error = %e, "saga log write failed; restarting the actor to reload from the log"));
                    }
                    // The supervisor restarts a registered actor; a wake covers a released one.
                    act.timer.do_send(Schedule { id: act.id.clone(), at_ms: now_ms() + 1_000 });
                    ctx.stop();
                }
            }
        }));
    }

    /// Metrics and logs of a durable transition.
    fn observe(&mut self, old: &SagaState, event: &Event, cmds: &[Command]) {
        let Some(live) = &self.live else { return };
        let m = &self.shared.metrics;
        let name = live.name.clone();
        let new = &live.state;
        if let Event::CallFinished {
            step,
            phase,
            outcome,
            ..
        } = event
        {
            let sname = &live.def.steps[*step].name;
            if *outcome == CallOutcome::Unknown && new.steps[*step].next_attempt_at.is_some() {
                m.retries
                    .with_label_values(&[&name, sname, phase.as_str()])
                    .inc();
            }
            // The undo may finish in the same transition (nothing to compensate), hence the set.
            if old.status == SagaStatus::Running
                && matches!(
                    new.status,
                    SagaStatus::Compensating | SagaStatus::Compensated | SagaStatus::Stuck
                )
                && phase.is_forward()
            {
                m.failed.with_label_values(&[&name, sname]).inc();
                self.span.in_scope(|| tracing::warn!(step = %sname, error = new.error.as_deref().unwrap_or(""), "step failed; compensating"));
            }
        }
        if old.status == SagaStatus::Stuck && new.status != SagaStatus::Stuck {
            self.span
                .in_scope(|| tracing::info!("stuck saga resumed by operator"));
        }
        if old.status != new.status {
            self.span.in_scope(|| {
                tracing::info!(
                    from = old.status.as_str(),
                    to = new.status.as_str(),
                    "saga status changed"
                )
            });
        }
        for c in cmds {
            match c {
                Command::Alert { step, phase, error } => {
                    let sname = &live.def.steps[*step].name;
                    m.stuck_total.with_label_values(&[&name, sname]).inc();
                    self.shared.alerter.raise(serde_json::json!({
                        "alert": "saga_stuck",
                        "saga_id": self.id,
                        "saga_name": name,
                        "step": sname,
                        "phase": phase.as_str(),
                        "error": error,
                        "at": crate::api::resource::rfc3339(now_ms()),
                        "retry": format!("/v1/sagas/{}/retry", self.id),
                    }));
                    self.span.in_scope(|| tracing::error!(step = %sname, phase = phase.as_str(), error = %error, alert = true, "saga stuck: a call that must succeed gave up; resume with POST /v1/sagas/{}/retry", self.id));
                }
                Command::Finished(status) => {
                    m.finished
                        .with_label_values(&[&name, status.as_str()])
                        .inc();
                    let secs = (now_ms() - live.created_at).max(0) as f64 / 1000.0;
                    m.saga_duration
                        .with_label_values(&[&name, status.as_str()])
                        .observe(secs);
                    self.span.in_scope(|| {
                        tracing::info!(status = status.as_str(), duration_s = secs, "saga finished")
                    });
                }
                _ => {}
            }
        }
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
                Command::Finished(status) => {
                    let _ = self.shared.finished.send((self.id.clone(), status));
                }
                Command::Alert { .. } => {}
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
            .is_some_and(|l| !ACTIVE_STATUSES.contains(&l.state.status));
        match wake {
            Some(at) if self.last_wake != Some(at) => self.timer.do_send(Schedule {
                id: self.id.clone(),
                at_ms: at,
            }),
            // An ended saga may still have a wake from before this actor (start-up, a nudge).
            None if self.last_wake.is_some() || ended => self.timer.do_send(Cancel {
                id: self.id.clone(),
            }),
            _ => {}
        }
        self.last_wake = wake;
    }

    fn endpoint(def: &SagaDefinition, step: usize, phase: Phase) -> Option<Endpoint> {
        let s = &def.steps[step];
        match phase {
            Phase::Action | Phase::Try => Some(s.forward.clone()),
            Phase::Compensation | Phase::Cancel => s.undo.clone(),
            Phase::Confirm => s.confirm.clone(),
        }
    }

    fn call(&mut self, step: usize, phase: Phase, attempt: u32, ctx: &mut Context<Self>) {
        let Some(live) = &self.live else { return };
        // Sent even when a stop began after it was decided: it is recorded as sent, and calls
        // in flight get the grace period. Decisions made after the stop start no call.
        let Some(endpoint) = Self::endpoint(&live.def, step, phase) else {
            return;
        };
        let (def, created_at) = (live.def.clone(), live.created_at);
        let shared = self.shared.clone();
        let guard = Busy::new(shared.clone());
        self.calls += 1;
        let (id, sname, timeout_ms, name) = (
            self.id.clone(),
            live.def.steps[step].name.clone(),
            live.def.steps[step].timeout_ms,
            live.name.clone(),
        );
        // One span per call: its lines carry saga_id, saga_name, step, phase and attempt.
        let span = tracing::info_span!(parent: &self.span, "participant_call", step = %sname, phase = phase.as_str(), attempt);
        let fut = async move {
            tracing::debug!(url = %endpoint.url, "calling participant");
            let spec = CallSpec {
                saga_id: &id,
                step: &sname,
                phase,
                attempt,
                endpoint: &endpoint,
                body: def.body_of(&endpoint),
                created_at,
                timeout_ms,
            };
            let t = Instant::now();
            let r = shared.participant.call(&spec).await;
            let secs = t.elapsed().as_secs_f64();
            shared
                .metrics
                .step_call_duration
                .with_label_values(&[&name, &sname, phase.as_str()])
                .observe(secs);
            shared
                .metrics
                .step_calls
                .with_label_values(&[&name, &sname, phase.as_str(), r.outcome.as_str()])
                .inc();
            tracing::info!(
                outcome = r.outcome.as_str(),
                http_status = r.http_status,
                error = r.error.as_deref().unwrap_or(""),
                duration_ms = (secs * 1000.0) as u64,
                "participant answered"
            );
            (r, guard)
        }
        .instrument(span);
        ctx.spawn(fut.into_actor(self).map(move |(r, guard), act, ctx| {
            act.calls -= 1;
            let rec = LogRecord::Finished {
                step,
                phase,
                attempt,
                at: now_ms(),
                http_status: r.http_status,
                outcome: r.outcome,
                error: r.error.clone(),
            };
            let ev = Event::CallFinished {
                step,
                phase,
                attempt,
                outcome: r.outcome,
                error: r.error,
            };
            act.handle_event(ev, Some(rec), ctx, None);
            // Released only once the write of this answer holds its own guard.
            drop(guard);
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
        self.initial.clear();
        self.last_wake = None;
        self.calls = 0;
    }
}

impl Handler<Tick> for SagaActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.last_wake = None;
        self.handle_event(Event::Tick, None, ctx, None);
    }
}

impl Handler<Operate> for SagaActor {
    type Result = ResponseFuture<Result<(), OpError>>;

    fn handle(&mut self, msg: Operate, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let event = match msg.op {
            Op::Abort => Event::Abort,
            Op::Retry => Event::Retry,
        };
        self.span
            .in_scope(|| tracing::info!(operator = %msg.who, action = ?msg.op, "operator action"));
        let record = LogRecord::Operator {
            action: match msg.op {
                Op::Abort => "abort".into(),
                Op::Retry => "retry".into(),
            },
            who: msg.who.clone(),
            at: now_ms(),
        };
        self.handle_event(event, Some(record), ctx, Some(tx));
        Box::pin(async move { rx.await.unwrap_or(Err(OpError::Unavailable)) })
    }
}
