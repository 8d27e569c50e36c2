//! Test plumbing: fresh databases, `spawn_app`, an HTTP client, waiting with deadlines.

use saga_orchestrator::config::Settings;
use saga_orchestrator::startup::Application;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use std::io::Write;
use std::sync::Once;
use std::time::{Duration, Instant};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Mysql,
    Postgres,
}

/// A database of its own for one test.
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// Tests that did not run because their database is not configured.
static SKIPPED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn report_skipped() {
    let n = SKIPPED.load(std::sync::atomic::Ordering::SeqCst);
    // Written to the real stderr after the harness's summary, so every run says it.
    let _ = writeln!(
        std::io::stderr(),
        "\nSKIPPED: {n} MariaDB/PostgreSQL tests did not run (they count as passed above). \
         Set SAGA_TEST_MYSQL_URL and SAGA_TEST_POSTGRES_URL to run them."
    );
}

/// Counts a skipped test and says so; under `CI=true` a missing database fails the test.
fn skip(kind: Kind, var: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{var} is not set and CI=true: the {kind:?} tests must run, not be skipped");
    }
    static REGISTER: Once = Once::new();
    // SAFETY: registers a plain function to run at process exit; it only writes to stderr.
    REGISTER.call_once(|| unsafe {
        libc::atexit(report_skipped);
    });
    SKIPPED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

impl TestDb {
    /// A fresh database of `kind`, or `None` (with a notice) when its server is not configured.
    pub async fn new(kind: Kind) -> Option<TestDb> {
        let name = format!("saga_t_{}", uuid::Uuid::new_v4().simple());
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}/sagas.db?mode=rwc", dir.path().display());
                Some(TestDb {
                    kind,
                    url,
                    _dir: Some(dir),
                })
            }
            Kind::Mysql | Kind::Postgres => {
                let var = if kind == Kind::Mysql {
                    "SAGA_TEST_MYSQL_URL"
                } else {
                    "SAGA_TEST_POSTGRES_URL"
                };
                let Ok(base) = std::env::var(var) else {
                    skip(kind, var);
                    return None;
                };
                let admin = Database::connect(&base)
                    .await
                    .unwrap_or_else(|e| panic!("{var}={base}: {e}"));
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create database");
                let _ = admin.close().await;
                let mut u = url::Url::parse(&base).expect("database URL");
                u.set_path(&format!("/{name}"));
                Some(TestDb {
                    kind,
                    url: u.to_string(),
                    _dir: None,
                })
            }
        }
    }
}

/// Settings for a test: random port, this database, fast retries.
pub fn test_settings(db: &TestDb) -> Settings {
    let mut s = Settings::default();
    s.server.bind = "127.0.0.1:0".into();
    s.server.workers = 2;
    s.server.shutdown_grace_ms = 2_000;
    s.database.url = db.url.clone();
    s.database.max_connections = 4;
    s.participant.call_timeout_ms = 2_000;
    s.participant.initial_backoff_ms = 20;
    s.participant.max_backoff_ms = 200;
    s.runtime.saga_arbiters = 2;
    s
}

/// A client of one running service (in-process or the real binary).
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

/// A running application; it derefs to its [`Api`].
pub struct TestApp {
    pub api: Api,
    /// The port of the `dtm.bind` listener, if configured.
    pub dtm_port: Option<u16>,
    pub handle: actix_web::dev::ServerHandle,
    pub done: tokio::sync::oneshot::Receiver<()>,
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

fn init_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            let sub = saga_orchestrator::telemetry::get_subscriber("info", std::io::stdout, None);
            saga_orchestrator::telemetry::init_subscriber(sub);
        }
    });
}

/// Starts the real application on a random port.
pub async fn spawn_app_with(settings: Settings) -> TestApp {
    init_logs();
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let dtm_port = app.dtm_port();
    let handle = app.handle();
    let (tx, done) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        let _ = app.run_until_stopped().await;
        let _ = tx.send(());
    });
    TestApp {
        api: Api::new(base),
        dtm_port,
        handle,
        done,
    }
}

/// Starts the real application on `db` with test settings.
pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(test_settings(db)).await
}

