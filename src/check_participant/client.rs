//! The checker's HTTP side: sends one call with the headers the orchestrator would send (or
//! deliberately wrong ones), and reads the participant's probe.

use crate::domain::Phase;
use serde_json::Value;
use std::time::Duration;

/// The participant under check.
#[derive(Debug, Clone)]
pub struct Target {
    /// Action URL (saga mode).
    pub action: Option<String>,
    /// Compensation URL (saga mode).
    pub compensation: Option<String>,
    /// Try URL (TCC).
    pub try_: Option<String>,
    /// Confirm URL (TCC).
    pub confirm: Option<String>,
    /// Cancel URL (TCC).
    pub cancel: Option<String>,
    /// Body the participant accepts.
    pub body: Value,
    /// Body it refuses with 409.
    pub reject_body: Option<Value>,
    /// State digest URL.
    pub probe: Option<String>,
    /// X-Saga-Step.
    pub step: String,
    /// Rounds of the race rule.
    pub runs: u32,
    /// Extra headers on every call.
    pub headers: Vec<(String, String)>,
    /// Timeout of one call.
    pub timeout: Duration,
}

/// What the participant answered: a status and body, or why there was none.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An HTTP answer; the body as JSON when it parses, else as a string.
    Http(u16, Value),
    /// No answer (refused, reset, timeout).
    None(String),
}

impl Answer {
    /// The status, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Http(s, _) => Some(*s),
            Answer::None(_) => None,
        }
    }

    /// A 2xx.
    pub fn ok(&self) -> bool {
        matches!(self.status(), Some(200..=299))
    }

    /// A business refusal (409/422), which the orchestrator reads as "nothing done".
    pub fn refused(&self) -> bool {
        matches!(self.status(), Some(409 | 422))
    }

    /// Short text for the report.
    pub fn describe(&self) -> String {
        match self {
            Answer::Http(s, b) => {
                let b = b.to_string();
                let b: String = b.chars().take(120).collect();
                format!("{s} {b}")
            }
            Answer::None(e) => format!("no answer ({e})"),
        }
    }
}

/// How the protocol headers of a call are sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Headers {
    /// As the orchestrator sends them.
    Proper,
    /// None of the saga headers.
    Missing,
    /// An `Idempotency-Key` that does not match id/step/phase.
    WrongKey,
}

/// Sends the checker's calls.
pub struct Client {
    http: reqwest::Client,
    /// The participant.
    pub target: Target,
}

impl Client {
    /// A client for `target` (no redirects: the orchestrator follows none either).
    pub fn new(target: Target) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(target.timeout)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Client { http, target })
    }

    /// The URL of `phase`, if given.
    pub fn url(&self, phase: Phase) -> Option<&str> {
        let t = &self.target;
        match phase {
            Phase::Action => t.action.as_deref(),
            Phase::Compensation => t.compensation.as_deref(),
            Phase::Try => t.try_.as_deref(),
            Phase::Confirm => t.confirm.as_deref(),
            Phase::Cancel => t.cancel.as_deref(),
        }
    }

    /// Sends `phase` of saga `saga` with `body` (the target's body when None).
    pub async fn call(
        &self,
        saga: &str,
        phase: Phase,
        body: Option<&Value>,
        headers: Headers,
    ) -> Answer {
        let Some(url) = self.url(phase) else {
            return Answer::None(format!("no URL for {}", phase.as_str()));
        };
        let body = body.unwrap_or(&self.target.body);
        let mut req = self.http.post(url).json(body);
        for (k, v) in &self.target.headers {
            req = req.header(k, v);
        }
        let step = &self.target.step;
        let key = format!("{saga}/{step}/{}", phase.as_str());
        if headers != Headers::Missing {
            let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            req = req
                .header("x-saga-id", saga)
                .header("x-saga-step", step)
                .header("x-saga-phase", phase.as_str())
                .header("x-saga-attempt", "1")
                .header("x-saga-created-at", created)
                .header("x-saga-instance", "check-participant")
                .header(
                    "idempotency-key",
                    if headers == Headers::WrongKey {
                        format!("{saga}/other-step/{}", phase.as_str())
                    } else {
                        key
                    },
                );
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.unwrap_or_default();
                let body = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
                Answer::Http(status, body)
            }
            Err(e) => Answer::None(crate::outbound::error_chain(&e).join(": ")),
        }
    }

    /// The probe's digest, `None` without a probe; an error when it does not answer 2xx JSON.
    pub async fn probe(&self) -> Option<Result<Value, String>> {
        let url = self.target.probe.as_deref()?;
        let got = async {
            let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("the probe answered {status}"));
            }
            resp.json::<Value>()
                .await
                .map_err(|e| format!("the probe's answer is not JSON: {e}"))
        };
        Some(got.await)
    }
}

/// A fresh saga id for one scenario.
pub fn fresh_saga() -> String {
    format!("check-{}", uuid::Uuid::now_v7())
}
