//! What a durable transition tells the outside world: metrics, log lines, alerts and the
//! saga's phase span (docs/tracing.md), read from the machine's commands and status (the shell
//! never re-derives what the machine decided).

use super::SagaActor;
use crate::api::resource::rfc3339;
use crate::domain::{Command, Phase, SagaState, SagaStatus, TraceContext};
use crate::metrics::Metrics;
use crate::participant::CallResult;
use std::time::Duration;

impl SagaActor {
    /// Keeps the phase span equal to the saga's phase: a new phase ends the last span and opens
    /// the next, exported as the child of the span that started the saga. Lines about the
    /// saga's progress go into it; its calls are its children.
    pub(super) fn sync_phase(&mut self) {
        let (name, trace) = match self.live() {
            Some(l) => (
                l.state.status.trace_phase(l.def.mode),
                Some(TraceContext::of_saga(l.def.trace.as_ref(), &self.id)),
            ),
            None => (None, None),
        };
        if self.phase.as_ref().map(|p| p.0) == name {
            return;
        }
        self.phase = name.zip(trace).map(|(n, trace)| {
            use tracing::field::Empty;
            let span = tracing::info_span!(parent: &self.span, "saga_phase", phase = n,
                "otel.name" = Empty, "saga.id" = Empty, span_id = Empty);
            if crate::telemetry::exporting() {
                span.record("otel.name", format!("saga {n}").as_str());
                span.record("saga.id", self.id.as_str());
                crate::telemetry::set_parent(&span, &trace);
                // Its lines name it, as a call's lines name the call's span.
                if let Some(ids) = crate::telemetry::ids(&span) {
                    span.record("span_id", ids.span_id.as_str());
                }
            }
            (n, span)
        });
    }

    /// Where a line about the saga's progress goes: its phase's span, else the saga's.
    pub(super) fn progress_span(&self) -> &tracing::Span {
        self.phase.as_ref().map_or(&self.span, |p| &p.1)
    }

    /// Reports a transition from `old` to the current state with its commands.
    pub(super) fn report(&self, old: &SagaState, cmds: &[Command]) {
        let Some(live) = self.live() else { return };
        let (m, name, new) = (&self.shared().metrics, live.name.as_str(), &live.state);
        let step_name = |i: usize| live.def.steps[i].name.as_str();
        let now = self.now_ms();
        for c in cmds {
            match c {
                Command::RetryScheduled { step, phase, at } => {
                    m.retries
                        .with_label_values(&[name, step_name(*step), phase.as_str()])
                        .inc();
                    self.progress_span().in_scope(|| {
                        tracing::info!(
                            step = step_name(*step),
                            call_phase = phase.as_str(),
                            due_at = %rfc3339(*at),
                            backoff_ms = (at - now).max(0),
                            "retry scheduled"
                        )
                    });
                }
                Command::DelayScheduled { step, phase, at } => {
                    let delay_ms = live.def.steps[*step]
                        .endpoint(*phase)
                        .map_or(0, |e| e.delay_ms);
                    self.progress_span().in_scope(|| {
                        tracing::info!(
                            step = step_name(*step),
                            call_phase = phase.as_str(),
                            due_at = %rfc3339(*at),
                            delay_ms,
                            "delayed"
                        )
                    });
                }
                Command::UndoStarted {
                    step: Some(i),
                    reason,
                } => {
                    m.failed.with_label_values(&[name, step_name(*i)]).inc();
                    self.progress_span().in_scope(|| tracing::warn!(step = step_name(*i), error = %reason, "step failed; compensating"));
                }
                Command::UndoStarted { step: None, reason } => self.progress_span().in_scope(
                    || tracing::info!(reason = %reason, "saga stops going forward; compensating"),
                ),
                Command::Alert { step, phase, error } => {
                    self.alert(name, Some((step_name(*step), *phase)), error)
                }
                Command::Finished(status) => {
                    m.finished.with_label_values(&[name, status.as_str()]).inc();
                    let secs = (self.now_ms() - live.created_at).max(0) as f64 / 1000.0;
                    m.saga_duration
                        .with_label_values(&[name, status.as_str()])
                        .observe(secs);
                    self.span.in_scope(|| {
                        tracing::info!(status = status.as_str(), duration_s = secs, "saga finished")
                    });
                }
                Command::Call { .. } | Command::WakeAt(_) | Command::Record(_) => {}
            }
        }
        if old.status == SagaStatus::Stuck && new.status != SagaStatus::Stuck {
            self.span
                .in_scope(|| tracing::info!("stuck saga resumed by operator"));
        }
        if old.status != new.status {
            self.progress_span().in_scope(|| {
                tracing::info!(
                    from = old.status.as_str(),
                    to = new.status.as_str(),
                    "saga status changed"
                )
            });
        }
    }

    /// Reports a saga that became stuck because it cannot be loaded.
    pub(super) fn report_unloadable(&self, name: &str, reason: &str) {
        self.alert(name, None, reason);
    }

    /// A stuck saga: the `alert: true` error line, `saga_stuck_total`, and the webhook.
    fn alert(&self, name: &str, at: Option<(&str, Phase)>, error: &str) {
        let (step, phase) = match at {
            Some((s, p)) => (s, Some(p.as_str())),
            None => ("", None),
        };
        self.shared()
            .metrics
            .stuck_total
            .with_label_values(&[name, step])
            .inc();
        self.shared().alerter.raise(serde_json::json!({
            "alert": "saga_stuck",
            "saga_id": self.id,
            "saga_name": name,
            "step": (!step.is_empty()).then_some(step),
            "phase": phase,
            "error": error,
            "at": rfc3339(self.now_ms()),
            "retry": format!("/v1/sagas/{}/retry", self.id),
        }));
        self.span.in_scope(|| tracing::error!(step, phase, error = %error, alert = true, "saga stuck: a call that must succeed gave up; resume with POST /v1/sagas/{}/retry", self.id));
    }
}

/// Metrics and the log line of one participant answer.
pub(super) fn call_answered(
    m: &Metrics,
    name: &str,
    step: &str,
    phase: Phase,
    r: &CallResult,
    took: Duration,
) {
    let secs = took.as_secs_f64();
    m.step_call_duration
        .with_label_values(&[name, step, phase.as_str()])
        .observe(secs);
    m.step_calls
        .with_label_values(&[name, step, phase.as_str(), r.outcome.as_str()])
        .inc();
    tracing::info!(
        outcome = r.outcome.as_str(),
        http_status = r.http_status,
        error = r.error.as_deref().unwrap_or(""),
        duration_ms = (secs * 1000.0) as u64,
        "participant answered"
    );
}