impl Api {
    /// A client of the service at `base` (http://host:port).
    pub fn new(base: String) -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        Api { base, client }
    }

    /// POSTs JSON, answers (status, body).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POSTs JSON with these headers, answers (status, body).
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get_response(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get")
    }

    /// GETs, answers (status, body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.get_response(path).await;
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// GETs text, answers (status, body).
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.get_response(path).await;
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// The value of one series in this service's `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get_text("/metrics").await;
        metric(&text, series).unwrap_or(0.0)
    }

    /// Waits (long-polling) until saga `id` is in one of `statuses`, failing after `secs`.
    pub async fn wait_status(&self, id: &str, statuses: &[&str], secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (code, v) = self.get(&format!("/v1/sagas/{id}?wait_ms=200")).await;
            assert_eq!(code, 200, "{v}");
            if statuses.contains(&v["status"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "saga {id} did not reach {statuses:?} in {secs}s: {v}"
            );
        }
    }
}

impl TestApp {
    /// Stops the HTTP server gracefully and waits for the application to finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.done).await;
    }
}

/// The `status` of each step of a saga resource.
pub fn step_statuses(saga: &Value) -> Vec<String> {
    saga["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["status"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `cond` every 10 ms until it holds, failing with `what` after `secs`.
pub async fn eventually<F: FnMut() -> bool>(secs: u64, what: &str, mut cond: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the async `check` until it answers `Ok(v)`, and answers `v`; fails after `secs` with
/// `what` and the last `Err` (what was seen instead).
pub async fn until<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Generates, for each named scenario `async fn name(db: TestDb)`, one test per database
/// kind given in brackets: `on_dbs!([sqlite: Sqlite, mysql: Mysql] a, b)`.
#[macro_export]
macro_rules! on_dbs {
    ([$($test:ident: $kind:ident),*] $(,)?) => {};
    ([$($test:ident: $kind:ident),*] $name:ident $(, $rest:ident)* $(,)?) => {
        mod $name {
            use $crate::helpers::{Kind, TestDb};
            $(
                #[actix_web::test]
                async fn $test() {
                    if let Some(db) = TestDb::new(Kind::$kind).await { super::$name(db).await }
                }
            )*
        }
        $crate::on_dbs!([$($test: $kind),*] $($rest),*);
    };
}

/// One test per database (SQLite, MariaDB, PostgreSQL) for each named scenario.
#[macro_export]
macro_rules! on_every_db {
    ($($name:ident),* $(,)?) => {
        $crate::on_dbs!([sqlite: Sqlite, mysql: Mysql, postgres: Postgres] $($name),*);
    };
}

/// One test per database several instances can share (MariaDB, PostgreSQL; SQLite serves one).
#[macro_export]
macro_rules! on_shared_dbs {
    ($($name:ident),* $(,)?) => {
        $crate::on_dbs!([mysql: Mysql, postgres: Postgres] $($name),*);
    };
}

/// Every stdout line of a started binary.
pub type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Starts the real binary on a random port and `db`; answers the child, a client of it and its
/// stdout lines as they come.
pub fn start_binary(db: &TestDb) -> (Binary, Api, Lines) {
    start_binary_with(db, &[])
}

/// [`start_binary`] with more `SAGA__…` settings in its environment.
pub fn start_binary_with(db: &TestDb, env: &[(&str, &str)]) -> (Binary, Api, Lines) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_saga-orchestrator"));
    cmd.arg("serve")
        .env("SAGA__SERVER__BIND", "127.0.0.1:0")
        .env("SAGA__DATABASE__URL", &db.url)
        .env("SAGA__PARTICIPANT__INITIAL_BACKOFF_MS", "20")
        .env("SAGA__PARTICIPANT__MAX_BACKOFF_MS", "200")
        .env("SAGA__LOG__LEVEL", "debug,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,hyper_util=info,reqwest=info,h2=info,actix_server=info")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Binary(
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("binary starts"),
    );
    let stdout = child.stdout.take().unwrap();
    let lines: Lines = Default::default();
    let keep = lines.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(b) = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["bound"].as_str().map(String::from))
            {
                let _ = tx.send(b);
            }
            keep.lock().unwrap().push(line);
        }
    });
    let bound = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a \"bound\" log line");
    (child, Api::new(format!("http://{bound}")), lines)
}

/// A started binary, killed when dropped: a test that fails (panics) leaves no service behind
/// holding its database. Derefs to its `Child`.
pub struct Binary(std::process::Child);

impl std::ops::Deref for Binary {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Binary {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<std::process::Child> for Binary {
    fn from(c: std::process::Child) -> Self {
        Binary(c)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        // SIGKILL also ends a SIGSTOPped process; an exited one is only reaped.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM to a child this test started and waits (up to 20 s) for a successful exit.
pub async fn sigterm_and_wait(child: &mut std::process::Child) {
    // SAFETY: kill(2) on the pid of a child process this test started.
    assert_eq!(
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) },
        0,
        "SIGTERM"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
}

/// The value of one series (`name` or `name{labels}`) in a Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}
