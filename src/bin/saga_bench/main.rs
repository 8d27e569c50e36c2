//! Benchmark: starts the real service binary on a fresh database and measures one scenario,
//! printing its figures (never failing on a slow machine):
//! - `throughput` (default): N three-step sagas with C concurrent clients (a fraction failing at
//!   step 3) against a fast loopback participant: throughput, end-to-end latency, the service's
//!   CPU per 1000 sagas and its peak RSS;
//! - `waiting`: N sagas left waiting on one-hour delayed compensations: memory while they wait;
//! - `listing`: a log of N sagas, then listing latency of first and deep pages;
//! - `restart`: N sagas in flight, a kill, a start while their participant is down: time until
//!   every saga is driven again, peak RSS, and API latency during the catch-up;
//! - `chaos`: N sagas through several instances while instances are killed, paused and cut off
//!   their database and the participant misbehaves; checks and prints the rules that must hold
//!   (exits 1 when one is broken);
//! - `takeover`: N sagas on one of two instances, which is killed: the survivor's lease
//!   renewals during the takeover, and calls cut, shortened or doubled (none);
//! - `retention`: sagas as fast as they go for M minutes with a one-minute retention: rows and
//!   bytes of every table once a minute (flat once sagas leave);
//! - `sweep`: a backlog of N ended sagas due for purging: throughput without and while the
//!   sweep deletes it;
//! - `bytes`: bytes per finished saga (tables and indexes) of 3 and 10 steps, settled.
//!
//! `cargo build --release --bins && ./target/release/saga-bench --db sqlite --sagas 2000 --concurrency 64`
//! Settings to try pass through from the environment (`SAGA__DATABASE__WRITERS=4 saga-bench …`).

mod chaos;
mod listing;
mod outage;
mod proxy;
mod restart;
mod retention;
mod sagas;
mod takeover;

use clap::{Parser, ValueEnum};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Db {
    Sqlite,
    Mysql,
    Postgres,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Scenario {
    /// Sagas run to the end; measures throughput and latency.
    Throughput,
    /// Sagas end up waiting on a one-hour delayed compensation; measures memory while they wait.
    Waiting,
    /// A log of `--sagas` sagas (use 1,000,000), then listing latency, first and deep pages.
    Listing,
    /// `--sagas` sagas in flight (use 100,000), a kill, a start while their participant is
    /// down: time until each is driven again, RSS, and the API meanwhile.
    Restart,
    /// `--sagas` sagas through `--instances` instances under injected faults; checks the rules
    /// (no doubled call in flight, attempts bounded, compensations after actions, none lost).
    Chaos,
    /// `--sagas` sagas (use 10,000) on one of two instances, which is killed: how late the
    /// survivor's lease renewals were during the takeover, calls cut or shortened (none).
    Takeover,
    /// Sagas as fast as they go for `--minutes`, one-minute retention: table rows and bytes
    /// once a minute.
    Retention,
    /// A backlog of `--sagas` ended sagas due (use 1,000,000): throughput for `--secs` without,
    /// then while the sweep deletes it.
    Sweep,
    /// Bytes per finished saga of 3 and 10 steps, the database settled.
    Bytes,
    /// `--sagas` sagas (use 1,000) in flight when their participant goes down for `--secs`
    /// (use 60): breakers on, then off.
    Outage,
}

#[derive(Parser)]
#[command(about = "Measure saga throughput, latency, CPU and memory of saga-orchestrator")]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value = "throughput")]
    scenario: Scenario,
    /// Database to run on.
    #[arg(long, value_enum, default_value = "sqlite")]
    db: Db,
    /// Sagas to run (default 2000; chaos: 10,000).
    #[arg(long)]
    sagas: Option<usize>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Fraction of sagas whose step 3 answers 409 (they compensate steps 1 and 2).
    #[arg(long, default_value_t = 0.1)]
    fail_ratio: f64,
    /// Chaos: instances on the database (one on SQLite).
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Chaos: seed of the faults (the same seed injects the same faults).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Chaos: faults to inject at least (one every 2-4 s, more while sagas are still started).
    #[arg(long, default_value_t = 20)]
    faults: u32,
    /// Chaos: how long a database cut lasts (s).
    #[arg(long, default_value_t = 10)]
    cut_secs: u64,
    /// Chaos: sagas started per second (spread over the run, so faults meet every phase).
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Chaos: a shell command that restarts the database server, to inject that fault too.
    #[arg(long)]
    db_restart: Option<String>,
    /// Chaos: ports of the nodes of a multi-primary MariaDB cluster (Galera) on 127.0.0.1,
    /// comma-separated: instance k uses node k mod n (`--mysql-url` names one of them).
    #[arg(long)]
    db_nodes: Option<String>,
    /// Retention: minutes to run.
    #[arg(long, default_value_t = 5)]
    minutes: u32,
    /// Sweep: seconds of each throughput measurement.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Admin URL for MariaDB/MySQL (a fresh database is created on it).
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    mysql_url: String,
    /// Admin URL for PostgreSQL (a fresh database is created on it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
}

