//! The HTTP client that calls participants and classifies their answers (docs/api.md, "What a
//! participant receives and answers").

use crate::domain::OutboundPolicy;
use crate::domain::{CallBody, CallOutcome, Endpoint, Phase, Protocol};
use crate::outbound::{blocked, check_literal, error_chain, is_tls_failure, ExtraRoots};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use std::sync::Arc;
use std::time::Duration;

/// What one call needs besides its endpoint.
#[derive(Debug, Clone)]
pub struct CallSpec<'a> {
    /// Saga id.
    pub saga_id: &'a str,
    /// Step name.
    pub step: &'a str,
    /// Phase of the call.
    pub phase: Phase,
    /// Attempt number in the phase.
    pub attempt: u32,
    /// Where to send.
    pub endpoint: &'a Endpoint,
    /// What to send (the endpoint's body or the saga payload).
    pub body: CallBody<'a>,
    /// How the answer is read (the saga's protocol).
    pub protocol: Protocol,
    /// When the saga was accepted (ms), sent as `X-Saga-Created-At`.
    pub created_at: i64,
    /// Timeout of the whole call.
    pub timeout_ms: u64,
    /// The instance sending it (its lease token), sent as `X-Saga-Instance`.
    pub instance: &'a str,
    /// W3C `traceparent` of this call (the saga's trace, this call's own span id).
    pub traceparent: &'a str,
    /// The caller's `tracestate`, passed on unchanged.
    pub tracestate: Option<&'a str>,
}

/// The classified answer of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    /// Success, business failure or unknown.
    pub outcome: CallOutcome,
    /// HTTP status, when an answer came.
    pub http_status: Option<u16>,
    /// What went wrong, for people.
    pub error: Option<String>,
}

/// A short reason from a participant's error body: a JSON `error`/`detail`/`message`/`title`
/// field if there is one, else the text, cut to 200 characters, without NUL characters (which
/// PostgreSQL's text and JSONB refuse: the transition carrying it could not be written).
pub fn reason_from_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let from_json = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["error", "detail", "message", "title", "reason"]
                .iter()
                .find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(str::to_string))
        });
    let r = from_json.unwrap_or_else(|| text.trim().to_string());
    r.chars().filter(|c| *c != '\0').take(200).collect()
}

