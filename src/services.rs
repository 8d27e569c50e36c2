//! What this instance knows of each participant service (an endpoint's `service` label): its
//! circuit breaker (the rules: `domain::breaker`), its recent calls, and an operator's pause
//! (kept in the log, so it holds on every instance). Every participant call passes the gate
//! ([`Services::admit`], from `actors/saga/call.rs`) before it takes a slot: a call to an open
//! or paused service waits there, with no attempt spent and no backoff grown, and is sent when
//! the gate lets it through (the probe, then at the ramp's rate).

use crate::actors::clock::Clock;
use crate::domain::breaker::{Admit, Breaker, BreakerPolicy, BreakerState};
use crate::domain::CallOutcome;
use crate::metrics::Metrics;
pub use crate::store::ServicePause;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How far back a service's figures look (ms).
pub const RECENT_MS: i64 = 300_000;
/// Most answers kept per service for its figures.
const RECENT_MAX: usize = 20_000;

/// One service as `GET /v1/services` shows it.
#[derive(Debug, Clone)]
pub struct ServiceFigures {
    /// The service label.
    pub service: String,
    /// Its breaker and since when (ms).
    pub breaker: (BreakerState, i64),
    /// An operator's pause.
    pub paused: Option<ServicePause>,
    /// Answers over the last [`RECENT_MS`].
    pub calls: u64,
    /// Of those, unknown outcomes.
    pub unknown: u64,
    /// Their 99th percentile duration (ms), if any.
    pub p99_ms: Option<u64>,
    /// Calls waiting at the gate now.
    pub waiting: usize,
}

struct Entry {
    breaker: Breaker,
    changed: Arc<Notify>,
    /// Counts the changes that may let waiting calls go.
    version: u64,
    waiting: usize,
    /// (at, duration ms, unknown) of recent answers, oldest first.
    recent: VecDeque<(i64, u32, bool)>,
}

/// The services of this instance.
pub struct Services {
    policy: BreakerPolicy,
    overrides: HashMap<String, BreakerPolicy>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    pauses: HashMap<String, ServicePause>,
}

/// A call let through the gate: the probe's answer closes or reopens the breaker; a probe
/// dropped without an answer (its call cut: the lease lost, a stop) lets the next call probe.
pub struct Pass<'a> {
    services: &'a Services,
    service: String,
    probe: bool,
    answered: bool,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probe && !self.answered {
            self.services.probe_lost(&self.service);
        }
    }
}

/// Counts a call waiting at the gate for as long as it waits (also when its future is
/// dropped: a lease lost, a stop).
struct Waiting<'a>(&'a Services, &'a str);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        if let Some(e) = g.entries.get_mut(self.1) {
            e.waiting = e.waiting.saturating_sub(1);
            let n = e.waiting as i64;
            self.0
                .metrics
                .breaker_waiting
                .with_label_values(&[self.1])
                .set(n);
        }
    }
}

