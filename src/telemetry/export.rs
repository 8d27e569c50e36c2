//! OTLP export of our spans (docs/tracing.md): the tracer provider, and the queue between the
//! threads that end spans and the one thread that sends them. Nothing here ever waits for the
//! collector on a saga's path: a full queue drops the span and counts it.

use crate::config::TracingSettings;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor, Tracer,
};
use opentelemetry_sdk::Resource;
use prometheus::{IntCounter, IntCounterVec, Opts};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Spans sent in one export at most (the OTLP default batch).
const BATCH: usize = 512;
/// How long an ended span waits for a full batch before it goes anyway.
const LINGER: Duration = Duration::from_secs(1);

/// The span counters, shared by every registry that shows them.
#[derive(Clone)]
pub struct SpanCounters {
    /// `saga_trace_spans_exported_total`: spans the collector accepted.
    pub exported: IntCounter,
    /// `saga_trace_spans_dropped_total{reason}`: `queue_full` or `export_failed`.
    pub dropped: IntCounterVec,
}

/// The process's span counters (export is set up once per process).
pub fn counters() -> &'static SpanCounters {
    static C: OnceLock<SpanCounters> = OnceLock::new();
    C.get_or_init(|| {
        let c = SpanCounters {
        exported: IntCounter::new(
            "saga_trace_spans_exported_total",
            "Spans the OTLP collector accepted",
        )
        .expect("valid metric"),
        dropped: IntCounterVec::new(
            Opts::new(
                "saga_trace_spans_dropped_total",
                "Spans not exported: queue_full (the collector is slow or gone) or export_failed",
            ),
            &["reason"],
        )
        .expect("valid metric"),
        };
        // Shown at 0 from the start, so that an alert on them has a series.
        for reason in ["queue_full", "export_failed"] {
            c.dropped.with_label_values(&[reason]);
        }
        c
    })
}

/// Where spans go and whether export is on at all: `tracing.otlp_endpoint`, else the OTLP
/// environment variables (read by the exporter itself); `None` = no export.
fn endpoint(settings: &TracingSettings) -> Option<Option<String>> {
    if !settings.otlp_endpoint.is_empty() {
        return Some(settings.traces_url());
    }
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .then_some(None)
}

/// The running export: its provider (flushed and shut down at exit) and its tracer.
pub struct Export {
    provider: SdkTracerProvider,
    /// What the tracing layer turns spans into.
    pub tracer: Tracer,
}

impl Export {
    /// Sets export up when configured (`Ok(None)` when it is not); a bad endpoint is an error.
    pub fn start(settings: &TracingSettings) -> Result<Option<Export>, String> {
        if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let Some(url) = endpoint(settings) else {
            return Ok(None);
        };
        let timeout = Duration::from_millis(settings.export_timeout_ms);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("tracing: HTTP client: {e}"))?;
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Client(client))
            .with_timeout(timeout);
        if let Some(url) = url {
            builder = builder.with_endpoint(url);
        }
        let mut exporter = builder
            .build()
            .map_err(|e| format!("tracing: OTLP exporter: {e}"))?;
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name("saga-orchestrator");
        }
        let resource = resource
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        exporter.set_resource(&resource);
        let mut provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(Queue::start(exporter, settings.max_queue, timeout)?);
        // The standard variable wins; else a caller's flag decides, and `sample_ratio` for the
        // traces that start here.
        if std::env::var("OTEL_TRACES_SAMPLER").is_err() {
            provider = provider.with_sampler(Sampler::ParentBased(Box::new(
                Sampler::TraceIdRatioBased(settings.sample_ratio),
            )));
        }
        let provider = provider.build();
        let tracer = provider.tracer("saga-orchestrator");
        super::EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(Export { provider, tracer }))
    }

    /// Sends what is queued (within the export timeout) and stops the export thread.
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// The exporter's HTTP client: the service's own reqwest, with the export timeout on the whole
/// request.
#[derive(Debug)]
struct Client(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let response = self.0.execute(request).await?;
        let mut out = Response::builder().status(response.status());
        if let Some(h) = out.headers_mut() {
            *h = response.headers().clone();
        }
        Ok(out.body(response.bytes().await?)?)
    }
}

enum Msg {
    Span(Box<SpanData>),
    /// Export what is queued, then answer.
    Flush(SyncSender<()>),
}

/// The span processor: `on_end` only tries to queue; one thread batches and exports.
#[derive(Debug)]
struct Queue {
    tx: SyncSender<Msg>,
    timeout: Duration,
}

impl Queue {
    fn start(
        exporter: opentelemetry_otlp::SpanExporter,
        capacity: usize,
        timeout: Duration,
    ) -> Result<Queue, String> {
        let (tx, rx) = sync_channel(capacity);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tracing: export runtime: {e}"))?;
        // Detached: it ends when the provider (and so the sender) is dropped.
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || export_loop(rx, exporter, rt, timeout, capacity.min(BATCH)))
            .map_err(|e| format!("tracing: export thread: {e}"))?;
        Ok(Queue { tx, timeout })
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                counters().dropped.with_label_values(&["queue_full"]).inc()
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (done, wait) = sync_channel(1);
        self.tx
            .send(Msg::Flush(done))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        wait.recv_timeout(self.timeout + LINGER)
            .map_err(|_| OTelSdkError::Timeout(self.timeout))
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        self.force_flush()
    }
}

/// The export thread: batches of up to `max` spans (the queue's size at most, so that what
/// waits is bounded by twice it), sent when full, after [`LINGER`], or on a flush; each export
/// bounded by `timeout`, its spans counted as exported or failed.
fn export_loop(
    rx: Receiver<Msg>,
    exporter: opentelemetry_otlp::SpanExporter,
    rt: tokio::runtime::Runtime,
    timeout: Duration,
    max: usize,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(max);
    let mut since = Instant::now();
    loop {
        let wait = LINGER.saturating_sub(since.elapsed());
        let (flush, done) = match rx.recv_timeout(wait) {
            Ok(Msg::Span(s)) => {
                if batch.is_empty() {
                    since = Instant::now();
                }
                batch.push(*s);
                (batch.len() >= max, None)
            }
            Ok(Msg::Flush(done)) => (true, Some(done)),
            Err(RecvTimeoutError::Timeout) => (true, None),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if flush && !batch.is_empty() {
            let spans = std::mem::replace(&mut batch, Vec::with_capacity(max));
            let n = spans.len() as u64;
            let sent =
                rt.block_on(async { tokio::time::timeout(timeout, exporter.export(spans)).await });
            let c = counters();
            match sent {
                Ok(Ok(())) => c.exported.inc_by(n),
                _ => c.dropped.with_label_values(&["export_failed"]).inc_by(n),
            }
        }
        if flush {
            since = Instant::now();
        }
        if let Some(done) = done {
            let _ = done.try_send(());
        }
    }
}
