//! `/v1/sagas`: start (with safe retries), dry run, read, wait, list, operator actions.

use crate::client::{encode, millis, reason_body, Client, MAX_RETRY_AFTER, MAX_WAIT};
use crate::error::{Error, Result};
use crate::request::StartRequest;
use crate::types::{DryRun, Page, Saga, SagaStatus};
use reqwest::Method;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Options of [`Client::start`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Hold the start until the saga is settled (succeeded, compensated or stuck) or this has
    /// passed; the saga is returned as last seen either way.
    pub wait: Option<Duration>,
}

/// What [`Client::start`] answers.
#[derive(Debug, Clone)]
pub struct Started {
    /// The saga, as the start answered it (or as the wait last saw it).
    pub saga: Saga,
    /// This call created it (201); false for an existing saga with this id and an identical
    /// request (200), including one that an earlier attempt of this call created but whose
    /// answer was lost.
    pub created: bool,
}

/// Options of [`Client::get`].
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// Add every call of each step (`Step::history`) and `Saga::operator_actions`.
    pub attempts: bool,
    /// Add the request as accepted (`Saga::request`), secret header values `***`.
    pub request: bool,
    /// Hold the answer until the saga ends (succeeded or compensated) or this passes (at most
    /// [`MAX_WAIT`]); a stuck saga is answered at the end of it.
    pub wait: Option<Duration>,
}

/// Filter and page of [`Client::list`].
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Keep sagas in any of these statuses (empty: every status).
    pub status: Vec<SagaStatus>,
    /// Keep sagas of this name.
    pub name: Option<String>,
    /// Page size, 1–500 (none: the service's 50).
    pub limit: Option<u32>,
    /// `Page::next_cursor` of the page before (none: the first page).
    pub cursor: Option<String>,
}

