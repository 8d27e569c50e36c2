//! Settings: `config.toml` (or `--config PATH`), then `SAGA__{SECTION}__{KEY}` environment overrides.

use crate::domain::breaker::BreakerPolicy;
use crate::domain::limits::MAX_DURATION_MS;
use crate::domain::retention::{self, MIN_RETENTION_MS};
use crate::domain::{Defaults, Retention, RetentionOverride, RetentionRules, RetryPolicy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;

/// Every setting of the service; each field's default is the one documented in `config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
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
    /// Several instances on one database.
    pub cluster: ClusterSettings,
    /// Who may call the API.
    pub auth: AuthSettings,
    /// Secrets at rest.
    pub secrets: SecretsSettings,
    /// DTM's HTTP protocol (docs/dtm.md).
    pub dtm: DtmSettings,
    /// How long ended sagas stay, and where they go (docs/saga-log.md, "Retention").
    pub retention: RetentionSettings,
    /// OpenTelemetry export of our spans and the console's trace links (docs/tracing.md).
    pub tracing: TracingSettings,
    /// Named definitions kept as files (docs/api.md, "Definitions").
    pub definitions: DefinitionsSettings,
}

/// `[definitions]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DefinitionsSettings {
    /// A directory of `*.json` / `*.toml` definitions stored (as new versions when changed) at
    /// start-up; a file that does not validate stops the start ("" = none).
    pub dir: String,
}

impl Settings {
    /// The defaults the domain resolves requests against (validated by [`Settings::validate`]).
    pub fn defaults(&self) -> Defaults {
        Defaults {
            retention: self.retention.rules(),
            ..self.participant.defaults()
        }
    }
}

/// `[retention]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// How long a succeeded saga stays after it ended (0 = forever).
    pub succeeded_ms: u64,
    /// How long a compensated saga stays after it ended (0 = forever).
    pub compensated_ms: u64,
    /// Per saga name (`[retention.names.place_order]`): what it sets beats the two above.
    pub names: BTreeMap<String, RetentionOverride>,
    /// How often the log is looked through for sagas due to leave.
    pub sweep_ms: u64,
    /// At most this many sagas purged per second while sagas run or are written; on a quiet
    /// log the sweep does not pause.
    pub sweep_rate: u64,
    /// How long a purged saga's id stays reserved (its tombstone).
    pub tombstone_ms: u64,
    /// Where purged sagas are archived first, as gzip JSON lines ("" = not archived).
    pub archive_dir: String,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        let d = Retention::default();
        RetentionSettings {
            succeeded_ms: d.succeeded_ms,
            compensated_ms: d.compensated_ms,
            names: BTreeMap::new(),
            sweep_ms: 60_000,
            sweep_rate: 100,
            tombstone_ms: 30 * 24 * 3_600_000,
            archive_dir: String::new(),
        }
    }
}

impl RetentionSettings {
    /// The rules sagas are accepted with.
    pub fn rules(&self) -> RetentionRules {
        RetentionRules {
            default: Retention {
                succeeded_ms: self.succeeded_ms,
                compensated_ms: self.compensated_ms,
            },
            names: self.names.clone(),
        }
    }

    /// Every value out of range, each naming its key.
    fn problems(&self, e: &mut Vec<String>) {
        let range =
            format!("0 (forever) or from {MIN_RETENTION_MS} to {MAX_DURATION_MS} milliseconds");
        let mut each = vec![
            (
                "retention.succeeded_ms".to_string(),
                Some(self.succeeded_ms),
            ),
            (
                "retention.compensated_ms".to_string(),
                Some(self.compensated_ms),
            ),
        ];
        for (name, o) in &self.names {
            check(
                e,
                crate::domain::limits::NAME.is_valid(name),
                &format!("retention.names.{name}"),
                "a saga name",
                format!("{name:?}"),
            );
            each.push((
                format!("retention.names.{name}.succeeded_ms"),
                o.succeeded_ms,
            ));
            each.push((
                format!("retention.names.{name}.compensated_ms"),
                o.compensated_ms,
            ));
        }
        for (key, ms) in each {
            if let Some(ms) = ms {
                check(e, retention::is_valid_ms(ms), &key, &range, ms);
            }
        }
        check(
            e,
            (100..=3_600_000).contains(&self.sweep_ms),
            "retention.sweep_ms",
            "from 100 to 3600000",
            self.sweep_ms,
        );
        check(
            e,
            (1..=1_000_000).contains(&self.sweep_rate),
            "retention.sweep_rate",
            "from 1 to 1000000",
            self.sweep_rate,
        );
        check(
            e,
            (MIN_RETENTION_MS..=MAX_DURATION_MS).contains(&self.tombstone_ms),
            "retention.tombstone_ms",
            &format!("from {MIN_RETENTION_MS} to {MAX_DURATION_MS}"),
            self.tombstone_ms,
        );
    }
}

