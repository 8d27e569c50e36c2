//! One participant call of a saga actor: sent only under a live lease (a renewal that is late
//! is waited for first), with its whole timeout, cut only if the lease ends under it; its answer
//! comes back to the actor as an event.

use super::report;
use super::residency::Residency;
use super::SagaActor;
use crate::domain::{Answer, Event, Phase, TraceContext};
use crate::participant::CallSpec;
use actix::prelude::*;
use tokio::time::Instant;
use tracing::Instrument;

impl SagaActor {
    /// Sends one participant call and feeds its answer back as an event. Sent even when a stop
    /// began after the call was decided: it is recorded as sent, and calls in flight get the
    /// grace period (decisions made while stopping start no call).
    pub(super) fn call(
        &mut self,
        step: usize,
        phase: Phase,
        attempt: u32,
        ctx: &mut Context<Self>,
    ) {
        let Some(live) = self.live() else { return };
        if live.def.steps[step].endpoint(phase).is_none() {
            return;
        }
        let (shared, def, created_at) =
            (self.links.shared.clone(), live.def.clone(), live.created_at);
        let (id, name, token) = (self.id.clone(), live.name.clone(), self.token.clone());
        let work = shared.work.token();
        self.calls += 1;
        // Each call (each attempt) is its own span of the saga's trace, a child of its phase:
        // its lines carry saga_id, saga_name, trace_id, step, phase, attempt and span_id.
        let trace = TraceContext::of_saga(def.trace.as_ref(), &id);
        let span = call_span(self.progress_span(), &def, step, phase, attempt);
        let span_id = match crate::telemetry::ids(&span) {
            // Exported: the participant's span is the child of this one.
            Some(ids) => ids.span_id,
            None => format!("{:016x}", rand::random::<u64>().max(1)),
        };
        span.record("span_id", span_id.as_str());
        let traceparent = trace.traceparent(&span_id);
        let fut = async move {
            let s = &def.steps[step];
            let endpoint = s.endpoint(phase)?;
            tracing::debug!(url = %endpoint.url, "calling participant");
            // The service's gate first: while its breaker is open or an operator paused it,
            // the call waits here, its attempt not spent, its timeout not started.
            let pass = shared.services.admit(&endpoint.service).await;
            // A call waiting for a slot stays small: its HTTP future exists once it has one.
            let slot = shared.participant.slot().await;
            // Only under a live lease: a renewal that is late is waited for (counted) rather
            // than a call sent that would soon be cut.
            let lease = &shared.lease;
            if lease
                .remaining(&token)
                .is_some_and(|left| left < lease.period())
            {
                shared.metrics.lease.renewal_awaited.inc();
            }
            if !lease.fresh(&token, lease.period()).await {
                tracing::warn!("lease lost before the call was sent; not sending it");
                return Some(Err(work));
            }
            let spec = CallSpec {
                saga_id: &id,
                step: &s.name,
                phase,
                attempt,
                endpoint,
                body: def.call_body(endpoint),
                protocol: def.protocol,
                created_at,
                timeout_ms: s.timeout_ms,
                instance: &token.owner,
                traceparent: &traceparent,
                tracestate: trace.tracestate.as_deref(),
            };
            let t = Instant::now();
            // With its whole timeout, and cut only if the lease ends under it: from then on
            // another instance may send this call again.
            let r = tokio::select! {
                r = Box::pin(shared.participant.call(slot, &spec)) => r,
                _ = lease.lost(&token) => {
                    shared.metrics.lease.call_cut.inc();
                    tracing::warn!("lease lost while the call was in flight; cut");
                    return Some(Err(work));
                }
            };
            let m = &shared.metrics;
            shared.services.record(pass, r.outcome, t.elapsed());
            report::call_answered(m, &name, &s.name, phase, &r, t.elapsed());
            if crate::telemetry::exporting() {
                let span = tracing::Span::current();
                span.record("saga.outcome", r.outcome.as_str());
                if let Some(status) = r.http_status {
                    span.record("http.response.status_code", u64::from(status));
                }
                if let Some(e) = &r.error {
                    span.record("error.message", e.as_str());
                }
                if r.outcome != crate::domain::CallOutcome::Success {
                    span.record("otel.status_code", "error");
                }
            }
            Some(Ok((r, work)))
        }
        .instrument(span);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.calls -= 1;
            let (r, work) = match res {
                Some(Ok(x)) => x,
                Some(Err(_work)) => {
                    // The lease is gone: nothing more is sent or written on its word.
                    act.residency = Residency::LetGo;
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

/// The span of one call: log fields always; what a collector shows (kind, method, the URL
/// without its query, which may hold secrets) only when exporting.
fn call_span(
    parent: &tracing::Span,
    def: &crate::domain::SagaDefinition,
    step: usize,
    phase: Phase,
    attempt: u32,
) -> tracing::Span {
    use tracing::field::Empty;
    let s = &def.steps[step];
    let span = tracing::info_span!(parent: parent, "participant_call",
        step = %s.name, phase = phase.as_str(), attempt, span_id = Empty,
        "otel.name" = Empty, "otel.kind" = Empty, "otel.status_code" = Empty,
        "http.request.method" = Empty, "url.full" = Empty, "http.response.status_code" = Empty,
        "saga.outcome" = Empty, "error.message" = Empty);
    if crate::telemetry::exporting() {
        span.record("otel.kind", "client");
        span.record(
            "otel.name",
            format!("{} {}", phase.as_str(), s.name).as_str(),
        );
        if let Some(ep) = s.endpoint(phase) {
            span.record("http.request.method", ep.method.as_str());
            let mut url = url::Url::parse(&ep.url).ok();
            if let Some(u) = url.as_mut() {
                u.set_query(None);
                u.set_fragment(None);
                let _ = u.set_password(None);
                let _ = u.set_username("");
            }
            span.record("url.full", url.as_ref().map_or("", |u| u.as_str()));
        }
    }
    span
}
