//! Logging and tracing: tracing routed once into bunyan JSON lines on standard output, and,
//! when configured, our spans exported over OTLP ([`export`]); the bridge between a saga's
//! stored trace context and those spans lives here too.

pub mod export;

use crate::domain::trace::{SpanIds, TraceContext};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::subscriber::set_global_default;
use tracing::{Level, Span, Subscriber};
use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorageLayer};
use tracing_log::LogTracer;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{layer::SubscriberExt, EnvFilter, Layer, Registry};

/// Set once the OTLP export runs: only then are spans' OpenTelemetry ids read, and the
/// attributes only a collector needs recorded.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether our spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The spans that are exported (docs/tracing.md); every other span only carries log fields.
/// Events (info and above) are exported as events of the nearest exported span.
pub const EXPORTED_SPANS: [&str; 3] = ["HTTP request", "saga_phase", "participant_call"];

/// A subscriber writing bunyan JSON to `sink`, filtered by `RUST_LOG` or else `filter`, and
/// exporting through `tracer` when given. Each has its own filter: a quiet log level
/// (`warn`) still exports every span.
pub fn get_subscriber<Sink>(
    filter: &str,
    sink: Sink,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> impl Subscriber + Send + Sync
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = JsonStorageLayer
        .and_then(BunyanFormattingLayer::new("saga-orchestrator".into(), sink))
        .with_filter(env_filter);
    let otel = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(filter_fn(|m| {
                if m.is_event() {
                    *m.level() <= Level::INFO
                } else {
                    EXPORTED_SPANS.contains(&m.name())
                }
            }))
    });
    Registry::default().with(otel).with(logs)
}

/// Installs the subscriber process-wide, routes `log` records into it, and logs panics.
pub fn init_subscriber(subscriber: impl Subscriber + Send + Sync) {
    let _ = LogTracer::init();
    if set_global_default(subscriber).is_ok() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            tracing::error!(panic = %info, "panic");
            prev(info);
        }));
    }
}

/// The OpenTelemetry span context of `trace`'s parent: the span our saga spans hang under.
fn remote(trace: &TraceContext) -> opentelemetry::Context {
    let trace_id = TraceId::from_hex(&trace.trace_id).unwrap_or(TraceId::INVALID);
    let span_id = trace
        .parent_id
        .as_deref()
        .and_then(|p| SpanId::from_hex(p).ok())
        // A saga from before export was on has no span of ours to hang under: one derived from
        // its trace keeps its spans together.
        .unwrap_or_else(|| {
            SpanId::from_bytes(trace_id.to_bytes()[8..].try_into().unwrap_or([1; 8]))
        });
    let state = trace
        .tracestate
        .as_deref()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let flags = TraceFlags::new(trace.flags & TraceFlags::SAMPLED.to_u8());
    opentelemetry::Context::new()
        .with_remote_span_context(SpanContext::new(trace_id, span_id, flags, true, state))
}

/// Makes `span` (just created, not yet entered) a child of `trace`'s parent when exporting.
pub fn set_parent(span: &Span, trace: &TraceContext) {
    if exporting() {
        let _ = span.set_parent(remote(trace));
    }
}

/// Keeps `span` out of the export (and so its children): a request that is not part of the
/// API (metrics scrapes, health checks, the console's files).
pub fn unsampled(span: &Span) {
    if exporting() {
        let ctx = SpanContext::new(
            TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes()),
            SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes()),
            TraceFlags::NOT_SAMPLED,
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(ctx));
    }
}

/// The exported span's ids, when exporting (and it is exported).
pub fn ids(span: &Span) -> Option<SpanIds> {
    if !exporting() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| SpanIds {
        trace_id: sc.trace_id().to_string(),
        span_id: sc.span_id().to_string(),
        sampled: sc.is_sampled(),
    })
}