/// `[dtm]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DtmSettings {
    /// A second listener (HOST:PORT) that also serves the API, DTM's `/api/dtmsvr` included:
    /// DTM clients often hard-code port 36789 ("" = the service's own listener only).
    pub bind: String,
    /// `/api/dtmsvr` on `dtm.bind` needs no token (a listener the operator keeps internal).
    pub allow_anonymous: bool,
}

/// `[secrets]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SecretsSettings {
    /// A file holding a 32-byte key (64 hex digits or base64): endpoint header values are then
    /// encrypted in the saga log ("" = stored as given).
    pub key_file: String,
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Bearer tokens (`[[auth.tokens]]`); none = open, allowed on a loopback bind only unless
    /// `allow_anonymous`.
    pub tokens: Vec<TokenSettings>,
    /// Serve without tokens on a non-loopback address (say so explicitly).
    pub allow_anonymous: bool,
    /// The scope `/metrics` needs ("" = open).
    pub metrics_scope: String,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Its name: shown as `who` on operator actions and access-log lines.
    pub name: String,
    /// SHA-256 of the token, hex (never the token itself).
    pub sha256: String,
    /// Out of read, write, admin.
    pub scopes: Vec<String>,
}

impl AuthSettings {
    /// The configured tokens, checked; an error names each bad entry.
    pub fn tokens(&self) -> Result<crate::auth::Tokens, Vec<String>> {
        crate::auth::Tokens::new(
            self.tokens
                .iter()
                .map(|t| (t.name.as_str(), t.sha256.as_str(), &t.scopes[..])),
            &self.metrics_scope,
        )
    }
}

/// Whether `bind` (HOST:PORT) listens on loopback only.
fn loopback(bind: &str) -> bool {
    let host = bind.rsplit_once(':').map_or(bind, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[cluster]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterSettings {
    /// This instance's id in the saga log ("" = host name, process id and a random suffix).
    pub instance_id: String,
    /// How long a lease on a saga holds without renewal.
    pub lease_ms: u64,
    /// How often the log is asked for due timers, expired leases and operator requests.
    pub poll_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            instance_id: String::new(),
            lease_ms: 10_000,
            poll_ms: 1_000,
        }
    }
}

impl ClusterSettings {
    /// The configured instance id, or host name + process id + a random suffix.
    pub fn resolved_instance_id(&self) -> String {
        if !self.instance_id.is_empty() {
            return self.instance_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        let suffix: u32 = rand::random();
        format!("{host}-{}-{suffix:08x}", std::process::id())
    }
}

/// `[alerts]`
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// sea-orm URL: `sqlite://…`, `mysql://…` or `postgres://…`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Log writers committing in parallel, sagas sharded over them by id (1 on SQLite).
    pub writers: usize,
    /// Most starts waiting to be written; beyond, starts get 503 (transitions are not counted).
    pub max_queued_writes: usize,
    /// Longest a batch of log writes may take; beyond, the database counts as unreachable (a
    /// silent partition) and starts get 503 until it answers again.
    pub write_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "sqlite://data/sagas.db?mode=rwc".into(),
            max_connections: 8,
            writers: 1,
            max_queued_writes: 20_000,
            write_timeout_ms: 10_000,
        }
    }
}

