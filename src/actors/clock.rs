//! The wall clock the shell reads (ms since the Unix epoch), behind a trait so that tests can
//! drive it with tokio's paused time. Waits and timeouts use `tokio::time` directly.

/// Where the shell reads the time of day.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's clock: what every running service uses.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves with tokio's time (paused and advanced in tests) from `start_ms`.
pub struct TokioClock {
    start_ms: i64,
    at: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start_ms` now.
    pub fn new(start_ms: i64) -> Self {
        TokioClock {
            start_ms,
            at: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.start_ms + self.at.elapsed().as_millis() as i64
    }
}
