//! One actor per live saga: applies events to the state machine, makes each transition durable,
//! and only then executes its commands (participant calls, timers; the history is in the write).
//! Its files:
//! - [`run`]: the event loop: decide, write, then execute;
//! - [`call`]: one participant call, under the lease;
//! - [`residency`]: loading the saga, holding it, and giving it up when idle (with the pure
//!   rule of when it is idle);
//! - [`report`]: the metrics, log lines and alerts a transition produces.
//!
//! On any failure to write the log the actor stops; its Supervisor restarts it and
//! [`actix::Supervised::restarting`] drops the in-memory state, so it reloads from the log and
//! resumes (a call whose answer was not recorded is sent again, same Idempotency-Key).

mod call;
mod report;
mod residency;
mod run;

use super::lease::Token;
use super::messages::{Adopt, Cancel, Disown, OpError, Operate, Release, Schedule, Tick};
use super::Shared;
use crate::domain::definition::Endpoint;
use crate::domain::{Command, Event, Phase, Rejected, RetryPolicy, SagaDefinition, SagaState};
use crate::store::{LogRecord, OperatorDetail, SagaRecord};
use actix::prelude::*;
use residency::Residency;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// What a saga actor is wired to: what every actor shares, the registry (to be forgotten when
/// idle, or kept) and the timer.
#[derive(Clone)]
pub struct Links {
    /// The log, the participant client, metrics, the lease, the clock.
    pub shared: Arc<Shared>,
    /// Tells the registry to forget this actor.
    pub release: Recipient<Release<SagaActor>>,
    /// Tells the registry to keep this actor after all.
    pub adopt: Recipient<Adopt<SagaActor>>,
    /// Sets the saga's wake.
    pub schedule: Recipient<Schedule>,
    /// Removes the saga's wake.
    pub cancel: Recipient<Cancel>,
}

/// The loaded saga.
struct Live {
    def: Arc<SagaDefinition>,
    name: String,
    created_at: i64,
    version: i64,
    state: SagaState,
}

impl Live {
    /// The saga of `r`, running with `def`.
    fn of(r: SagaRecord, def: Arc<SagaDefinition>) -> Box<Live> {
        Box::new(Live {
            def,
            name: r.name,
            created_at: r.created_at,
            version: r.version,
            state: r.state,
        })
    }
}

/// What the actor was started with, taken when it runs.
enum Start {
    /// Just recorded by the registry: run these commands of its first transition.
    Fresh(Vec<Command>),
    /// Read from the log by the registry; `for_operator`: claimed for an operator action,
    /// which follows.
    Loaded(Box<SagaRecord>, bool),
    /// Load it from the log.
    FromLog,
}

/// How a restarted actor waits before reloading while the log keeps failing.
const RESTART_BACKOFF: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    initial_backoff_ms: 200,
    max_backoff_ms: 12_800,
    multiplier: 2.0,
};

/// Runs one saga.
pub struct SagaActor {
    id: String,
    links: Links,
    /// Where it stands with its saga: loading, driving, let go, or unusable.
    residency: Residency,
    /// The registry has this actor in its map (it was not told to forget it).
    registered: bool,
    /// What it was started with, until it runs.
    start: Option<Start>,
    /// The wake this actor last gave the timer.
    last_wake: Option<i64>,
    /// Participant calls this actor has in flight.
    calls: usize,
    /// Idle or not, the lease is kept until then (ms since epoch): a saga claimed for an
    /// operator action must still hold it when that action arrives.
    linger_until: i64,
    /// Supervised restarts since the last successful log write (sets the reload backoff).
    restarts: u32,
    /// The saga's span: every line logged about the saga is inside it (saga_id, saga_name,
    /// and trace_id once the saga is loaded).
    span: tracing::Span,
    /// The saga's phase and its span (report.rs, `sync_phase`), while it is in one.
    phase: Option<(&'static str, tracing::Span)>,
    /// An operator's edit on its way to the log: the definition the saga runs with once the
    /// transition that carries it is written.
    editing: Option<Arc<SagaDefinition>>,
    /// The lease token this actor writes and calls under.
    token: Token,
}

type Reply = Option<oneshot::Sender<Result<(), OpError>>>;

impl SagaActor {
    fn with(id: String, name: &str, start: Start, links: Links) -> Self {
        let span = tracing::info_span!(
            "saga",
            saga_id = %id,
            saga_name = %name,
            trace_id = tracing::field::Empty
        );
        SagaActor {
            token: links.shared.lease.token(),
            id,
            links,
            residency: Residency::Loading,
            registered: true,
            start: Some(start),
            last_wake: None,
            calls: 0,
            linger_until: 0,
            restarts: 0,
            span,
            phase: None,
            editing: None,
        }
    }

    /// An actor for a saga just recorded by the registry (held under `token`), with its first
    /// commands.
    pub fn fresh(
        r: SagaRecord,
        def: Arc<SagaDefinition>,
        initial: Vec<Command>,
        token: Token,
        links: Links,
    ) -> Self {
        let mut a = Self::with(r.id.clone(), &r.name, Start::Fresh(initial), links);
        a.drive(r, def);
        a.token = token;
        a
    }