/// `[participant]`: defaults of every step that does not set its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// PEM file of CA certificates trusted besides the platform's roots ("" = none); also used
    /// by the alert webhook.
    pub ca_file: String,
    /// Where calls may go: host names (`*.` wildcards), addresses, CIDRs; empty = anywhere
    /// not denied.
    pub allow: Vec<String>,
    /// Where calls may not go, on top of link-local, unspecified, multicast and broadcast.
    pub deny: Vec<String>,
    /// Endpoint headers shown as `***`, besides Authorization, Proxy-Authorization, Cookie and
    /// X-Api-Key.
    pub secret_headers: Vec<String>,
    /// Participant calls in flight at once; more wait for a free slot.
    pub max_in_flight: usize,
    /// A circuit breaker per participant service.
    pub breaker: BreakerSettings,
}

/// `[participant.breaker]` (docs/operations.md, "When a participant is down"): the defaults
/// are `domain::breaker::BreakerPolicy`'s, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Breakers on (a call to an open one waits); off: every call goes.
    pub enabled: bool,
    /// Unknown outcomes in a row that open a breaker.
    pub consecutive_failures: u32,
    /// Share of unknown outcomes over `window_ms` that opens it, once `min_calls` answered.
    pub failure_rate: f64,
    /// The window of the rate (ms).
    pub window_ms: u64,
    /// Answers in the window before the rate counts.
    pub min_calls: u32,
    /// First cool-down (ms), doubled after each failed probe.
    pub open_ms: u64,
    /// Longest cool-down (ms).
    pub max_open_ms: u64,
    /// Calls released in the first second after closing, doubled every second ...
    pub ramp_start_per_s: u32,
    /// ... for this long (ms).
    pub ramp_ms: u64,
    /// Per service label, the settings that differ (`[participant.breaker.services."stock:9002"]`).
    pub services: std::collections::BTreeMap<String, BreakerOverride>,
}

/// One service's breaker settings that differ from `[participant.breaker]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerOverride {
    /// See [`BreakerSettings`].
    pub enabled: Option<bool>,
    /// See [`BreakerSettings`].
    pub consecutive_failures: Option<u32>,
    /// See [`BreakerSettings`].
    pub failure_rate: Option<f64>,
    /// See [`BreakerSettings`].
    pub window_ms: Option<u64>,
    /// See [`BreakerSettings`].
    pub min_calls: Option<u32>,
    /// See [`BreakerSettings`].
    pub open_ms: Option<u64>,
    /// See [`BreakerSettings`].
    pub max_open_ms: Option<u64>,
    /// See [`BreakerSettings`].
    pub ramp_start_per_s: Option<u32>,
    /// See [`BreakerSettings`].
    pub ramp_ms: Option<u64>,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        let p = BreakerPolicy::default();
        BreakerSettings {
            enabled: p.enabled,
            consecutive_failures: p.consecutive_failures,
            failure_rate: p.failure_rate,
            window_ms: p.window_ms,
            min_calls: p.min_calls,
            open_ms: p.open_ms,
            max_open_ms: p.max_open_ms,
            ramp_start_per_s: p.ramp_start_per_s,
            ramp_ms: p.ramp_ms,
            services: Default::default(),
        }
    }
}

impl BreakerSettings {
    /// The policy of every service without an override.
    pub fn policy(&self) -> BreakerPolicy {
        BreakerPolicy {
            enabled: self.enabled,
            consecutive_failures: self.consecutive_failures,
            failure_rate: self.failure_rate,
            window_ms: self.window_ms,
            min_calls: self.min_calls,
            open_ms: self.open_ms,
            max_open_ms: self.max_open_ms,
            ramp_start_per_s: self.ramp_start_per_s,
            ramp_ms: self.ramp_ms,
        }
    }

