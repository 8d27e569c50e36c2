//! Endpoint headers that carry credentials: sent to participants as given, but shown as `***`
//! wherever the service shows a saga's request (the API's view, and so the console).

use serde_json::Value;

/// Headers that are always secret (lower case).
pub const ALWAYS_SECRET: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

/// What a secret value is shown as.
pub const MASK: &str = "***";

/// The endpoint fields of a step in a request, which may hold headers.
pub const ENDPOINTS: [&str; 5] = ["action", "compensation", "try", "confirm", "cancel"];

/// Every header value of every endpoint of a request (as accepted), to read or rewrite.
pub fn request_headers(request: &mut Value) -> impl Iterator<Item = (&String, &mut Value)> {
    fn step_headers(steps: &mut Value) -> Vec<(&String, &mut Value)> {
        steps
            .as_array_mut()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
            .flat_map(|o| {
                o.iter_mut()
                    .filter(|(k, _)| ENDPOINTS.contains(&k.as_str()))
                    .filter_map(|(_, ep)| ep.get_mut("headers").and_then(Value::as_object_mut))
                    .flatten()
            })
            .collect()
    }
    request
        .as_object_mut()
        .into_iter()
        .flatten()
        .flat_map(|(k, v)| match k.as_str() {
            "steps" => step_headers(v),
            // A DTM transaction's headers for every branch.
            "branch_headers" => v.as_object_mut().into_iter().flatten().collect(),
            _ => Vec::new(),
        })
}

/// The secret header names: [`ALWAYS_SECRET`] and `participant.secret_headers`.
#[derive(Debug, Clone, Default)]
pub struct SecretHeaders(Vec<String>);

impl SecretHeaders {
    /// The fixed names plus `extra` (any case).
    pub fn new(extra: &[String]) -> SecretHeaders {
        SecretHeaders(
            extra
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
        )
    }

    /// Whether header `name` is secret.
    pub fn is_secret(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        ALWAYS_SECRET.contains(&name.as_str()) || self.0.contains(&name)
    }

    /// An endpoint as an operator's audit shows it: url, method, headers (secret values
    /// masked) and body.
    pub fn endpoint_view(&self, e: &super::Endpoint) -> Value {
        let headers: serde_json::Map<String, Value> = e
            .headers
            .iter()
            .map(|(k, v)| {
                let v = if self.is_secret(k) { MASK } else { v.as_str() };
                (k.clone(), Value::String(v.to_string()))
            })
            .collect();
        serde_json::json!({"url": e.url, "method": e.method, "headers": headers, "body": e.body})
    }

    /// A copy of a saga request (as accepted), or of a stored definition, with every secret
    /// header value masked (a definition's payload reference is no secret: it stays).
    pub fn redact_request(&self, request: &Value) -> Value {
        let mut out = request.clone();
        for (name, value) in request_headers(&mut out) {
            if value.is_string() && self.is_secret(name) {
                *value = Value::String(MASK.into());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_headers_are_masked_in_every_endpoint() {
        let s = SecretHeaders::new(&["X-Vault-Token".into()]);
        let req = json!({"name": "n", "payload": {"authorization": "not a header"}, "steps": [
            {"name": "a", "action": {"url": "http://h/a", "headers": {"Authorization": "Bearer x", "X-Trace": "t1"}},
             "compensation": {"url": "http://h/c", "headers": {"cookie": "c", "x-vault-token": "v"}}},
            {"name": "b", "try": {"url": "http://h/t", "headers": {"X-Api-Key": "k", "Proxy-Authorization": "p"}}}
        ]});
        let r = s.redact_request(&req);
        assert_eq!(
            r["steps"][0]["action"]["headers"],
            json!({"Authorization": "***", "X-Trace": "t1"})
        );
        assert_eq!(
            r["steps"][0]["compensation"]["headers"],
            json!({"cookie": "***", "x-vault-token": "***"})
        );
        assert_eq!(
            r["steps"][1]["try"]["headers"],
            json!({"X-Api-Key": "***", "Proxy-Authorization": "***"})
        );
        assert_eq!(r["payload"], req["payload"], "only headers are touched");
        assert_eq!(
            req["steps"][0]["action"]["headers"]["Authorization"], "Bearer x",
            "the original stays"
        );
    }
}
