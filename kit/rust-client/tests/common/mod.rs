//! Test plumbing: the real service binary on a loopback port, a participant that answers
//! 200 `{}` and records what it got, and a scripted fake service for the retry rules.

#![allow(dead_code)] // each test file uses its own part of this

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The service binary: `SAGA_BIN`, else the workspace's debug build. None (with a notice)
/// when it is missing, unless `CI=true`, where a missing binary fails the test.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("SAGA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/saga-orchestrator")
        });
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "the service binary {} is missing: build it (cargo build -p saga-orchestrator) or set SAGA_BIN",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why} (CI=true: the tests against it must run)");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// A running service, killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its stdout lines so far.
    pub lines: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the service on a fresh SQLite database (None: no binary, test skipped).
pub fn service() -> Option<Service> {
    service_with(None)
}

/// [`service`] with `config` as its settings file (`--config FILE serve`).
pub fn service_with(config: Option<&str>) -> Option<Service> {
    let bin = binary()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(bin);
    if let Some(text) = config {
        let file = dir.path().join("config.toml");
        std::fs::write(&file, text).expect("config file");
        cmd.arg("--config").arg(file);
    }
    cmd.arg("serve")
        .current_dir(dir.path())
        .env("SAGA__SERVER__BIND", "127.0.0.1:0")
        .env(
            "SAGA__DATABASE__URL",
            format!("sqlite://{}/t.db?mode=rwc", dir.path().display()),
        )
        .env("SAGA__PARTICIPANT__INITIAL_BACKOFF_MS", "20")
        .env("SAGA__PARTICIPANT__MAX_BACKOFF_MS", "200")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("the service binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let lines: Arc<Mutex<Vec<String>>> = Default::default();
    let keep = lines.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let bound = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["bound"].as_str().map(String::from));
            if let Some(b) = bound {
                let _ = tx.send(b);
            }
            keep.lock().unwrap().push(line);
        }
    });
    // Built before waiting, so that a service that never binds is still killed.
    let mut svc = Service {
        child,
        base: String::new(),
        lines,
        _dir: dir,
    };
    let bound = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "no \"bound\" log line from the service; its output:\n{}",
                svc.lines.lock().unwrap().join("\n")
            )
        });
    svc.base = format!("http://{bound}");
    Some(svc)
}

/// A new token with every scope: (token, the `[[auth.tokens]]` lines), from `token new`.
pub fn new_token(bin: &std::path::Path) -> (String, String) {
    let out = Command::new(bin)
        .args(["token", "new", "ci", "--scopes", "read,write,admin"])
        .output()
        .expect("token new runs");
    assert!(out.status.success(), "token new: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("a token line")
        .trim()
        .to_string();
    let toml = &text[text.find("[[auth.tokens]]").expect("the toml lines")..];
    (token, toml.to_string())
}

/// One request a test server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Seen {
    /// The body as JSON (null when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Reads one HTTP/1.1 request (headers, then a Content-Length body); None at EOF.
async fn read_request(s: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

/// Writes an answer and closes the connection (one request per connection keeps it simple).
async fn answer(s: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &str) {
    let mut text = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    let _ = s.write_all(text.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A participant on a loopback port: answers 200 `{}` to everything and records it.
pub struct Participant {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Participant {
    /// Starts one on the current runtime.
    pub async fn start() -> Participant {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
        let keep = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let keep = keep.clone();
                tokio::spawn(async move {
                    if let Some(r) = read_request(&mut s).await {
                        keep.lock().unwrap().push(r);
                        answer(&mut s, 200, &[("Content-Type", "application/json")], "{}").await;
                    }
                });
            }
        });
        Participant { base, seen }
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The requests it got on `path`.
    pub fn on(&self, path: &str) -> Vec<Seen> {
        let all = self.seen.lock().unwrap();
        all.iter().filter(|s| s.path == path).cloned().collect()
    }
}

/// What the fake service does with one request.
#[derive(Debug, Clone)]
pub enum Script {
    /// Answer with this status, headers and body.
    Answer(u16, Vec<(&'static str, &'static str)>, String),
    /// Read the request, then close the connection without a word.
    Drop,
}

/// A fake service that follows a script, one entry per request (the last one repeats).
pub struct Fake {
    pub base: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    /// Starts one on the current runtime.
    pub async fn start(script: Vec<Script>) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
        let keep = seen.clone();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let Some(r) = read_request(&mut s).await else {
                    continue;
                };
                keep.lock().unwrap().push(r);
                let step = {
                    let mut q = script.lock().unwrap();
                    if q.len() > 1 {
                        q.pop_front().unwrap()
                    } else {
                        q.front().cloned().expect("a script")
                    }
                };
                match step {
                    Script::Answer(status, headers, body) => {
                        answer(&mut s, status, &headers, &body).await
                    }
                    Script::Drop => drop(s),
                }
            }
        });
        Fake { base, seen }
    }

    /// How many requests it got.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// A saga resource as the service answers a start (for the fake service).
pub fn saga_json(id: &str) -> String {
    serde_json::json!({
        "id": id, "name": "fake", "mode": "saga", "status": "running",
        "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
        "deadline_at": null, "error": null, "purge_at": null, "paused_at": null, "kept": false,
        "steps": []
    })
    .to_string()
}

/// A loopback port nothing listens on.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
