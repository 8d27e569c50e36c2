//! Settings: `config.toml` (or `--config PATH`), then `SAGA__{SECTION}__{KEY}` environment overrides.

use crate::domain::{Defaults, RetryPolicy};
use serde::Deserialize;
use std::path::Path;

/// Every setting of the service; each field's default is the one documented in `config.toml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// The saga log database.
    pub database: DatabaseSettings,
    /// Participant calls.
    pub participant: ParticipantSettings,
    /// Logging.
    pub log: LogSettings,
    /// Actor runtime.
    pub runtime: RuntimeSettings,
    /// Built-in demo shop.
    pub demo: DemoSettings,
    /// Where stuck sagas are reported.
    pub alerts: AlertSettings,
}

/// `[alerts]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AlertSettings {
    /// URL that receives a POST of the alert JSON when a saga becomes stuck (empty: logs only).
    pub webhook_url: String,
    /// Tries per alert.
    pub max_attempts: u32,
    /// Timeout of one try.
    pub timeout_ms: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            webhook_url: String::new(),
            max_attempts: 5,
            timeout_ms: 5_000,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port.
    pub bind: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long shutdown waits for requests and participant calls in flight.
    pub shutdown_grace_ms: u64,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            shutdown_grace_ms: 10_000,
            workers: 0,
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// sea-orm URL: `sqlite://…`, `mysql://…` or `postgres://…`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Commit the transitions of concurrent sagas together (one writer, fewer commits).
    pub group_commit: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "sqlite://data/sagas.db?mode=rwc".into(),
            max_connections: 8,
            group_commit: true,
        }
    }
}

/// `[participant]`: defaults of every step that does not set its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ParticipantSettings {
    /// Timeout of one call.
    pub call_timeout_ms: u64,
    /// Calls per phase, the first included.
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff_ms: u64,
    /// Longest wait between retries.
    pub max_backoff_ms: u64,
    /// Growth of the wait per retry.
    pub multiplier: f64,
}

impl Default for ParticipantSettings {
    fn default() -> Self {
        let d = Defaults::default();
        ParticipantSettings {
            call_timeout_ms: d.call_timeout_ms,
            max_attempts: d.retry.max_attempts,
            initial_backoff_ms: d.retry.initial_backoff_ms,
            max_backoff_ms: d.retry.max_backoff_ms,
            multiplier: d.retry.multiplier,
        }
    }
}

impl ParticipantSettings {
    /// The defaults the domain resolves requests against.
    pub fn defaults(&self) -> Defaults {
        Defaults {
            call_timeout_ms: self.call_timeout_ms.max(1),
            retry: RetryPolicy {
                max_attempts: self.max_attempts.max(1),
                initial_backoff_ms: self.initial_backoff_ms,
                max_backoff_ms: self.max_backoff_ms.max(self.initial_backoff_ms),
                multiplier: if self.multiplier >= 1.0 {
                    self.multiplier
                } else {
                    1.0
                },
            },
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// `RUST_LOG`-style filter; the `RUST_LOG` variable wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
        }
    }
}

/// `[runtime]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RuntimeSettings {
    /// Arbiter threads that saga actors run on (0 = one per core).
    pub saga_arbiters: usize,
    /// A saga with nothing in flight and nothing due for this long leaves memory until its timer.
    pub evict_idle_after_ms: u64,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            saga_arbiters: 0,
            evict_idle_after_ms: 1_000,
        }
    }
}

/// `[demo]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct DemoSettings {
    /// Serve the demo shop under `/demo` (also `serve --demo`).
    pub enabled: bool,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(#[from] config::ConfigError);

/// Loads settings from `path` (required if given, else `./config.toml` if present) and the environment.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let mut b = config::Config::builder();
    b = match path {
        Some(p) => b.add_source(config::File::from(p).required(true)),
        None => b.add_source(config::File::with_name("config.toml").required(false)),
    };
    let env = config::Environment::with_prefix("SAGA")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true);
    Ok(b.add_source(env).build()?.try_deserialize()?)
}
