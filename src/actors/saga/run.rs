//! The event loop of a saga actor: an event is decided by the state machine, the transition is
//! written (with the history it explains, and the lease given up if it leaves the saga idle),
//! and only then are its commands executed: calls sent, the timer set, waiting requests woken.

use super::residency::Residency;
use super::{Reply, SagaActor};
use crate::actors::messages::{Cancel, OpError, Schedule};
use crate::actors::RETRY_MS;
use crate::domain::{Command, Event, Input};
use crate::store::{LogRecord, StoreError, Transition};
use actix::prelude::*;
use tokio::time::Instant;

impl SagaActor {
    /// Decides, persists, then executes. `operator` is the history row of an operator action,
    /// written in the same transaction (call rows come from the machine's `Record` commands).
    pub(super) fn handle_event(
        &mut self,
        event: Event,
        operator: Option<LogRecord>,
        ctx: &mut Context<Self>,
        reply: Reply,
    ) {
        let answer = |reply: Reply, res: Result<(), OpError>| {
            if let Some(r) = reply {
                let _ = r.send(res);
            }
        };
        let live = match &self.residency {
            Residency::Driving(live) => live,
            Residency::LetGo => return answer(reply, Err(OpError::Released)),
            Residency::Unusable(why) => {
                return answer(reply, Err(OpError::Unloadable(why.clone())))
            }
            Residency::Loading => return answer(reply, Err(OpError::Unavailable)),
        };
        let now = self.now_ms();
        let input = Input {
            now_ms: now,
            jitter: rand::random_range(0.5..=1.0),
            // Once stopping, answers are still recorded but nothing new is sent.
            hold_calls: self.shared().is_stopping(),
        };
        // An operator's edit: its definition is written with this transition.
        let edited = self.editing.take();
        let (new, cmds) = match live.state.decide(&live.def, input, &event) {
            Ok(x) => x,
            Err(rej) => return answer(reply, Err(rej.into())),
        };
        if new == live.state && operator.is_none() {
            // Nothing changed (an early or repeated tick): nothing to record.
            self.execute(cmds, ctx);
            return answer(reply, Ok(()));
        }
        // Said once it is recorded, in the phase it led to.
        let op = match &operator {
            Some(LogRecord::Operator {
                action,
                who,
                detail,
                ..
            }) => Some((action.as_str(), who.clone(), detail.clone())),
            _ => None,
        };
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
        let sends = cmds
            .iter()
            .filter(|c| matches!(c, Command::Call { .. }))
            .count();
        let release = self.idle_after(self.calls + sends, &new);
        let purge_at = live.def.retention.purge_at(new.status, now);
        let rare = crate::store::Rare::between(&live.state, &new);
        let definition = edited.clone();
        let (store, id, version) = (self.shared().store.clone(), self.id.clone(), live.version);
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
                    purge_at,
                    definition: definition.as_deref(),
                    rare,
                })
                .await;
            (res, new)
        };
        // The write of an answer is work a stop waits for.
        let work = self.shared().work.token();
        ctx.wait(fut.into_actor(self).map(move |(res, new), act, ctx| {
            let _work = work;
            let metrics = &act.links.shared.metrics;
            metrics.write_transition.observe(t.elapsed().as_secs_f64());
            let v = match res {
                Ok(v) => v,
                Err(e) => {
                    answer(reply, Err(OpError::Unavailable));
                    return act.write_failed(e, ctx);
                }
            };
            act.restarts = 0;
            let Residency::Driving(live) = &mut act.residency else {
                return;
            };
            live.version = v;
            if let Some(def) = edited {
                live.def = def;
            }
            let old = std::mem::replace(&mut live.state, new);
            act.sync_phase();
            if let Some((action, who, d)) = op {
                let m = &act.links.shared.metrics;
                m.operator_actions.with_label_values(&[action]).inc();
                let (reason, step) = (d.reason.as_deref(), d.step.as_deref());
                act.progress_span().in_scope(
                    || tracing::info!(operator = %who, action, reason, step, "operator action"),
                );
            }
            act.report(&old, &cmds);
            if release {
                act.residency = Residency::LetGo;
                act.links.shared.metrics.lease.released.inc();
            }
            act.execute(cmds, ctx);
            answer(reply, Ok(()));
        }));
    }

    /// A transition could not be recorded: nothing of it happened. Stop; the log is the truth.
    fn write_failed(&mut self, e: StoreError, ctx: &mut Context<Self>) {
        if matches!(e, StoreError::Conflict(_)) {
            // Another writer changed this saga, or another instance holds it now: step aside
            // and let a wake load it afresh.
            self.residency = Residency::LetGo;
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
        self.links.schedule.do_send(Schedule {
            id: self.id.clone(),
            at_ms: self.now_ms() + RETRY_MS,
        });
        ctx.stop();
    }

    /// Runs the commands of a durable transition.
    pub(super) fn execute(&mut self, cmds: Vec<Command>, ctx: &mut Context<Self>) {
        self.sync_phase();
        let mut wake = None;
        for c in cmds {
            match c {
                Command::Call {
                    step,
                    phase,
                    attempt,
                } => self.call(step, phase, attempt, ctx),
                Command::WakeAt(at) => wake = Some(at),
                Command::Finished(_) => self.shared().finished.notify(&self.id),
                Command::Alert { .. }
                | Command::Record(_)
                | Command::RetryScheduled { .. }
                | Command::DelayScheduled { .. }
                | Command::UndoStarted { .. } => {}
            }
        }
        self.sync_wake(wake);
        self.sync_registration(ctx);
    }

    /// Keeps the saga's one timer entry equal to what the machine waits for.
    fn sync_wake(&mut self, wake: Option<i64>) {
        if self.shared().is_stopping() {
            // Held calls are due "now": scheduling them would spin until exit. The log keeps
            // the wake for the next start.
            return;
        }
        // A saga this instance let go is found in the log when due, not kept in the timer; one
        // that ended or is stuck may still have a wake from before this actor (a nudge).
        let (holding, settled) = match self.live() {
            Some(l) => (true, !l.state.status.is_active()),
            None => (false, true),
        };
        let wake = wake.filter(|_| holding);
        let id = self.id.clone();
        match wake {
            Some(at) if self.last_wake != Some(at) => {
                self.links.schedule.do_send(Schedule { id, at_ms: at })
            }
            None if self.last_wake.is_some() || settled => self.links.cancel.do_send(Cancel { id }),
            _ => {}
        }
        self.last_wake = wake;
    }
}