/// Permission to have one call in flight (released when dropped).
pub struct Slot(#[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>);

/// One pooled HTTP client for every participant call.
#[derive(Clone)]
pub struct Participant {
    client: reqwest::Client,
    /// Where calls may go: a literal address is checked here, a name when it is resolved.
    policy: Arc<OutboundPolicy>,
    /// Calls allowed in flight at once; the others wait for a slot (not on their timeout).
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Participant {
    /// Builds the pooled client, trusting the platform's roots and `roots`, sending at most
    /// `max_in_flight` calls at once (a restart with 100,000 due sagas must not open 100,000
    /// connections).
    pub fn new(
        roots: &ExtraRoots,
        policy: Arc<OutboundPolicy>,
        max_in_flight: usize,
    ) -> Result<Self, String> {
        let client = roots
            .client_builder(&policy)
            .pool_max_idle_per_host(max_in_flight.min(1024))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the participant HTTP client: {e}"))?;
        Ok(Participant {
            client,
            policy,
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1))),
        })
    }

    /// Waits for one of the `max_in_flight` slots; a call needs one.
    pub async fn slot(&self) -> Slot {
        // The semaphore is never closed, so acquiring cannot fail.
        Slot(self.slots.clone().acquire_owned().await.ok())
    }

    /// Makes one call in `slot` and classifies its answer; never fails, an error is an unknown
    /// outcome.
    pub async fn call(&self, slot: Slot, spec: &CallSpec<'_>) -> CallResult {
        let _slot = slot;
        let ep = spec.endpoint;
        if let Err(why) = check_literal(&self.policy, &ep.url) {
            return blocked_call(why);
        }
        let method =
            reqwest::Method::from_bytes(ep.method.as_bytes()).unwrap_or(reqwest::Method::POST);
        let mut headers = HeaderMap::new();
        for (k, v) in &ep.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let protocol = [
            ("x-saga-id", spec.saga_id.to_string()),
            ("x-saga-step", spec.step.to_string()),
            ("x-saga-phase", spec.phase.as_str().to_string()),
            ("x-saga-attempt", spec.attempt.to_string()),
            (
                "idempotency-key",
                format!("{}/{}/{}", spec.saga_id, spec.step, spec.phase.as_str()),
            ),
            (
                "x-saga-created-at",
                crate::api::resource::rfc3339(spec.created_at),
            ),
            ("x-saga-instance", spec.instance.to_string()),
            ("x-saga-timeout-ms", spec.timeout_ms.to_string()),
            ("traceparent", spec.traceparent.to_string()),
        ];
        for (k, v) in protocol {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.insert(HeaderName::from_static(k), v);
            }
        }
        if let Some(Ok(v)) = spec.tracestate.map(HeaderValue::from_str) {
            headers.insert(HeaderName::from_static("tracestate"), v);
        }
        let body = match spec.body {
            CallBody::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
            CallBody::Raw(raw) => raw.as_bytes().to_vec(),
        };
        let req = self
            .client
            .request(method, &ep.url)
            .headers(headers)
            .timeout(Duration::from_millis(spec.timeout_ms))
            .body(body);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => match blocked(&error_chain(&e)) {
                Some(why) => return blocked_call(why),
                None => return unknown(describe(&e, spec)),
            },
        };
        let status = resp.status().as_u16();
        // A success's body is read only where the protocol needs it (DTM: FAILURE in a 200).
        let ok = (200..300).contains(&status);
        let body = if ok && !spec.protocol.reads_success_body() {
            Default::default()
        } else {
            resp.bytes().await.unwrap_or_default()
        };
        let outcome = spec.protocol.classify(status, &body);
        if outcome == CallOutcome::Success {
            return CallResult {
                outcome,
                http_status: Some(status),
                error: None,
            };
        }
        let reason = reason_from_body(&body);
        let error = match outcome {
            CallOutcome::Failure if !reason.is_empty() => format!("{status} {reason}"),
            _ if reason.is_empty() => format!("{status} from {}", ep.service),
            _ => format!("{status} from {}: {reason}", ep.service),
        };
        CallResult {
            outcome,
            http_status: Some(status),
            error: Some(error),
        }
    }
}

/// A call the outbound policy refuses: a definite failure, never retried (a retry would be
/// refused the same way), with the policy's reason as its error.
fn blocked_call(why: String) -> CallResult {
    CallResult {
        outcome: CallOutcome::Failure,
        http_status: None,
        error: Some(why),
    }
}

fn unknown(error: String) -> CallResult {
    CallResult {
        outcome: CallOutcome::Unknown,
        http_status: None,
        error: Some(error),
    }
}

fn describe(e: &reqwest::Error, spec: &CallSpec<'_>) -> String {
    let svc = &spec.endpoint.service;
    if e.is_timeout() {
        return format!("timeout after {} ms calling {svc}", spec.timeout_ms);
    }
    let chain = error_chain(e);
    // The innermost message says what actually went wrong (refused, reset, bad certificate).
    let cause = chain.last().cloned().unwrap_or_default();
    if is_tls_failure(&chain) {
        format!("TLS handshake with {svc} failed: {cause}")
    } else if e.is_connect() {
        format!("cannot connect to {svc}: {cause}")
    } else {
        format!("call to {svc} failed: {}", chain.join(": "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_from_json_fields_or_text() {
        assert_eq!(
            reason_from_body(br#"{"error":"insufficient funds"}"#),
            "insufficient funds"
        );
        assert_eq!(reason_from_body(b"  plain no  "), "plain no");
        assert_eq!(reason_from_body(&[b'x'; 500]).len(), 200);
        assert_eq!(reason_from_body(b"no\0 funds"), "no funds");
        assert_eq!(
            reason_from_body(br#"{"error":"no\u0000 funds"}"#),
            "no funds"
        );
    }
}
