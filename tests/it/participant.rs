//! A scripted participant: a real HTTP server on loopback that records every call and answers
//! per path from a script (status, delay, hang, dropped connection), then a default.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to answer one call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status and JSON body after `delay_ms`.
    Status {
        code: u16,
        body: Value,
        delay_ms: u64,
    },
    /// Never answer.
    Hang,
    /// Close the connection without an answer.
    Drop,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status {
            code: 200,
            body: serde_json::json!({"ok": true}),
            delay_ms: 0,
        }
    }
    pub fn code(code: u16) -> Reply {
        Reply::Status {
            code,
            body: serde_json::json!({"error": format!("scripted {code}")}),
            delay_ms: 0,
        }
    }
    /// A 409 "no" (a business failure) after `delay_ms`.
    pub fn refuse(delay_ms: u64) -> Reply {
        Reply::Status {
            code: 409,
            body: serde_json::json!({"error": "no"}),
            delay_ms,
        }
    }
    pub fn slow(delay_ms: u64) -> Reply {
        Reply::Status {
            code: 200,
            body: serde_json::json!({"ok": true}),
            delay_ms,
        }
    }
}

/// One call as the participant saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    /// The query string ("" when none).
    pub query: String,
    pub method: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
    pub at: Instant,
}

impl Call {
    pub fn header(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct Inner {
    scripts: HashMap<String, VecDeque<Reply>>,
    defaults: HashMap<String, Reply>,
    calls: Vec<Call>,
}

/// The running participant.
#[derive(Clone)]
pub struct Participant {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl Participant {
    /// Starts listening on a random loopback port.
    pub async fn start() -> Participant {
        Self::listen(None).await
    }

    /// Starts an https participant on a random loopback port, serving with `tls`.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> Participant {
        Self::listen(Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn listen(tls: Option<tokio_rustls::TlsAcceptor>) -> Participant {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = inner.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (shared, tls) = (shared.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        // A failed handshake (an untrusting client) just ends the connection.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(shared, stream).await
                            }
                        }
                        None => serve(shared, stream).await,
                    }
                });
            }
        });
        Participant { base, inner }
    }

    /// The URL of `path` on this participant.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Answers the next calls to `path` with `replies`, in order, then with the default.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.inner
            .lock()
            .unwrap()
            .scripts
            .entry(path.into())
            .or_default()
            .extend(replies);
    }

    /// Answers calls to `path` with `reply` once its script is used up (200 if never set).
    pub fn default_reply(&self, path: &str, reply: Reply) {
        self.inner
            .lock()
            .unwrap()
            .defaults
            .insert(path.into(), reply);
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// A saga-mode step calling `/{name}/action` and `/{name}/compensation` here.
    pub fn step(&self, name: &str) -> Value {
        serde_json::json!({"name": name,
            "action": {"url": self.url(&format!("/{name}/action"))},
            "compensation": {"url": self.url(&format!("/{name}/compensation"))}})
    }

    /// [`Self::step`] with a quick retry policy: 2 calls per phase, 10 ms apart.
    pub fn quick_step(&self, name: &str) -> Value {
        let mut s = self.step(name);
        s["retry"] = serde_json::json!({"max_attempts": 2, "initial_backoff_ms": 10});
        s
    }

    /// The paths one saga called, in order.
    pub fn paths_of(&self, saga: &str) -> Vec<String> {
        self.calls_of(saga).into_iter().map(|c| c.path).collect()
    }

    /// Calls so far for one saga.
    pub fn calls_of(&self, saga: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.header("x-saga-id") == saga)
            .collect()
    }
}

/// Serves HTTP/1.1 on one connection.
async fn serve<S>(shared: Arc<Mutex<Inner>>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        async move { answer(shared, req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

type Answer = Result<Response<Full<Bytes>>, std::io::Error>;

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

async fn answer(inner: Arc<Mutex<Inner>>, req: Request<hyper::body::Incoming>) -> Answer {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let bytes = req.into_body().collect().await.map_err(io)?.to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let reply = {
        let mut g = inner.lock().unwrap();
        g.calls.push(Call {
            path: path.clone(),
            query,
            method,
            headers,
            body,
            at: Instant::now(),
        });
        let scripted = g.scripts.get_mut(&path).and_then(VecDeque::pop_front);
        scripted
            .or_else(|| g.defaults.get(&path).cloned())
            .unwrap_or_else(Reply::ok)
    };
    match reply {
        Reply::Status {
            code,
            body,
            delay_ms,
        } => {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            Ok(Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(io)?)
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Err(io("hung"))
        }
        Reply::Drop => Err(io("dropped on purpose")),
    }
}
