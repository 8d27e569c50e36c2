//! The client, its builder, and the one way every call is sent and its answer read.

use crate::error::{Error, Problem, Result};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use url::Url;

/// How many times [`Client::start`] sends a start again, after the first attempt, when that
/// is safe (`ClientBuilder::start_retries` changes it).
pub const DEFAULT_START_RETRIES: u32 = 4;

/// The longest one long-poll request of [`Client::wait`] holds by default
/// (`ClientBuilder::wait_poll` changes it).
pub const DEFAULT_WAIT_POLL: Duration = Duration::from_secs(20);

/// The longest `wait_ms` the service accepts on one request; longer waits take several.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The longest a 503's `Retry-After` is honoured: a larger figure is waited this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Names this client in the service's access log.
const AGENT: &str = concat!("saga-client-rust/", env!("CARGO_PKG_VERSION"));

/// A client of one saga-orchestrator service. Cheap to clone (clones share connections).
#[derive(Clone)]
pub struct Client {
    pub(crate) base: Url,
    pub(crate) http: reqwest::Client,
    pub(crate) auth: Option<HeaderValue>,
    pub(crate) start_retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) wait_poll: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token: a client ends up in logs.
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.auth.is_some())
            .field("start_retries", &self.start_retries)
            .finish_non_exhaustive()
    }
}

/// Settings of a [`Client`]; [`Client::builder`] makes one.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    token: Option<String>,
    http: Option<reqwest::Client>,
    start_retries: u32,
    backoff: Duration,
    max_backoff: Duration,
    wait_poll: Duration,
}

impl ClientBuilder {
    /// Sends `Authorization: Bearer TOKEN` on every request (a service with `[[auth.tokens]]`
    /// answers 401 without one, 403 when it lacks a route's scope).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sends requests with this `reqwest::Client` (its TLS roots, proxy, timeouts). The default
    /// has no overall timeout, since long polls hold an answer up to a minute: a timeout
    /// shorter than [`ClientBuilder::wait_poll`] cuts waits short with a transport error.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// How many times a start is sent again after its first attempt, when safe (0: never).
    pub fn start_retries(mut self, n: u32) -> Self {
        self.start_retries = n;
        self
    }

    /// The wait before the first repeated start (default 200 ms), doubled per repeat up to
    /// `max` (default 5 s), each taken at random between half and all of it; a 503's
    /// `Retry-After` replaces it for that wait.
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// The longest one request of a wait holds (1 s to 60 s, default 20 s). The service ends a
    /// long poll as soon as the saga ends, but not when it becomes stuck: a shorter poll sees
    /// a stuck saga sooner, for more requests.
    pub fn wait_poll(mut self, d: Duration) -> Self {
        self.wait_poll = d.clamp(Duration::from_secs(1), MAX_WAIT);
        self
    }

    /// The client; an error for a base URL that is not an absolute http(s) URL without query,
    /// or a token that cannot be a header value.
    pub fn build(self) -> Result<Client> {
        let mut base = Url::parse(&self.base)
            .map_err(|e| Error::Invalid(format!("base URL {:?}: {e}", self.base)))?;
        if !matches!(base.scheme(), "http" | "https")
            || !base.has_host()
            || base.query().is_some()
            || base.fragment().is_some()
        {
            return Err(Error::Invalid(format!(
                "base URL {:?}: must be an absolute http or https URL without query or fragment",
                self.base
            )));
        }
        // A path is kept as a prefix (a service behind a proxy); calls append to it.
        let path = base.path().trim_end_matches('/').to_string();
        base.set_path(&path);
        let auth = match self.token {
            None => None,
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| Error::Invalid("the token is not a valid header value".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(Client {
            base,
            http: self.http.unwrap_or_default(),
            auth,
            start_retries: self.start_retries,
            backoff: self.backoff,
            max_backoff: self.max_backoff,
            wait_poll: self.wait_poll,
        })
    }
}

/// An answer whose status the caller expected, its body read.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// `METHOD /path`, for errors.
    pub what: String,
}

impl Answer {
    /// The body as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            what: self.what.clone(),
            status: self.status,
            source,
        })
    }
}

