//! Prometheus metrics of one [`crate::startup::Application`], in its own registry.
//!
//! Label values come only from saga names and step names, which validation bounds to 64
//! characters of a small alphabet; cardinality is (saga kinds × steps × phases).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `saga_leases_total` of each event, resolved once (they are counted on every saga).
pub struct LeaseEvents {
    /// A saga claimed from the log.
    pub claimed: IntCounter,
    /// A saga taken over from an instance whose lease expired.
    pub taken_over: IntCounter,
    /// A saga of this instance's earlier run resumed.
    pub resumed: IntCounter,
    /// This instance's lease renewed.
    pub renewed: IntCounter,
    /// A saga's lease given up.
    pub released: IntCounter,
    /// This instance's leases lost (not renewed in time).
    pub lost: IntCounter,
    /// A call that waited for a late renewal before it was sent.
    pub renewal_awaited: IntCounter,
    /// A call cut because the lease ended under it.
    pub call_cut: IntCounter,
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// `saga_started_total{name}`
    pub started: IntCounterVec,
    /// `saga_finished_total{name,status}`
    pub finished: IntCounterVec,
    /// `saga_failed_total{name,step}`
    pub failed: IntCounterVec,
    /// `saga_stuck_total{name,step}`
    pub stuck_total: IntCounterVec,
    /// `sagas_stuck{name}`
    pub stuck: IntGaugeVec,
    /// `sagas_active{name,status}`
    pub active: IntGaugeVec,
    /// `saga_step_calls_total{name,step,phase,outcome}`
    pub step_calls: IntCounterVec,
    /// `saga_step_call_duration_seconds{name,step,phase}`
    pub step_call_duration: HistogramVec,
    /// `saga_duration_seconds{name,status}`
    pub saga_duration: HistogramVec,
    /// `saga_retries_scheduled_total{name,step,phase}`
    pub retries: IntCounterVec,
    /// `saga_operator_actions_total{action}`: operator actions carried out (recorded).
    pub operator_actions: IntCounterVec,
    /// `saga_definition_changes_total{action}`: created, unchanged, retired.
    pub definition_changes: IntCounterVec,
    /// `saga_definition_starts_total{definition,version}`: sagas started by definition.
    pub definition_starts: IntCounterVec,
    /// `saga_dry_runs_total{outcome}`: planned (every host answered), unreachable, refused.
    pub dry_runs: IntCounterVec,
    /// `saga_breaker_state{service}`: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGaugeVec,
    /// `saga_breaker_transitions_total{service,to}`
    pub breaker_transitions: IntCounterVec,
    /// `saga_breaker_waiting{service}`: calls waiting at the service's gate.
    pub breaker_waiting: IntGaugeVec,
    /// `saga_timers_pending`
    pub timers_pending: IntGauge,
    /// `saga_actor_restarts_total`
    pub actor_restarts: IntCounter,
    /// `saga_store_write_duration_seconds{op}`
    pub store_write: HistogramVec,
    /// `saga_start_rejected_total`: start requests refused as invalid.
    pub rejected: IntCounter,
    /// `saga_start_unavailable_total`: starts refused with 503 (back-pressure or an outage).
    pub unavailable: IntCounter,
    /// `saga_live_actors`: saga actors in memory.
    pub actors: IntGauge,
    /// `saga_ready`: 1 when the database answers and migrations are applied (set at scrape).
    pub ready: IntGauge,
    /// Latency of reads behind the API.
    pub store_read: Histogram,
    /// `saga_leases_total{event}`: leases claimed, taken_over, resumed, renewed, released, lost;
    /// calls that waited for a late renewal (renewal_awaited) or were cut by a lost lease
    /// (call_cut).
    pub leases: IntCounterVec,
    /// `saga_lease_renewal_seconds`: how long each renewal of this instance's lease took.
    pub lease_renewal: Histogram,
    /// `saga_leases_total` by event, resolved.
    pub lease: LeaseEvents,
    /// `saga_store_write_duration_seconds{op="create"}`
    pub write_create: Histogram,
    /// `saga_store_write_duration_seconds{op="transition"}`
    pub write_transition: Histogram,
    /// `sagas_owned`: sagas this instance drives (its live saga actors, at each poll).
    pub owned: IntGauge,
    /// `saga_dtm_requests_total{route,result}`: requests of DTM's protocol (docs/dtm.md) by
    /// route and answer (success, failure: a 4xx FAILURE, error: a 5xx).
    pub dtm_requests: IntCounterVec,
    /// `saga_purged_total{status}`: sagas retention deleted, by how they ended.
    pub purged: IntCounterVec,
    /// `saga_archived_bytes_total`: compressed bytes appended to the archive.
    pub archived_bytes: IntCounter,
    /// `saga_purge_lag_seconds`: how long the saga due the longest has waited to be purged.
    pub purge_lag: prometheus::Gauge,
    /// Label sets the open-saga gauges have shown, so that they drop to 0 rather than vanish.
    seen: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    /// Creates and registers every metric, plus the process collector (CPU, RSS, fds).
    pub fn new() -> Self {
        let r = Registry::new();
        let fast = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let slow = vec![
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
        ];
        #[cfg(target_os = "linux")]
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        // The OTLP export is the process's (docs/tracing.md): every registry shows its counts.
        let spans = crate::telemetry::export::counters();
        r.register(Box::new(spans.exported.clone()))
            .expect("unique");
        r.register(Box::new(spans.dropped.clone())).expect("unique");
        let timers_pending =
            IntGauge::new("saga_timers_pending", "Timers waiting to fire").expect("valid");
        r.register(Box::new(timers_pending.clone()))
            .expect("unique");
        let actor_restarts = IntCounter::new(
            "saga_actor_restarts_total",
            "Saga actors restarted by their supervisor",
        )
        .expect("valid");
        r.register(Box::new(actor_restarts.clone()))
            .expect("unique");
        let rejected = IntCounter::new(
            "saga_start_rejected_total",
            "Start requests refused as invalid",
        )
        .expect("valid");
        r.register(Box::new(rejected.clone())).expect("unique");
        let unavailable = IntCounter::new(
            "saga_start_unavailable_total",
            "Starts refused with 503: too many live sagas or queued starts, or the database unreachable",
        )
        .expect("valid");
        r.register(Box::new(unavailable.clone())).expect("unique");
        let actors = IntGauge::new("saga_live_actors", "Saga actors in memory").expect("valid");
        r.register(Box::new(actors.clone())).expect("unique");
        let ready = IntGauge::new(
            "saga_ready",
            "1 when the saga log answers and migrations are applied",
        )
        .expect("valid");
        r.register(Box::new(ready.clone())).expect("unique");
        let store_read = Histogram::with_opts(
            HistogramOpts::new("saga_store_read_duration_seconds", "Saga log reads")
                .buckets(fast.clone()),
        )
        .expect("valid");
        r.register(Box::new(store_read.clone())).expect("unique");
        let owned = IntGauge::new(
            "sagas_owned",
            "Sagas this instance drives (live saga actors, at each poll of the log)",
        )
        .expect("valid");
        r.register(Box::new(owned.clone())).expect("unique");
        let lease_renewal = Histogram::with_opts(
            HistogramOpts::new(
                "saga_lease_renewal_seconds",
                "Renewals of this instance's lease (own connection and thread)",
            )
            .buckets(fast.clone()),
        )
        .expect("valid");
        r.register(Box::new(lease_renewal.clone())).expect("unique");
        let leases = counter(
            &r,
            "saga_leases_total",
            "Saga leases claimed, taken over (from an expired lease), renewed, released and lost; calls that waited for a late renewal or were cut by a lost lease",
            &["event"],
        );
        let event = |e: &str| leases.with_label_values(&[e]);
        let lease = LeaseEvents {
            claimed: event("claimed"),
            taken_over: event("taken_over"),
            resumed: event("resumed"),
            renewed: event("renewed"),
            released: event("released"),
            lost: event("lost"),
            renewal_awaited: event("renewal_awaited"),
            call_cut: event("call_cut"),
        };
        let store_write = histogram(
            &r,
            "saga_store_write_duration_seconds",
            "Saga log write transactions",
            &["op"],
            fast.clone(),
        );
        Metrics {
            lease_renewal,
            lease,
            write_create: store_write.with_label_values(&["create"]),
            write_transition: store_write.with_label_values(&["transition"]),
            store_write,
            leases,
            owned,
            started: counter(&r, "saga_started_total", "Sagas started", &["name"]),
            finished: counter(
                &r,
                "saga_finished_total",
                "Sagas that reached a terminal status",
                &["name", "status"],
            ),
            failed: counter(
                &r,
                "saga_failed_total",
                "Forward steps that failed and started compensation",
                &["name", "step"],
            ),
            stuck_total: counter(
                &r,
                "saga_stuck_total",
                "Sagas that became stuck",
                &["name", "step"],
            ),
            stuck: gauge(&r, "sagas_stuck", "Sagas stuck now", &["name"]),
            active: gauge(
                &r,
                "sagas_active",
                "Sagas in a non-terminal status now",
                &["name", "status"],
            ),
            step_calls: counter(
                &r,
                "saga_step_calls_total",
                "Participant calls by outcome",
                &["name", "step", "phase", "outcome"],
            ),
            step_call_duration: histogram(
                &r,
                "saga_step_call_duration_seconds",
                "Participant call latency",
                &["name", "step", "phase"],
                fast.clone(),
            ),
            saga_duration: histogram(
                &r,
                "saga_duration_seconds",
                "Creation to terminal status",
                &["name", "status"],
                slow,
            ),
            purged: counter(
                &r,
                "saga_purged_total",
                "Ended sagas deleted by retention, by status",
                &["status"],
            ),
            archived_bytes: {
                let c = IntCounter::new(
                    "saga_archived_bytes_total",
                    "Compressed bytes appended to the retention archive",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique");
                c
            },
            purge_lag: {
                let g = prometheus::Gauge::new(
                    "saga_purge_lag_seconds",
                    "Seconds since the saga due the longest for purging was due (0: none due)",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique");
                g
            },
            breaker_state: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "saga_breaker_state",
                        "Circuit breaker of each participant service: 0 closed, 1 open, 2 half-open",
                    ),
                    &["service"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique");
                g
            },
            breaker_transitions: counter(
                &r,
                "saga_breaker_transitions_total",
                "Circuit breaker changes of each participant service, by the state entered",
                &["service", "to"],
            ),
            breaker_waiting: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "saga_breaker_waiting",
                        "Participant calls waiting at the service's gate (breaker open or service paused)",
                    ),
                    &["service"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique");
                g
            },
            operator_actions: counter(
                &r,
                "saga_operator_actions_total",
                "Operator actions carried out on sagas (recorded in their operator actions), by action",
                &["action"],
            ),
            definition_changes: counter(
                &r,
                "saga_definition_changes_total",
                "Writes of named definitions, by what they did: created (a new version), unchanged (identical to the latest), retired",
                &["action"],
            ),
            definition_starts: counter(
                &r,
                "saga_definition_starts_total",
                "Sagas started by naming a stored definition, by definition and version",
                &["definition", "version"],
            ),
            dry_runs: counter(
                &r,
                "saga_dry_runs_total",
                "Dry runs of a start, by outcome: planned (every endpoint's host resolved and accepted a connection), unreachable (some did not), refused (a start would be refused)",
                &["outcome"],
            ),
            dtm_requests: counter(
                &r,
                "saga_dtm_requests_total",
                "Requests of DTM's protocol under /api/dtmsvr, by route and answer",
                &["route", "result"],
            ),
            retries: counter(
                &r,
                "saga_retries_scheduled_total",
                "Retries scheduled after an unknown outcome",
                &["name", "step", "phase"],
            ),
            timers_pending,
            actor_restarts,

            rejected,
            unavailable,
            actors,
            ready,
            store_read,
            seen: Default::default(),
            registry: r,
        }
    }

    /// Sets `sagas_active` and `sagas_stuck` from counts of open sagas in the log, so they are
    /// right after a restart and whichever instance answers.
    pub fn set_open_counts(&self, counts: &[(String, String, i64)]) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (name, status) in seen.iter() {
            self.gauge_for(name, status).set(0);
        }
        for (name, status, n) in counts {
            self.gauge_for(name, status).set(*n);
            seen.insert((name.clone(), status.clone()));
        }
    }

    fn gauge_for(&self, name: &str, status: &str) -> IntGauge {
        if status == "stuck" {
            self.stuck.with_label_values(&[name])
        } else {
            self.active.with_label_values(&[name, status])
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
