//! The circuit breaker of one participant service (docs/operations.md, "When a participant is
//! down"): when its calls keep ending in unknown outcomes it opens and no call goes to it; after
//! a cool-down one probe goes; success closes it and the calls that waited are let through at a
//! rate that ramps up, failure opens it again for longer. Pure: the caller gives the time.

use std::collections::VecDeque;

/// One service's breaker settings (`[participant.breaker]`, per-service overrides).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Off: every call goes (statistics are still kept).
    pub enabled: bool,
    /// Unknown outcomes in a row that open it.
    pub consecutive_failures: u32,
    /// Share of unknown outcomes over the window that opens it ...
    pub failure_rate: f64,
    /// ... once the window (ms) holds at least `min_calls` answers.
    pub window_ms: u64,
    /// Answers in the window before the rate counts.
    pub min_calls: u32,
    /// How long it stays open the first time (ms); doubled after each failed probe.
    pub open_ms: u64,
    /// The longest it stays open (ms).
    pub max_open_ms: u64,
    /// Calls let through in the first second after it closes; doubled every second ...
    pub ramp_start_per_s: u32,
    /// ... for this long (ms), then no limit.
    pub ramp_ms: u64,
}

impl Default for BreakerPolicy {
    /// Chosen so that a service that restarts in a few seconds is not hammered, and a healthy
    /// one never trips: five unknown outcomes in a row (no healthy service gives five), or more
    /// than half of at least 20 answers in 30 s; open 5 s (a typical restart), doubling to 60 s;
    /// after closing, 10 calls in the first second, doubling each second for 5 s (10 → 160/s).
    fn default() -> Self {
        BreakerPolicy {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            window_ms: 30_000,
            min_calls: 20,
            open_ms: 5_000,
            max_open_ms: 60_000,
            ramp_start_per_s: 10,
            ramp_ms: 5_000,
        }
    }
}

impl BreakerPolicy {
    /// Each value out of its range: (field, range, value).
    pub fn problems(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut out = vec![];
        let mut check = |ok: bool, field, range, got: String| {
            if !ok {
                out.push((field, range, got));
            }
        };
        let c = self.consecutive_failures;
        check(
            (1..=1000).contains(&c),
            "consecutive_failures",
            "from 1 to 1000",
            c.to_string(),
        );
        let r = self.failure_rate;
        check(
            r > 0.0 && r <= 1.0,
            "failure_rate",
            "above 0, at most 1",
            r.to_string(),
        );
        let w = self.window_ms;
        check(
            (1_000..=3_600_000).contains(&w),
            "window_ms",
            "from 1000 to 3600000",
            w.to_string(),
        );
        let m = self.min_calls;
        check(
            (1..=100_000).contains(&m),
            "min_calls",
            "from 1 to 100000",
            m.to_string(),
        );
        let o = self.open_ms;
        check(
            (100..=3_600_000).contains(&o),
            "open_ms",
            "from 100 to 3600000",
            o.to_string(),
        );
        let x = self.max_open_ms;
        check(
            x >= o && x <= 86_400_000,
            "max_open_ms",
            "from open_ms to 86400000",
            x.to_string(),
        );
        let s = self.ramp_start_per_s;
        check(
            (1..=1_000_000).contains(&s),
            "ramp_start_per_s",
            "from 1 to 1000000",
            s.to_string(),
        );
        let p = self.ramp_ms;
        check(
            p <= 3_600_000,
            "ramp_ms",
            "from 0 to 3600000",
            p.to_string(),
        );
        out
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go.
    Closed,
    /// No call goes until the cool-down ends.
    Open,
    /// One probe is out; the others wait for its answer.
    HalfOpen,
}

impl BreakerState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The metric's value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// May a call go now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes.
    Go,
    /// Yes, as the one probe of a half-open breaker: its answer decides.
    Probe,
    /// Not before this time (ms), or before the breaker changes.
    Wait(i64),
}

/// One service's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    /// When the state began (ms).
    since: i64,
    /// Unknown outcomes in a row.
    consecutive: u32,
    /// Answers per second over the window: (second, answers, unknown).
    window: VecDeque<(i64, u32, u32)>,
    /// The end of the cool-down (open).
    open_until: i64,
    /// Opens since it last closed (the cool-down doubles with each).
    opens: u32,
    /// It closed after being open at this time: calls ramp up from then.
    ramp_from: Option<i64>,
    /// Calls let through in the current second of the ramp: (second, calls).
    ramp_used: (i64, u32),
}

impl Breaker {
    /// A closed breaker, as of `now`.
    pub fn new(now: i64) -> Breaker {
        Breaker {
            state: BreakerState::Closed,
            since: now,
            consecutive: 0,
            window: VecDeque::new(),
            open_until: 0,
            opens: 0,
            ramp_from: None,
            ramp_used: (0, 0),
        }
    }

    /// Its state and since when.
    pub fn state(&self) -> (BreakerState, i64) {
        (self.state, self.since)
    }