impl Client {
    /// A client of the service at `base_url` (e.g. `http://127.0.0.1:8080`) with the default
    /// settings.
    pub fn new(base_url: impl Into<String>) -> Result<Client> {
        Client::builder(base_url).build()
    }

    /// A builder for a client of the service at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base_url.into(),
            token: None,
            http: None,
            start_retries: DEFAULT_START_RETRIES,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            wait_poll: DEFAULT_WAIT_POLL,
        }
    }

    /// The service's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of `segments` (each escaped as one segment) under the base, with `query`.
    /// `.` and `..` are refused: every URL parser walks them (even escaped), so no request
    /// could name them, and `sagas/.` would read the listing instead.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url> {
        let mut u = self.base.clone();
        let mut path = u.path().trim_end_matches('/').to_string();
        for s in segments {
            if *s == "." || *s == ".." || s.is_empty() {
                return Err(Error::Invalid(format!(
                    "{s:?} cannot be a path segment of a request"
                )));
            }
            path.push('/');
            path.push_str(&escape_segment(s));
        }
        u.set_path(&path);
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        Ok(u)
    }

    /// Sends one request (with `body` as JSON, if any). A status in `ok` is the answer; any
    /// other becomes [`Error::Problem`]; no answer is [`Error::Transport`].
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        ok: &[u16],
    ) -> Result<Answer> {
        let what = format!("{method} {}", url.path());
        let mut req = self
            .http
            .request(method, url)
            .header(ACCEPT, "application/json, application/problem+json")
            .header(USER_AGENT, AGENT);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        if let Some(b) = body {
            req = req.header(CONTENT_TYPE, "application/json").body(b);
        }
        let resp = req.send().await.map_err(Error::Transport)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        let body = resp.bytes().await.map_err(Error::Transport)?.to_vec();
        if !ok.contains(&status) {
            return Err(Error::Problem(Problem::of_answer(
                status,
                &body,
                retry_after,
            )));
        }
        Ok(Answer { status, body, what })
    }

    /// [`Client::send`] with `body` serialized.
    pub(crate) async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        ok: &[u16],
    ) -> Result<Answer> {
        let body = body.map(encode).transpose()?;
        self.send(method, url, body, ok).await
    }
}

/// A request body as JSON bytes.
pub(crate) fn encode<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| Error::Invalid(format!("encoding the request: {e}")))
}

/// `{"reason": …}` of an operator action, or no body.
pub(crate) fn reason_body(reason: Option<&str>) -> Option<serde_json::Value> {
    reason.map(|r| serde_json::json!({ "reason": r }))
}

/// `d` in whole milliseconds, rounded up, for a `*_ms` query parameter.
pub(crate) fn millis(d: Duration) -> String {
    d.as_nanos().div_ceil(1_000_000).to_string()
}

/// One path segment, percent-encoded: everything but RFC 3986's unreserved characters and
/// `:` (ids may hold it).
fn escape_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b':' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_prefix_and_escape_each_segment() {
        let c = Client::new("http://h:1/base/").unwrap();
        assert_eq!(
            c.url(&["v1", "sagas", "a b/c.d"], &[("wait_ms", "5".into())])
                .unwrap()
                .as_str(),
            "http://h:1/base/v1/sagas/a%20b%2Fc.d?wait_ms=5"
        );
        for s in [".", "..", ""] {
            assert!(
                matches!(c.url(&["v1", s], &[]), Err(Error::Invalid(_))),
                "{s:?}"
            );
        }
        let c = Client::new("http://h:1").unwrap();
        let u = c.url(&["v1", "sagas"], &[]).unwrap();
        assert_eq!(u.as_str(), "http://h:1/v1/sagas");
    }

    #[test]
    fn unusable_settings_are_refused() {
        assert!(matches!(Client::new("ftp://h"), Err(Error::Invalid(_))));
        assert!(matches!(
            Client::new("http://h/?x=1"),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(Client::new("not a url"), Err(Error::Invalid(_))));
        let e = Client::builder("http://h").token("a\nb").build();
        assert!(matches!(e, Err(Error::Invalid(_))));
        let c = Client::builder("http://h").token("secret").build().unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn waits_round_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::from_micros(1)), "1");
        assert_eq!(millis(Duration::from_millis(1500)), "1500");
    }
}