impl Client {
    /// Starts a saga (`POST /v1/sagas`), in full or by definition. `created` is true for a
    /// new saga (201), false for an existing one with this id and an identical request (200);
    /// the same id with another request is a 409 problem.
    ///
    /// A start is sent again (up to `start_retries` times, with a growing wait) only when that
    /// cannot start a second saga:
    /// - a 503 answer, always: the service recorded nothing; its `Retry-After` is the wait
    ///   (at most [`MAX_RETRY_AFTER`]);
    /// - a failure to connect, always: nothing was sent;
    /// - any other transport failure (the request may have arrived and the saga exist) only
    ///   when the request has its own id, which makes the repeat answer 200 with that saga.
    ///
    /// Anything else is returned at once. With `wait`, the start asks the service to hold its
    /// answer, then long-polls as [`Client::wait`] does; once the saga exists, a failed poll
    /// does not fail the start: the saga is returned as last seen.
    pub async fn start(&self, req: &StartRequest, opts: StartOptions) -> Result<Started> {
        let body = encode(req)?;
        let deadline = opts
            .wait
            .filter(|w| !w.is_zero())
            .map(|w| Instant::now() + w);
        let mut attempt = 0;
        let answer = loop {
            let mut query = vec![];
            if let Some(d) = deadline {
                let w = d
                    .saturating_duration_since(Instant::now())
                    .min(self.wait_poll);
                if !w.is_zero() {
                    query.push(("wait_ms", millis(w)));
                }
            }
            let url = self.url(&["v1", "sagas"], &query)?;
            match self
                .send(Method::POST, url, Some(body.clone()), &[200, 201])
                .await
            {
                Ok(a) => break a,
                Err(e)
                    if attempt < self.start_retries && start_retryable(&e, req.id().is_some()) =>
                {
                    let problem = e.problem();
                    let wait = problem
                        .and_then(|p| p.retry_after())
                        .map(|d| d.min(MAX_RETRY_AFTER))
                        .unwrap_or_else(|| self.backoff_wait(attempt));
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let mut saga: Saga = answer.json()?;
        let created = answer.status == 201;
        if let Some(d) = deadline {
            if !saga.is_settled() && Instant::now() < d {
                if let Ok(later) = self.poll(&saga.id, d).await {
                    saga = later;
                }
            }
        }
        Ok(Started { saga, created })
    }

    /// What a start would do, without doing it (`POST /v1/sagas?dry_run=true`): the plan, and
    /// whether each endpoint's host resolves and accepts a connection. A request a start would
    /// refuse gets that problem (400, or 409 for a retired definition version).
    pub async fn dry_run(&self, req: &StartRequest) -> Result<DryRun> {
        let url = self.url(&["v1", "sagas"], &[("dry_run", "true".into())])?;
        self.call(Method::POST, url, Some(req), &[200])
            .await?
            .json()
    }

    /// Reads a saga (`GET /v1/sagas/{id}`): 404 problem for an unknown id, 410 for one
    /// retention purged (`Problem::purged`).
    pub async fn get(&self, id: &str, opts: GetOptions) -> Result<Saga> {
        let mut query = vec![];
        let include: Vec<&str> = [("attempts", opts.attempts), ("request", opts.request)]
            .into_iter()
            .filter_map(|(k, on)| on.then_some(k))
            .collect();
        if !include.is_empty() {
            query.push(("include", include.join(",")));
        }
        if let Some(w) = opts.wait.map(|w| w.min(MAX_WAIT)).filter(|w| !w.is_zero()) {
            query.push(("wait_ms", millis(w)));
        }
        let url = self.url(&["v1", "sagas", id], &query)?;
        self.send(Method::GET, url, None, &[200]).await?.json()
    }

    /// Waits for a saga to settle and returns it: succeeded or compensated (terminal), or
    /// stuck. Stuck is not terminal, but only a person moves it on (`retry`, a skip), so
    /// waiting longer would only wait for them; check `Saga::status`.
    ///
    /// It long-polls (`?wait_ms=`, each request at most the client's `wait_poll`, ≤ 60 s).
    /// When `timeout` passes first, the saga is returned as last seen, not settled, and not
    /// as an error: a slow saga is a state to look at, and the caller has it in hand. Any
    /// error answer (a 404, say) or transport failure is returned at once.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Saga> {
        self.poll(id, Instant::now() + timeout).await
    }

    /// Long-polls saga `id` until it is settled or `deadline` passes (one read at least).
    async fn poll(&self, id: &str, deadline: Instant) -> Result<Saga> {
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(self.wait_poll);
            let began = Instant::now();
            let opts = GetOptions {
                wait: Some(wait),
                ..Default::default()
            };
            let saga = self.get(id, opts).await?;
            if saga.is_settled() || Instant::now() >= deadline {
                return Ok(saga);
            }
            // An answer far sooner than asked (a proxy that does not hold it): do not spin.
            if wait > Duration::from_secs(1) && began.elapsed() < wait / 4 {
                let pause = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_secs(1));
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// One page of sagas, newest first (`GET /v1/sagas`); pass `next_cursor` back as
    /// `ListOptions::cursor` for the next, or use [`Client::sagas`] / [`Client::list_all`].
    pub async fn list(&self, opts: &ListOptions) -> Result<Page> {
        let mut query = vec![];
        if !opts.status.is_empty() {
            let s: Vec<&str> = opts.status.iter().map(SagaStatus::as_str).collect();
            query.push(("status", s.join(",")));
        }
        if let Some(n) = &opts.name {
            query.push(("name", n.clone()));
        }
        if let Some(l) = opts.limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(c) = &opts.cursor {
            query.push(("cursor", c.clone()));
        }
        let url = self.url(&["v1", "sagas"], &query)?;
        self.send(Method::GET, url, None, &[200]).await?.json()
    }

    /// Every saga `opts` selects, newest first, reading page after page (`opts.limit` each).
    /// For a large log prefer [`Client::sagas`], which holds one page at a time.
    pub async fn list_all(&self, opts: ListOptions) -> Result<Vec<Saga>> {
        let mut all = Vec::new();
        let mut it = self.sagas(opts);
        while let Some(s) = it.next().await? {
            all.push(s);
        }
        Ok(all)
    }

    /// Walks every saga `opts` selects, newest first, from `opts.cursor` on, reading a page
    /// when it needs one. Sagas started meanwhile may or may not be seen; none is seen twice.
    pub fn sagas(&self, opts: ListOptions) -> Sagas {
        Sagas {
            client: self.clone(),
            opts,
            page: VecDeque::new(),
            done: false,
        }
    }

    /// Resumes a stuck saga with a fresh retry budget (`POST /v1/sagas/{id}/retry`, admin
    /// scope); 409 problem when it is not stuck. `reason` is kept in its operator actions.
    pub async fn retry(&self, id: &str, reason: Option<&str>) -> Result<Saga> {
        self.operate(id, "retry", reason).await
    }

    /// Stops a running saga going forward: it compensates (`POST /v1/sagas/{id}/abort`, admin
    /// scope); 409 problem when it is not running.
    pub async fn abort(&self, id: &str, reason: Option<&str>) -> Result<Saga> {
        self.operate(id, "abort", reason).await
    }

    /// Posts an operator action, answered 202 with the saga.
    async fn operate(&self, id: &str, action: &str, reason: Option<&str>) -> Result<Saga> {
        let url = self.url(&["v1", "sagas", id, action], &[])?;
        self.call(Method::POST, url, reason_body(reason).as_ref(), &[202])
            .await?
            .json()
    }

    /// The wait before repeat number `attempt + 1` of a start: the backoff doubled per
    /// attempt up to its maximum, taken at random between half and all of it.
    fn backoff_wait(&self, attempt: u32) -> Duration {
        let d = self
            .backoff
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max_backoff);
        d.mul_f64(0.5 + 0.5 * unit_random())
    }
}

/// Whether a failed start may be sent again: see [`Client::start`].
pub(crate) fn start_retryable(e: &Error, has_id: bool) -> bool {
    match e {
        Error::Problem(p) => p.status == 503,
        Error::Transport(t) if t.is_builder() => false,
        Error::Transport(t) if t.is_connect() => true,
        Error::Transport(_) => has_id,
        _ => false,
    }
}

/// A number in [0, 1), random enough to spread the retries of many clients apart.
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState is seeded afresh: no generator crate needed for jitter.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Every saga of a listing, page by page ([`Client::sagas`]).
///
/// ```ignore
/// let mut it = client.sagas(ListOptions { status: vec![SagaStatus::Stuck], ..Default::default() });
/// while let Some(saga) = it.next().await? { … }
/// ```
#[derive(Debug)]
pub struct Sagas {
    client: Client,
    opts: ListOptions,
    page: VecDeque<Saga>,
    done: bool,
}

impl Sagas {
    /// The next saga, reading the next page if needed; none at the end.
    #[allow(clippy::should_implement_trait)] // async: not Iterator::next
    pub async fn next(&mut self) -> Result<Option<Saga>> {
        while self.page.is_empty() {
            if self.done {
                return Ok(None);
            }
            let p = self.client.list(&self.opts).await?;
            self.page = p.items.into();
            self.done = p.next_cursor.is_none();
            self.opts.cursor = p.next_cursor;
        }
        Ok(self.page.pop_front())
    }

    /// The cursor of the page after those read so far (none once the last was read): a walk
    /// can go on later from it, after the current page.
    pub fn cursor(&self) -> Option<&str> {
        self.opts.cursor.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Problem;

    #[test]
    fn only_what_cannot_start_a_second_saga_is_retried() {
        let status = |s| Error::Problem(Problem::of_answer(s, b"", None));
        assert!(start_retryable(&status(503), false));
        for s in [400, 409, 500, 502, 504] {
            assert!(!start_retryable(&status(s), true), "{s}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_even_without_an_id() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let e = reqwest::get(format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap_err();
        assert!(e.is_connect());
        assert!(start_retryable(&Error::Transport(e), false));
    }

    #[test]
    fn backoff_grows_to_its_maximum_with_jitter() {
        let c = Client::builder("http://h")
            .retry_backoff(Duration::from_millis(100), Duration::from_millis(300))
            .build()
            .unwrap();
        for (attempt, top) in [(0, 100), (1, 200), (2, 300), (9, 300)] {
            let w = c.backoff_wait(attempt).as_millis();
            assert!(w >= top / 2 && w <= top, "attempt {attempt}: {w}");
        }
    }
}