    /// Whether a call may go now; a `Go` or `Probe` answer counts the call as sent.
    pub fn admit(&mut self, p: &BreakerPolicy, now: i64) -> Admit {
        if !p.enabled {
            return Admit::Go;
        }
        match self.state {
            BreakerState::Open if now >= self.open_until => {
                self.state = BreakerState::HalfOpen;
                self.since = now;
                Admit::Probe
            }
            BreakerState::Open => Admit::Wait(self.open_until),
            // The probe's answer decides; look again after a cool-down in case it never comes.
            BreakerState::HalfOpen => Admit::Wait(now.saturating_add(p.open_ms as i64)),
            BreakerState::Closed => self.ramp(p, now),
        }
    }

    /// After it closed: `ramp_start_per_s` calls in the first second, twice as many in each
    /// next, until `ramp_ms` has passed.
    fn ramp(&mut self, p: &BreakerPolicy, now: i64) -> Admit {
        let Some(from) = self.ramp_from else {
            return Admit::Go;
        };
        let elapsed = now - from;
        if elapsed >= p.ramp_ms as i64 {
            self.ramp_from = None;
            return Admit::Go;
        }
        let second = elapsed / 1000;
        let allowed = u64::from(p.ramp_start_per_s).saturating_mul(1 << second.clamp(0, 40));
        if self.ramp_used.0 != second {
            self.ramp_used = (second, 0);
        }
        if u64::from(self.ramp_used.1) < allowed {
            self.ramp_used.1 += 1;
            Admit::Go
        } else {
            Admit::Wait(from + (second + 1) * 1000)
        }
    }

    /// Records an answer: `unknown` (a timeout, a refused connection, a 5xx) or not (any
    /// answer that says the service is there, 409 and 422 included); `probe`: it was the probe.
    /// Answers whether the state changed.
    pub fn record(&mut self, p: &BreakerPolicy, now: i64, unknown: bool, probe: bool) -> bool {
        self.count(p, now, unknown);
        if !p.enabled {
            return false;
        }
        if probe && self.state == BreakerState::HalfOpen {
            if unknown {
                self.open(p, now);
            } else {
                self.state = BreakerState::Closed;
                self.since = now;
                self.opens = 0;
                self.consecutive = 0;
                self.window.clear();
                self.ramp_from = Some(now);
                self.ramp_used = (0, 0);
            }
            return true;
        }
        if self.state != BreakerState::Closed {
            // Sent before it opened: counted, but the cool-down decides.
            return false;
        }
        let (calls, bad) = self
            .window
            .iter()
            .fold((0u32, 0u32), |(c, b), w| (c + w.1, b + w.2));
        let rate_tripped =
            calls >= p.min_calls && f64::from(bad) > p.failure_rate * f64::from(calls);
        if self.consecutive >= p.consecutive_failures || rate_tripped {
            self.open(p, now);
            return true;
        }
        false
    }

    /// The probe went without an answer (its call was dropped: the lease lost, a stop): the
    /// next call may probe at once, rather than everyone waiting for an answer that never comes.
    /// Answers whether the state changed.
    pub fn probe_lost(&mut self, now: i64) -> bool {
        if self.state != BreakerState::HalfOpen {
            return false;
        }
        self.state = BreakerState::Open;
        self.since = now;
        self.open_until = now;
        true
    }

    fn open(&mut self, p: &BreakerPolicy, now: i64) {
        let period = p
            .open_ms
            .saturating_mul(1 << self.opens.min(20))
            .min(p.max_open_ms);
        self.opens = self.opens.saturating_add(1);
        self.state = BreakerState::Open;
        self.since = now;
        self.open_until = now.saturating_add(period as i64);
        self.ramp_from = None;
    }

