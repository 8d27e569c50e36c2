//! Alerts for stuck sagas: an error log line always, and a POST of the alert JSON to
//! `alerts.webhook_url` when configured, retried in the background so that it never blocks
//! (or fails) the saga machinery.

use crate::domain::RetryPolicy;
use serde_json::Value;
use std::time::Duration;

/// The wait between two tries of one alert (the number of tries is `alerts.max_attempts`).
const BACKOFF: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    initial_backoff_ms: 200,
    max_backoff_ms: 6_400,
    multiplier: 2.0,
};

/// Sends alerts to the configured webhook.
#[derive(Clone)]
pub struct Alerter {
    client: reqwest::Client,
    url: Option<String>,
    max_attempts: u32,
    timeout: Duration,
}

impl Alerter {
    /// An alerter posting to `url` (none: log only), trusting the same roots as participant calls.
    pub fn new(
        url: Option<String>,
        max_attempts: u32,
        timeout_ms: u64,
        roots: &crate::outbound::ExtraRoots,
        policy: &std::sync::Arc<crate::domain::OutboundPolicy>,
    ) -> Self {
        Alerter {
            client: roots.client_builder(policy).build().unwrap_or_default(),
            url: url.filter(|u| !u.trim().is_empty()),
            max_attempts: max_attempts.max(1),
            timeout: Duration::from_millis(timeout_ms.max(1)),
        }
    }

    /// Posts `alert` in a background task, retrying with backoff on any non-2xx or error.
    pub fn raise(&self, alert: Value) {
        let Some(url) = self.url.clone() else { return };
        let (client, max, timeout) = (self.client.clone(), self.max_attempts, self.timeout);
        actix_web::rt::spawn(async move {
            let saga_id = alert["saga_id"].as_str().unwrap_or("").to_string();
            for attempt in 1..=max {
                let res = client.post(&url).timeout(timeout).json(&alert).send().await;
                match res {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => {
                        tracing::warn!(saga_id = %saga_id, attempt, status = r.status().as_u16(), "alert webhook refused the alert")
                    }
                    Err(e) => {
                        if let Some(why) =
                            crate::outbound::blocked(&crate::outbound::error_chain(&e))
                        {
                            tracing::error!(saga_id = %saga_id, error = %why, "alert webhook refused by the outbound policy; not retried");
                            return;
                        }
                        tracing::warn!(saga_id = %saga_id, attempt, error = %e, "alert webhook unreachable")
                    }
                }
                if attempt < max {
                    let wait = BACKOFF.backoff_ms(attempt);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
            }
            tracing::error!(saga_id = %saga_id, "alert webhook gave up; the alert is only in the logs and metrics");
        });
    }
}
