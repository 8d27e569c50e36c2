//! What a saga is made of once its request has been validated: steps, endpoints, retry policies.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whether the saga runs compensations (saga) or try/confirm/cancel (tcc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Actions with compensations.
    Saga,
    /// Try, then confirm all or cancel.
    Tcc,
}

impl Mode {
    /// The wire name of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Saga => "saga",
            Mode::Tcc => "tcc",
        }
    }
}

/// A participant endpoint the orchestrator calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Absolute http(s) URL.
    pub url: String,
    /// HTTP method, upper case.
    pub method: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Request body; the saga payload when the request did not give one.
    pub body: Value,
    /// Durable wait before the call (compensation and cancel only).
    pub delay_ms: u64,
    /// Label for metrics and logs (host:port by default).
    pub service: String,
}

/// Retry policy of one phase of a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Calls allowed in the phase, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff_ms: u64,
    /// Upper bound of any wait.
    pub max_backoff_ms: u64,
    /// Growth factor of the wait per retry.
    pub multiplier: f64,
}

impl RetryPolicy {
    /// The wait before call `calls_made + 1`, before jitter: `min(max, initial × multiplier^(n−1))`.
    pub fn backoff_ms(&self, calls_made: u32) -> u64 {
        let exp = calls_made.saturating_sub(1).min(1024) as i32;
        let raw = self.initial_backoff_ms as f64 * self.multiplier.powi(exp);
        if !raw.is_finite() || raw >= self.max_backoff_ms as f64 {
            self.max_backoff_ms
        } else {
            raw as u64
        }
    }

    /// The wait scaled by a jitter factor, which is clamped into [0.5, 1.0].
    pub fn jittered_backoff_ms(&self, calls_made: u32, jitter: f64) -> u64 {
        let j = if jitter.is_finite() {
            jitter.clamp(0.5, 1.0)
        } else {
            1.0
        };
        (self.backoff_ms(calls_made) as f64 * j) as u64
    }
}

/// Defaults from configuration that a request may leave out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    /// Timeout of one participant call.
    pub call_timeout_ms: u64,
    /// Retry policy of every phase.
    pub retry: RetryPolicy,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            call_timeout_ms: 10_000,
            retry: RetryPolicy {
                max_attempts: 5,
                initial_backoff_ms: 200,
                max_backoff_ms: 30_000,
                multiplier: 2.0,
            },
        }
    }
}

/// One step of a saga, resolved against the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDef {
    /// Unique name within the saga.
    pub name: String,
    /// Saga action, or tcc try.
    pub forward: Endpoint,
    /// Saga compensation (optional), or tcc cancel.
    pub undo: Option<Endpoint>,
    /// Tcc confirm; `None` in saga mode.
    pub confirm: Option<Endpoint>,
    /// Indices of the steps that must succeed first.
    pub deps: Vec<usize>,
    /// Timeout of one call.
    pub timeout_ms: u64,
    /// Retry policy of every phase of this step.
    pub retry: RetryPolicy,
}

/// A validated saga: the unit the state machine runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaDefinition {
    /// Client-chosen id, if any.
    pub id: Option<String>,
    /// Kind of saga, a metric label.
    pub name: String,
    /// Saga or tcc.
    pub mode: Mode,
    /// Default body of every call.
    pub payload: Value,
    /// Deadline of the forward phase, from creation.
    pub timeout_ms: Option<u64>,
    /// The steps, in request order.
    pub steps: Vec<StepDef>,
}

impl SagaDefinition {
    /// For each step, the indices of the steps that depend on it.
    pub fn dependents(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.steps.len()];
        for (i, s) in self.steps.iter().enumerate() {
            for &d in &s.deps {
                out[d].push(i);
            }
        }
        out
    }
}