    fn count(&mut self, p: &BreakerPolicy, now: i64, unknown: bool) {
        self.consecutive = if unknown { self.consecutive + 1 } else { 0 };
        let second = now.div_euclid(1000);
        match self.window.back_mut() {
            Some(w) if w.0 == second => {
                w.1 += 1;
                w.2 += u32::from(unknown);
            }
            _ => self.window.push_back((second, 1, u32::from(unknown))),
        }
        let oldest = second - (p.window_ms as i64 / 1000).max(1);
        while self.window.front().is_some_and(|w| w.0 <= oldest) {
            self.window.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_000_000;

    fn policy() -> BreakerPolicy {
        BreakerPolicy::default()
    }

    #[test]
    fn unknown_outcomes_in_a_row_open_it_and_business_answers_never_do() {
        let p = policy();
        let mut b = Breaker::new(T);
        for i in 0..100 {
            // A 409 or a success in between resets the run.
            assert!(!b.record(&p, T + i, i % 4 == 2, false));
        }
        for i in 0..4 {
            assert!(!b.record(&p, T + 200 + i, true, false));
        }
        assert!(
            b.record(&p, T + 300, true, false),
            "the fifth in a row opens it"
        );
        assert_eq!(b.state(), (BreakerState::Open, T + 300));
        assert_eq!(b.admit(&p, T + 301), Admit::Wait(T + 300 + 5_000));
    }

    #[test]
    fn a_high_failure_rate_opens_it_once_enough_calls_were_seen() {
        let p = policy();
        let mut b = Breaker::new(T);
        // Every other call unknown: never 5 in a row; 3 of 4 (75 %) once 20 answers are in.
        let mut opened_at = None;
        for i in 0..40 {
            if b.record(&p, T + i * 10, i % 4 != 0, false) {
                opened_at = Some(i);
                break;
            }
        }
        assert_eq!(opened_at, Some(19), "at the 20th answer");
        // A rate below the threshold over a long time never opens it.
        let mut b = Breaker::new(T);
        for i in 0..1000 {
            assert!(!b.record(&p, T + i * 100, i % 3 == 0, false), "{i}");
        }
    }

    #[test]
    fn one_probe_after_the_cool_down_decides_and_failures_open_it_for_longer() {
        let p = policy();
        let mut b = Breaker::new(T);
        for i in 0..5 {
            b.record(&p, T + i, true, false);
        }
        let open_at = T + 4;
        assert_eq!(b.admit(&p, open_at + 4_999), Admit::Wait(open_at + 5_000));
        assert_eq!(b.admit(&p, open_at + 5_000), Admit::Probe);
        assert_eq!(b.state().0, BreakerState::HalfOpen);
        // Only one probe: the others wait for its answer.
        assert!(matches!(b.admit(&p, open_at + 5_001), Admit::Wait(_)));
        // It fails: open again, for twice as long.
        assert!(b.record(&p, open_at + 5_100, true, true));
        assert_eq!(
            b.admit(&p, open_at + 5_101),
            Admit::Wait(open_at + 5_100 + 10_000)
        );
        // A late answer of a call sent before it opened changes nothing.
        assert!(!b.record(&p, open_at + 5_200, false, false));
        assert_eq!(b.state().0, BreakerState::Open);
        // The cool-down stops doubling at max_open_ms.
        let mut at = open_at + 15_100;
        for _ in 0..10 {
            assert_eq!(b.admit(&p, at), Admit::Probe);
            b.record(&p, at, true, true);
            let Admit::Wait(until) = b.admit(&p, at + 1) else {
                panic!("open")
            };
            assert!(until - at <= 60_000);
            at = until;
        }
    }

    #[test]
    fn after_closing_the_waiting_calls_are_released_at_a_rate_that_ramps_up() {
        let p = policy();
        let mut b = Breaker::new(T);
        for i in 0..5 {
            b.record(&p, T + i, true, false);
        }
        let t = T + 4 + 5_000;
        assert_eq!(b.admit(&p, t), Admit::Probe);
        assert!(b.record(&p, t + 50, false, true));
        assert_eq!(b.state(), (BreakerState::Closed, t + 50));
        let closed = t + 50;
        // Second by second: 10, 20, 40, 80, 160 calls, then no limit.
        for (second, allowed) in [(0, 10), (1, 20), (2, 40), (3, 80), (4, 160)] {
            let now = closed + second * 1000 + 10;
            for _ in 0..allowed {
                assert_eq!(b.admit(&p, now), Admit::Go, "second {second}");
            }
            assert_eq!(b.admit(&p, now), Admit::Wait(closed + (second + 1) * 1000));
        }
        for _ in 0..10_000 {
            assert_eq!(b.admit(&p, closed + 5_000), Admit::Go);
        }
    }

    #[test]
    fn a_probe_lost_without_an_answer_lets_the_next_call_probe() {
        let p = policy();
        let mut b = Breaker::new(T);
        for i in 0..5 {
            b.record(&p, T + i, true, false);
        }
        assert_eq!(b.admit(&p, T + 5_004), Admit::Probe);
        assert!(matches!(b.admit(&p, T + 5_005), Admit::Wait(_)));
        assert!(b.probe_lost(T + 5_006));
        assert_eq!(b.admit(&p, T + 5_006), Admit::Probe, "a new probe at once");
        assert!(
            !Breaker::new(T).probe_lost(T),
            "only a half-open breaker has a probe out"
        );
    }

    #[test]
    fn a_disabled_breaker_lets_every_call_go() {
        let p = BreakerPolicy {
            enabled: false,
            ..policy()
        };
        let mut b = Breaker::new(T);
        for i in 0..100 {
            assert!(!b.record(&p, T + i, true, false));
            assert_eq!(b.admit(&p, T + i), Admit::Go);
        }
    }

    #[test]
    fn the_defaults_are_in_range_and_bad_values_are_named() {
        assert!(policy().problems().is_empty());
        let bad = BreakerPolicy {
            failure_rate: 0.0,
            open_ms: 10_000,
            max_open_ms: 5_000,
            ..policy()
        };
        let fields: Vec<_> = bad.problems().into_iter().map(|x| x.0).collect();
        assert_eq!(fields, ["failure_rate", "max_open_ms"]);
    }
}