impl Services {
    /// Services under `policy`, with per-service `overrides`.
    pub fn new(
        policy: BreakerPolicy,
        overrides: HashMap<String, BreakerPolicy>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Services {
        Services {
            policy,
            overrides,
            clock,
            metrics,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn policy(&self, service: &str) -> &BreakerPolicy {
        self.overrides.get(service).unwrap_or(&self.policy)
    }

    fn entry<'a>(&self, g: &'a mut Inner, service: &str, now: i64) -> &'a mut Entry {
        g.entries.entry(service.to_string()).or_insert_with(|| {
            self.metrics
                .breaker_state
                .with_label_values(&[service])
                .set(BreakerState::Closed.gauge());
            Entry {
                breaker: Breaker::new(now),
                changed: Arc::new(Notify::new()),
                version: 0,
                waiting: 0,
                recent: VecDeque::new(),
            }
        })
    }

    /// Waits until a call to `service` may go: not while an operator has it paused, nor while
    /// its breaker is open (the probe goes, then the ramp lets the others through).
    pub async fn admit(&self, service: &str) -> Pass<'_> {
        let mut waiting = None;
        loop {
            let (changed, wait, seen) = {
                let mut g = self.lock();
                let now = self.clock.now_ms();
                let paused = g.pauses.contains_key(service);
                let policy = *self.policy(service);
                let e = self.entry(&mut g, service, now);
                let before = e.breaker.state().0;
                let admit = match paused {
                    true => Admit::Wait(i64::MAX),
                    false => e.breaker.admit(&policy, now),
                };
                let after = e.breaker.state().0;
                let until = match admit {
                    Admit::Wait(until) => Some(until),
                    Admit::Go | Admit::Probe => None,
                };
                if until.is_some() && waiting.is_none() {
                    e.waiting += 1;
                    let n = e.waiting as i64;
                    self.metrics
                        .breaker_waiting
                        .with_label_values(&[service])
                        .set(n);
                }
                let found = (e.changed.clone(), e.version);
                drop(g);
                if before != after {
                    self.transition(service, after);
                }
                let Some(until) = until else {
                    return Pass {
                        services: self,
                        service: service.to_string(),
                        probe: admit == Admit::Probe,
                        answered: false,
                    };
                };
                if waiting.is_none() {
                    waiting = Some(Waiting(self, service));
                }
                let wait = until.saturating_sub(now).clamp(1, 60_000) as u64;
                (found.0, Duration::from_millis(wait), found.1)
            };
            // Woken by a change (the probe answered, a pause lifted) or when it is time; a
            // change between the look above and this wait is not missed.
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.version(service) != seen {
                continue;
            }
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    fn version(&self, service: &str) -> u64 {
        self.lock().entries.get(service).map_or(0, |e| e.version)
    }

    /// Records the answer of a call the gate let through.
    pub fn record(&self, mut pass: Pass<'_>, outcome: CallOutcome, took: Duration) {
        pass.answered = true;
        let unknown = outcome == CallOutcome::Unknown;
        let mut g = self.lock();
        let now = self.clock.now_ms();
        let policy = *self.policy(&pass.service);
        let e = self.entry(&mut g, &pass.service, now);
        e.recent
            .push_back((now, took.as_millis().min(u32::MAX as u128) as u32, unknown));
        while e.recent.len() > RECENT_MAX || e.recent.front().is_some_and(|r| r.0 < now - RECENT_MS)
        {
            e.recent.pop_front();
        }
        if e.breaker.record(&policy, now, unknown, pass.probe) {
            let state = e.breaker.state().0;
            e.version += 1;
            let changed = e.changed.clone();
            drop(g);
            self.transition(&pass.service, state);
            if state != BreakerState::Open {
                changed.notify_waiters();
            }
        }
    }

    fn probe_lost(&self, service: &str) {
        let mut g = self.lock();
        let now = self.clock.now_ms();
        let Some(e) = g.entries.get_mut(service) else {
            return;
        };
        if e.breaker.probe_lost(now) {
            e.version += 1;
            let changed = e.changed.clone();
            drop(g);
            self.transition(service, BreakerState::Open);
            changed.notify_waiters();
        }
    }

    fn transition(&self, service: &str, to: BreakerState) {
        let m = &self.metrics;
        m.breaker_state
            .with_label_values(&[service])
            .set(to.gauge());
        m.breaker_transitions
            .with_label_values(&[service, to.as_str()])
            .inc();
        match to {
            BreakerState::Open => {
                tracing::warn!(service, "breaker open: calls to the service wait")
            }
            BreakerState::HalfOpen => tracing::info!(service, "breaker half-open: one probe goes"),
            BreakerState::Closed => {
                tracing::info!(service, "breaker closed: waiting calls are released")
            }
        }
    }

    /// The operators' pauses as the log has them now: calls to a paused service wait; those to
    /// a service no longer paused go on.
    pub fn set_pauses(&self, pauses: Vec<ServicePause>) {
        let mut g = self.lock();
        let now: HashMap<String, ServicePause> =
            pauses.into_iter().map(|p| (p.service.clone(), p)).collect();
        let lifted: Vec<String> = g
            .pauses
            .keys()
            .filter(|s| !now.contains_key(*s))
            .cloned()
            .collect();
        g.pauses = now;
        let mut notify = Vec::new();
        for s in &lifted {
            if let Some(e) = g.entries.get_mut(s) {
                e.version += 1;
                notify.push(e.changed.clone());
            }
        }
        let lifted = notify;
        drop(g);
        for n in lifted {
            n.notify_waiters();
        }
    }

    /// What a call to `service` waits for, if it waits: for the saga resource's `waiting_on`.
    pub fn waiting_on(&self, service: &str, rfc3339: impl Fn(i64) -> String) -> Option<String> {
        let g = self.lock();
        if let Some(p) = g.pauses.get(service) {
            return Some(format!("service paused: {service} since {}", rfc3339(p.at)));
        }
        let (state, since) = g.entries.get(service)?.breaker.state();
        match state {
            BreakerState::Closed => None,
            BreakerState::Open => Some(format!("breaker open: {service} since {}", rfc3339(since))),
            BreakerState::HalfOpen => Some(format!(
                "breaker half-open: {service} since {} (a probe is out)",
                rfc3339(since)
            )),
        }
    }

    /// Every service seen (called, or paused by an operator), by name.
    pub fn figures(&self) -> Vec<ServiceFigures> {
        let g = self.lock();
        let now = self.clock.now_ms();
        let mut names: Vec<&String> = g.entries.keys().chain(g.pauses.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let e = g.entries.get(name);
                let recent: Vec<&(i64, u32, bool)> = e
                    .map(|e| e.recent.iter().filter(|r| r.0 >= now - RECENT_MS).collect())
                    .unwrap_or_default();
                let mut took: Vec<u32> = recent.iter().map(|r| r.1).collect();
                took.sort_unstable();
                let p99 = (!took.is_empty())
                    .then(|| u64::from(took[((took.len() * 99).div_ceil(100)).max(1) - 1]));
                ServiceFigures {
                    service: name.clone(),
                    breaker: e.map_or((BreakerState::Closed, now), |e| e.breaker.state()),
                    paused: g.pauses.get(name).cloned(),
                    calls: recent.len() as u64,
                    unknown: recent.iter().filter(|r| r.2).count() as u64,
                    p99_ms: p99,
                    waiting: e.map_or(0, |e| e.waiting),
                }
            })
            .collect()
    }
}

/// Keeps this instance's pauses equal to the log's, looking every `every` until `stop` (an
/// operator's pause made on another instance holds here within that).
pub async fn follow_pauses(
    log: crate::store::ServiceLog,
    services: Arc<Services>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        match log.pauses().await {
            Ok(p) => services.set_pauses(p),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the services' pauses; keeping the last")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