    /// The policy of each service with an override.
    pub fn overrides(&self) -> std::collections::HashMap<String, BreakerPolicy> {
        let base = self.policy();
        self.services
            .iter()
            .map(|(name, o)| {
                let p = BreakerPolicy {
                    enabled: o.enabled.unwrap_or(base.enabled),
                    consecutive_failures: o
                        .consecutive_failures
                        .unwrap_or(base.consecutive_failures),
                    failure_rate: o.failure_rate.unwrap_or(base.failure_rate),
                    window_ms: o.window_ms.unwrap_or(base.window_ms),
                    min_calls: o.min_calls.unwrap_or(base.min_calls),
                    open_ms: o.open_ms.unwrap_or(base.open_ms),
                    max_open_ms: o.max_open_ms.unwrap_or(base.max_open_ms),
                    ramp_start_per_s: o.ramp_start_per_s.unwrap_or(base.ramp_start_per_s),
                    ramp_ms: o.ramp_ms.unwrap_or(base.ramp_ms),
                };
                (name.clone(), p)
            })
            .collect()
    }

    fn problems(&self, e: &mut Vec<String>) {
        for (field, range, got) in self.policy().problems() {
            e.push(format!(
                "participant.breaker.{field} must be {range} (got {got})"
            ));
        }
        for (name, p) in self.overrides() {
            if !crate::domain::limits::SERVICE.is_valid(&name) {
                e.push(format!(
                    "participant.breaker.services.{name:?}: not a service label: {}",
                    crate::domain::limits::SERVICE.describe()
                ));
            }
            for (field, range, got) in p.problems() {
                e.push(format!(
                    "participant.breaker.services.{name:?}.{field} must be {range} (got {got})"
                ));
            }
        }
    }
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
            ca_file: String::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            secret_headers: Vec::new(),
            max_in_flight: 1024,
            breaker: BreakerSettings::default(),
        }
    }
}

impl ParticipantSettings {
    /// The outbound policy of `allow` and `deny`; an error names each bad entry.
    pub fn outbound(&self) -> Result<crate::domain::OutboundPolicy, Vec<String>> {
        crate::domain::OutboundPolicy::new(&self.allow, &self.deny)
    }

    /// The defaults the domain resolves requests against (validated by [`Settings::validate`]).
    pub fn defaults(&self) -> Defaults {
        Defaults {
            call_timeout_ms: self.call_timeout_ms,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                initial_backoff_ms: self.initial_backoff_ms,
                max_backoff_ms: self.max_backoff_ms,
                multiplier: self.multiplier,
            },
            retention: RetentionRules::default(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// `[tracing]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSettings {
    /// OTLP/HTTP (protobuf) collector: a base URL (`/v1/traces` is appended) or the full
    /// traces URL ("" = no export, unless `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` is set).
    pub otlp_endpoint: String,
    /// Share of new traces exported, 0 to 1; a caller's sampled flag decides for its traces
    /// (`OTEL_TRACES_SAMPLER` wins when set).
    pub sample_ratio: f64,
    /// Ended spans waiting for export; beyond, spans are dropped and counted, never waited on.
    pub max_queue: usize,
    /// One export's whole time, connection included.
    pub export_timeout_ms: u64,
    /// The console links a saga to `…{trace_id}…` ("" = no link).
    pub trace_url: String,
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            max_queue: 4096,
            export_timeout_ms: 10_000,
            trace_url: String::new(),
        }
    }
}

impl TracingSettings {
    /// The traces URL of `otlp_endpoint`: a bare base gets `/v1/traces`, as the OTLP spec says
    /// for `OTEL_EXPORTER_OTLP_ENDPOINT`; a URL with a path is used as given.
    pub fn traces_url(&self) -> Option<String> {
        let u = url::Url::parse(&self.otlp_endpoint).ok()?;
        Some(if u.path() == "/" {
            format!("{}v1/traces", u.as_str())
        } else {
            u.to_string()
        })
    }

    fn problems(&self, e: &mut Vec<String>) {
        let http = |s: &str| {
            url::Url::parse(s)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        };
        check(
            e,
            self.otlp_endpoint.is_empty() || http(&self.otlp_endpoint),
            "tracing.otlp_endpoint",
            "\"\" or an http(s) URL such as \"http://127.0.0.1:4318\"",
            &self.otlp_endpoint,
        );
        check(
            e,
            (0.0..=1.0).contains(&self.sample_ratio),
            "tracing.sample_ratio",
            "from 0 to 1",
            self.sample_ratio,
        );
        check(
            e,
            (1..=1_000_000).contains(&self.max_queue),
            "tracing.max_queue",
            "from 1 to 1000000",
            self.max_queue,
        );
        check(
            e,
            (100..=600_000).contains(&self.export_timeout_ms),
            "tracing.export_timeout_ms",
            "from 100 to 600000",
            self.export_timeout_ms,
        );
        check(
            e,
            self.trace_url.is_empty()
                || self.trace_url.contains("{trace_id}")
                    && http(&self.trace_url.replace("{trace_id}", "0")),
            "tracing.trace_url",
            "\"\" or an http(s) URL with {trace_id} in it",
            &self.trace_url,
        );
    }
}