impl Args {
    /// Sagas to run: `--sagas`, or the scenario's default.
    fn sagas(&self) -> usize {
        let default = if self.scenario == Scenario::Chaos {
            10_000
        } else {
            2000
        };
        self.sagas.unwrap_or(default)
    }
}

/// CPU seconds (user + system) and peak RSS (bytes) of a process, from /proc.
fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm * 1024)
}

/// The bench's own database on the server (`None` on SQLite): `saga_bench_{pid}`.
fn db_name(args: &Args) -> Option<(String, &str)> {
    let name = format!("saga_bench_{}", std::process::id());
    match args.db {
        Db::Sqlite => None,
        Db::Mysql => Some((name, &args.mysql_url)),
        Db::Postgres => Some((name, &args.postgres_url)),
    }
}

/// Drops the bench's database, so that large fixtures do not pile up on the server.
async fn drop_db(args: &Args) {
    if let Some((name, admin)) = db_name(args) {
        if let Ok(conn) = Database::connect(admin).await {
            let _ = conn
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
                .await;
        }
    }
}

async fn fresh_db(args: &Args, dir: &std::path::Path) -> String {
    let Some((name, admin)) = db_name(args) else {
        return format!("sqlite://{}/bench.db?mode=rwc", dir.display());
    };
    let conn = Database::connect(admin).await.expect("admin connection");
    let _ = conn
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
        .await;
    conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let mut u = url::Url::parse(admin).expect("url");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Starts the service binary (beside this one) on `url` with `env` added; answers the child
/// and its base URL. Settings in the bench's own environment (`SAGA__…`) pass through.
pub fn start_service(url: &str, env: &[(&str, &str)]) -> (Service, String) {
    try_start_service(url, env).unwrap_or_else(|e| panic!("{e}"))
}

/// [`start_service`], answering why when the service does not come up.
pub fn try_start_service(url: &str, env: &[(&str, &str)]) -> Result<(Service, String), String> {
    let exe = std::env::current_exe()
        .expect("own path")
        .with_file_name("saga-orchestrator");
    let mut cmd = Command::new(&exe);
    // Outside any checkout: a config.toml in the working directory would apply too.
    cmd.current_dir(std::env::temp_dir())
        .arg("serve")
        .env("SAGA__SERVER__BIND", "127.0.0.1:0")
        .env("SAGA__DATABASE__URL", url)
        .env_remove("RUST_LOG");
    if std::env::var_os("SAGA__LOG__LEVEL").is_none() {
        cmd.env("SAGA__LOG__LEVEL", "warn,saga_orchestrator::startup=info");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().map_err(|e| {
        format!(
            "cannot start {} ({e}); run `cargo build --release --bins` first",
            exe.display()
        )
    })?;
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
    // SAGA_BENCH_SERVICE_LOGS=DIR keeps each service's log lines in DIR/{pid}.log.
    let mut keep = std::env::var_os("SAGA_BENCH_SERVICE_LOGS").and_then(|d| {
        let path = std::path::Path::new(&d).join(format!("{}.log", child.id()));
        std::fs::File::create(path).ok()
    });
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(f) = keep.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            let v = serde_json::from_str::<Value>(&line).unwrap_or_default();
            if let Some(b) = v["bound"].as_str() {
                let _ = tx.send(Ok(b.to_string()));
            } else if v["msg"] == "saga-orchestrator failed" {
                let _ = tx.send(Err(format!("the service failed: {}", v["error"])));
            }
        }
    });
    let service = Service(child);
    let bound = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|e| format!("the service did not log its address: {e}"))??;
    Ok((service, format!("http://{bound}")))
}

/// A service process this bench started: killed when dropped, so that a failed run (a panic)
/// leaves no service behind.
pub struct Service(Child);

impl Service {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Kills the service (SIGKILL: also the crash a restart scenario needs) and reaps it.
    pub fn kill(self) {}
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[actix_web::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile_dir();
    let url = fresh_db(&args, &dir).await;
    match args.scenario {
        Scenario::Throughput | Scenario::Waiting => sagas::run(&args, &url, &dir).await,
        Scenario::Listing => listing::run(&args, &url).await,
        Scenario::Restart => restart::run(&args, &url).await,
        Scenario::Chaos => chaos::run(&args, &url).await,
        Scenario::Takeover => takeover::run(&args, &url).await,
        Scenario::Retention => retention::steady(&args, &url).await,
        Scenario::Sweep => retention::sweep(&args, &url).await,
        Scenario::Bytes => retention::bytes(&args, &url).await,
        Scenario::Outage => outage::run(&args, &dir).await,
    }
    drop_db(&args).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The service's `/metrics` text.
async fn scrape(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default()
}

/// A metric's value from the text exposition (first sample whose line starts with `prefix`).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("saga-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