    /// An actor for a saga the registry read from the log; it resumes it. `for_operator`: it
    /// was claimed for an operator action, which follows.
    pub fn loaded(r: SagaRecord, for_operator: bool, links: Links) -> Self {
        Self::with(
            r.id.clone(),
            "",
            Start::Loaded(Box::new(r), for_operator),
            links,
        )
    }

    /// An actor that loads its saga from the log and resumes it.
    pub fn from_log(id: String, links: Links) -> Self {
        Self::with(id, "", Start::FromLog, links)
    }

    fn shared(&self) -> &Shared {
        &self.links.shared
    }

    fn now_ms(&self) -> i64 {
        self.links.shared.clock.now_ms()
    }

    /// The loaded saga, while this actor drives it.
    fn live(&self) -> Option<&Live> {
        match &self.residency {
            Residency::Driving(l) => Some(l),
            _ => None,
        }
    }
}

impl Actor for SagaActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(256);
        self.shared().metrics.actors.inc();
        self.span
            .in_scope(|| tracing::debug!(actor = "saga", "saga actor started"));
        match self.start.take() {
            Some(Start::Fresh(cmds)) => self.execute(cmds, ctx),
            Some(Start::Loaded(r, for_operator)) => self.adopt(*r, for_operator, ctx),
            Some(Start::FromLog) => self.load(ctx),
            None => {
                // Restarted by the supervisor: back off while the log keeps failing, rather
                // than spin on restarts.
                let wait = RESTART_BACKOFF.backoff_ms(self.restarts);
                ctx.run_later(Duration::from_millis(wait), |act, ctx| {
                    if act.registered {
                        act.load(ctx)
                    } else {
                        // Released before it stopped (a conflict, a lost lease): the wake it
                        // scheduled loads the saga through the registry. Loading it here as
                        // well would give the saga two drivers in this process, each sending
                        // the same call.
                        ctx.stop()
                    }
                });
            }
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.shared().metrics.actors.dec();
        self.span
            .in_scope(|| tracing::debug!(actor = "saga", "saga actor stopped"));
    }
}

impl Supervised for SagaActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.shared().metrics.actor_restarts.inc();
        self.restarts = self.restarts.saturating_add(1);
        self.span.in_scope(|| {
            tracing::warn!(
                actor = "saga",
                restarts = self.restarts,
                "saga actor restarting; state will be reloaded from the saga log"
            )
        });
        self.residency = Residency::Loading;
        self.start = None;
        self.token = self.shared().lease.token();
        self.last_wake = None;
        self.calls = 0;
        self.phase = None;
        self.editing = None;
    }
}

impl Handler<Tick> for SagaActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        if self.live().is_none() {
            return;
        }
        self.last_wake = None;
        self.handle_event(crate::domain::Event::Tick, None, ctx, None);
    }
}

impl Handler<Operate> for SagaActor {
    type Result = ResponseFuture<Result<(), OpError>>;

    fn handle(&mut self, msg: Operate, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let event = match self.live() {
            Some(l) => msg.op.event(&l.def),
            None => msg.op.op.event(),
        };
        let mut detail = OperatorDetail {
            reason: msg.op.reason.clone(),
            step: msg.op.step.clone(),
            ..OperatorDetail::default()
        };
        if let (Event::Edit(i), Some(live)) = (&event, self.live()) {
            // The new definition goes with the transition; the audit keeps both endpoints.
            let fields = msg.op.edit.clone().unwrap_or_default();
            let mut body = fields.clone();
            if let Some(o) = body.as_object_mut() {
                o.insert(
                    "reason".into(),
                    msg.op.reason.clone().unwrap_or_default().into(),
                );
            }
            match crate::domain::parse_step_edit(&body, &live.def, *i) {
                Ok(edit) => {
                    let s = &self.shared().secrets;
                    let view = |pick: fn(&(Phase, Endpoint, Endpoint)) -> &Endpoint| {
                        let m: serde_json::Map<String, serde_json::Value> = edit
                            .changed
                            .iter()
                            .map(|c| (c.0.as_str().to_string(), s.endpoint_view(pick(c))))
                            .collect();
                        serde_json::Value::Object(m)
                    };
                    detail.old = Some(view(|c| &c.1));
                    detail.new = Some(view(|c| &c.2));
                    self.editing = Some(std::sync::Arc::new(edit.def));
                }
                Err(_) => {
                    let _ = tx.send(Err(OpError::Rejected(Rejected::EditDoesNotApply)));
                    return Box::pin(async move { rx.await.unwrap_or(Err(OpError::Unavailable)) });
                }
            }
        }
        let record = LogRecord::Operator {
            action: msg.op.op,
            who: msg.who,
            at: self.now_ms(),
            detail,
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
            self.residency = Residency::LetGo;
            self.registered = false;
            ctx.stop();
        }
    }
}