/// `[runtime]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeSettings {
    /// Arbiter threads that saga actors run on (0 = one per core).
    pub saga_arbiters: usize,
    /// A saga with nothing in flight and nothing due for this long leaves memory until its timer.
    pub evict_idle_after_ms: u64,
    /// Most sagas driven in memory at once; beyond, starts get 503 and due work waits in the log.
    pub max_live_sagas: usize,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            saga_arbiters: 0,
            evict_idle_after_ms: 1_000,
            max_live_sagas: 150_000,
        }
    }
}

/// `[demo]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DemoSettings {
    /// Serve the demo shop under `/demo` (also `serve --demo`).
    pub enabled: bool,
}

/// Why settings could not be loaded: every problem, each naming its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or a value has the wrong type.
    #[error("configuration: {0}")]
    Source(#[from] config::ConfigError),
    /// Keys that no setting has, or values out of range.
    #[error("configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Loads settings from `path` (required if given, else `./config.toml` if present) and the
/// environment, refusing unknown keys and out-of-range values.
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
    let cfg = b.add_source(env).build()?;
    let raw: serde_json::Value = cfg.clone().try_deserialize()?;
    let unknown = unknown_keys(&raw);
    if !unknown.is_empty() {
        return Err(ConfigError::Invalid(unknown));
    }
    let settings: Settings = cfg.try_deserialize()?;
    settings.validate().map_err(ConfigError::Invalid)?;
    Ok(settings)
}

/// Every key of `raw` that no setting has, as "unknown setting a.b (…)" (found by
/// deserialising it: what serde would ignore is unknown).
fn unknown_keys(raw: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let _: Result<Settings, _> = serde_ignored::deserialize(raw, |path| {
        let path = path.to_string();
        let env = format!("SAGA__{}", path.replace('.', "__").to_ascii_uppercase());
        out.push(format!(
            "unknown setting {path} (from the config file or {env}); see config.toml for every setting"
        ));
    });
    out
}

/// "`key` must be … (got …)" when `ok` is false.
fn check(errs: &mut Vec<String>, ok: bool, key: &str, range: &str, got: impl Display) {
    if !ok {
        errs.push(format!("{key} must be {range} (got {got})"));
    }
}

impl Settings {
    /// Every value out of its accepted range, each naming its key and the range.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut e = Vec::new();
        let (s, d, p, r, a, c) = (
            &self.server,
            &self.database,
            &self.participant,
            &self.runtime,
            &self.alerts,
            &self.cluster,
        );
        if let Err(why) = crate::store::Sealer::from_key_file(&self.secrets.key_file) {
            e.push(format!("secrets.key_file: {why}"));
        }
        if let Err(errs) = self.auth.tokens() {
            e.extend(errs);
        }
        for (i, h) in self.participant.secret_headers.iter().enumerate() {
            check(
                &mut e,
                http::HeaderName::from_bytes(h.as_bytes()).is_ok(),
                &format!("participant.secret_headers[{i}]"),
                "a header name",
                format!("{h:?}"),
            );
        }
        match self.participant.outbound() {
            Err(errs) => e.extend(errs),
            Ok(policy) => {
                let hook = url::Url::parse(&self.alerts.webhook_url).ok();
                if let Some(Err(why)) = hook
                    .as_ref()
                    .and_then(|u| u.host_str())
                    .map(|h| policy.check_host(h))
                {
                    e.push(format!("alerts.webhook_url: {why}"));
                }
            }
        }
        if self.auth.tokens.is_empty() && !self.auth.allow_anonymous && !loopback(&s.bind) {
            e.push(format!(
                "server.bind {} is not a loopback address and [auth] has no tokens: anyone who \
                 reaches it could start, read and abort sagas; add tokens (saga-orchestrator \
                 token new NAME --scopes read,write) or set auth.allow_anonymous = true",
                s.bind
            ));
        }
        let dtm = &self.dtm;
        check(
            &mut e,
            dtm.bind.is_empty() || dtm.bind.contains(':'),
            "dtm.bind",
            "HOST:PORT or \"\"",
            &dtm.bind,
        );
        if dtm.allow_anonymous && dtm.bind.is_empty() {
            e.push(
                "dtm.allow_anonymous needs dtm.bind: the surface without tokens is a listener of \
                 its own, kept internal"
                    .into(),
            );
        }
        let anonymous = self.auth.tokens.is_empty() && !self.auth.allow_anonymous;
        if anonymous && !dtm.bind.is_empty() && !loopback(&dtm.bind) {
            e.push(format!(
                "dtm.bind {} is not a loopback address and [auth] has no tokens; add tokens or set \
                 auth.allow_anonymous = true",
                dtm.bind
            ));
        }
        let dur = format!("from 1 to {MAX_DURATION_MS}");
        self.retention.problems(&mut e);
        self.tracing.problems(&mut e);
        self.participant.breaker.problems(&mut e);
        check(
            &mut e,
            s.bind.contains(':'),
            "server.bind",
            "HOST:PORT",
            &s.bind,
        );
        check(
            &mut e,
            (1024..=1 << 30).contains(&s.max_body_bytes),
            "server.max_body_bytes",
            "from 1024 to 1073741824",
            s.max_body_bytes,
        );
        check(
            &mut e,
            s.shutdown_grace_ms <= 3_600_000,
            "server.shutdown_grace_ms",
            "from 0 to 3600000",
            s.shutdown_grace_ms,
        );
        check(
            &mut e,
            s.workers <= 1024,
            "server.workers",
            "from 0 (one per core) to 1024",
            s.workers,
        );
        let scheme_ok = [
            "sqlite:",
            "mysql://",
            "mariadb://",
            "postgres://",
            "postgresql://",
        ]
        .iter()
        .any(|x| d.url.starts_with(x));
        check(
            &mut e,
            scheme_ok,
            "database.url",
            "a sqlite:, mysql:// or postgres:// URL",
            &d.url,
        );
        check(
            &mut e,
            (1..=1000).contains(&d.max_connections),
            "database.max_connections",
            "from 1 to 1000",
            d.max_connections,
        );
        check(
            &mut e,
            (1..=MAX_DURATION_MS).contains(&p.call_timeout_ms),
            "participant.call_timeout_ms",
            &dur,
            p.call_timeout_ms,
        );
        for (field, range, got) in p.defaults().retry.problems() {
            e.push(format!("participant.{field} must be {range} (got {got})"));
        }
        check(
            &mut e,
            (1..=65_536).contains(&p.max_in_flight),
            "participant.max_in_flight",
            "from 1 to 65536",
            p.max_in_flight,
        );
        if let Err(why) = crate::outbound::ExtraRoots::from_pem_file(&p.ca_file) {
            e.push(format!(
                "participant.ca_file must be \"\" or a PEM file of CA certificates: {why}"
            ));
        }
        let filter_ok = tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok();
        check(
            &mut e,
            filter_ok,
            "log.level",
            "a RUST_LOG-style filter such as \"info\"",
            &self.log.level,
        );
        check(
            &mut e,
            r.saga_arbiters <= 256,
            "runtime.saga_arbiters",
            "from 0 (one per core) to 256",
            r.saga_arbiters,
        );
        check(
            &mut e,
            (1..=10_000_000).contains(&r.max_live_sagas),
            "runtime.max_live_sagas",
            "from 1 to 10000000",
            r.max_live_sagas,
        );
        check(
            &mut e,
            (1..=10_000_000).contains(&self.database.max_queued_writes),
            "database.max_queued_writes",
            "from 1 to 10000000",
            self.database.max_queued_writes,
        );
        check(
            &mut e,
            (100..=600_000).contains(&self.database.write_timeout_ms),
            "database.write_timeout_ms",
            "from 100 to 600000",
            self.database.write_timeout_ms,
        );
        check(
            &mut e,
            r.evict_idle_after_ms <= MAX_DURATION_MS,
            "runtime.evict_idle_after_ms",
            &format!("from 0 to {MAX_DURATION_MS}"),
            r.evict_idle_after_ms,
        );
        check(
            &mut e,
            (1..=100).contains(&a.max_attempts),
            "alerts.max_attempts",
            "from 1 to 100",
            a.max_attempts,
        );
        check(
            &mut e,
            (1..=600_000).contains(&a.timeout_ms),
            "alerts.timeout_ms",
            "from 1 to 600000",
            a.timeout_ms,
        );
        check(
            &mut e,
            (1..=64).contains(&d.writers),
            "database.writers",
            "from 1 to 64",
            d.writers,
        );
        check(
            &mut e,
            c.instance_id.len() <= 100
                && c.instance_id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.:".contains(ch)),
            "cluster.instance_id",
            "\"\" or at most 100 of A-Z a-z 0-9 - _ . :",
            &c.instance_id,
        );
        check(
            &mut e,
            (1_000..=3_600_000).contains(&c.lease_ms),
            "cluster.lease_ms",
            "from 1000 to 3600000",
            c.lease_ms,
        );
        check(
            &mut e,
            c.poll_ms >= 10 && c.poll_ms * 2 <= c.lease_ms,
            "cluster.poll_ms",
            &format!("from 10 to half of cluster.lease_ms ({})", c.lease_ms / 2),
            c.poll_ms,
        );
        let hook_ok = a.webhook_url.is_empty()
            || url::Url::parse(&a.webhook_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        check(
            &mut e,
            hook_ok,
            "alerts.webhook_url",
            "\"\" or an http(s) URL",
            &a.webhook_url,
        );
        if e.is_empty() {
            Ok(())
        } else {
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_valid_and_every_key_is_known() {
        assert_eq!(Settings::default().validate(), Ok(()));
        let all = serde_json::to_value(Settings::default()).unwrap();
        assert!(unknown_keys(&all).is_empty());
    }

    #[test]
    fn an_otlp_base_url_gets_the_traces_path_and_a_full_one_is_kept() {
        let t = |e: &str| TracingSettings {
            otlp_endpoint: e.into(),
            ..TracingSettings::default()
        };
        assert_eq!(
            t("http://127.0.0.1:4318").traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            t("https://otlp.example/v1/traces").traces_url().as_deref(),
            Some("https://otlp.example/v1/traces")
        );
        assert_eq!(
            t("https://otlp.example/custom/path")
                .traces_url()
                .as_deref(),
            Some("https://otlp.example/custom/path")
        );
    }

    #[test]
    fn unknown_keys_and_sections_are_named() {
        let raw = json!({"server": {"bind": "x:1", "bindx": "y"}, "databse": {"url": "z"}});
        let u = unknown_keys(&raw);
        assert_eq!(u.len(), 2, "{u:?}");
        assert!(u
            .iter()
            .any(|m| m.contains("server.bindx") && m.contains("SAGA__SERVER__BINDX")));
        assert!(u.iter().any(|m| m.contains("databse")));
    }

    #[test]
    fn out_of_range_values_name_the_key_and_the_range() {
        let mut s = Settings::default();
        s.participant.max_attempts = 0;
        s.participant.multiplier = 0.5;
        s.participant.initial_backoff_ms = 500;
        s.participant.max_backoff_ms = 100;
        s.database.max_connections = 0;
        let errs = s.validate().unwrap_err();
        for key in [
            "participant.max_attempts must be from 1 to 1000 (got 0)",
            "participant.multiplier must be from 1.0 to 100.0 (got 0.5)",
            "participant.max_backoff_ms",
            "database.max_connections",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(key)),
                "{key} missing in {errs:?}"
            );
        }
        assert_eq!(errs.len(), 4, "{errs:?}");
    }
}
