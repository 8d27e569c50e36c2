//! Builds the whole service: database, actors, HTTP server. Tests start the real thing on port 0.

use crate::actors::clock::{Clock, SystemClock};
use crate::actors::lease::Lease;
use crate::actors::lease_keeper::{EarlierRuns, Keeper};
use crate::actors::messages::{Rehydrate, Shutdown};
use crate::actors::registry::Registry;
use crate::actors::timer::Timer;
use crate::actors::Shared;
use crate::api::{self, AppState};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::participant::Participant;
use crate::store::{self, SagaLog, SqlStore};
use actix::prelude::*;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;
use tracing_actix_web::TracingLogger;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// The saga log could not be read back.
    #[error("saga log: {0}")]
    Store(#[from] store::StoreError),
    /// The listener could not be bound.
    #[error("bind: {0}")]
    Io(#[from] std::io::Error),
    /// The actor system failed.
    #[error("actors: {0}")]
    Mailbox(#[from] actix::MailboxError),
    /// The settings are not usable.
    #[error("configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    /// An HTTP client could not be built.
    #[error("{0}")]
    Client(String),
    /// The demo shop could not be set up.
    #[error("{0}")]
    Demo(String),
}

/// A built, listening service.
pub struct Application {
    /// SQLite's one-instance lock, held while the application lives.
    _single: Option<std::fs::File>,
    /// Renews this instance's leases.
    keeper: Keeper,
    port: u16,
    dtm_port: Option<u16>,
    server: Server,
    shared: Arc<Shared>,
    arbiters: Vec<Arbiter>,
    registry: Addr<Registry>,
    timer: Addr<Timer>,
    grace: Duration,
    /// The retention sweep: its stop flag and task.
    sweep: Option<(
        tokio_util::sync::CancellationToken,
        actix_web::rt::task::JoinHandle<()>,
    )>,
}

impl Application {
    /// Opens the database (migrating it), starts the actors, rehydrates unfinished sagas and
    /// binds the HTTP listener. Must run inside an actix System.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings.validate().map_err(StartupError::Config)?;
        let roots = crate::outbound::ExtraRoots::from_pem_file(&settings.participant.ca_file)
            .map_err(|e| StartupError::Config(vec![format!("participant.ca_file: {e}")]))?;
        let outbound = Arc::new(
            settings
                .participant
                .outbound()
                .map_err(StartupError::Config)?,
        );
        let sealer = store::Sealer::from_key_file(&settings.secrets.key_file)
            .map_err(|e| StartupError::Config(vec![format!("secrets.key_file: {e}")]))?;
        let single = store::lock_single_instance(&settings.database.url)?;
        let db = store::connect(
            &settings.database.url,
            settings.database.max_connections,
            Duration::from_millis(settings.cluster.lease_ms),
        )
        .await?;
        let sql = SqlStore::new(
            db,
            settings.database.writers,
            settings.database.max_queued_writes,
            std::time::Duration::from_millis(settings.database.write_timeout_ms),
            sealer,
        );
        let reads = sql.reads();
        let purger = sql.purger();
        let service_log = sql.services();
        let definitions = sql.definitions();
        let store: Arc<dyn SagaLog> = Arc::new(sql);
        let metrics = Arc::new(Metrics::new());
        let instance_id = settings.cluster.resolved_instance_id();
        let lease = Arc::new(Lease::new(&instance_id, settings.cluster.lease_ms));
        // A configured id names this instance across restarts: its earlier runs are dead; on
        // SQLite every earlier run is (this process holds the lock).
        let earlier = if single.is_some() {
            EarlierRuns::AllDead
        } else if !settings.cluster.instance_id.is_empty() {
            EarlierRuns::OfThisId
        } else {
            EarlierRuns::MayLive
        };
        // Registered, then renewed, on a thread and a connection of the keeper's own.
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (keeper, resume) = Keeper::start(
            lease.clone(),
            &settings.database.url,
            earlier,
            metrics.clone(),
            clock.clone(),
        )
        .await?;
        let shared = Arc::new(Shared {
            store,
            reads,
            participant: Participant::new(
                &roots,
                outbound.clone(),
                settings.participant.max_in_flight,
            )
            .map_err(StartupError::Client)?,
            defaults: settings.defaults(),
            outbound: outbound.clone(),
            metrics: metrics.clone(),
            finished: Default::default(),
            stopping: AtomicBool::new(false),
            work: TaskTracker::new(),
            alerter: crate::alerts::Alerter::new(
                Some(settings.alerts.webhook_url.clone()),
                settings.alerts.max_attempts,
                settings.alerts.timeout_ms,
                &roots,
                &outbound,
            ),
            evict_idle_after_ms: settings.runtime.evict_idle_after_ms as i64,
            lease: lease.clone(),
            secrets: crate::domain::SecretHeaders::new(&settings.participant.secret_headers),
            services: Arc::new(crate::services::Services::new(
                settings.participant.breaker.policy(),
                settings.participant.breaker.overrides(),
                clock.clone(),
                metrics.clone(),
            )),
            clock,
        });
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let n = if settings.runtime.saga_arbiters == 0 {
            cores
        } else {
            settings.runtime.saga_arbiters
        };
        let arbiters: Vec<Arbiter> = (0..n).map(|_| Arbiter::new()).collect();
        // Definitions kept as files: a bad one stops the start, naming its file and pointer.
        if !settings.definitions.dir.is_empty() {
            store_definition_files(
                std::path::Path::new(&settings.definitions.dir),
                &definitions,
                &shared,
            )
            .await?;
        }
        // Sagas of an older version get the definition they run with, before any is driven.
        crate::upgrade::resolve_legacy_definitions(&shared.reads, &shared.defaults).await?;
        let (registry, timer) = Registry::start(
            shared.clone(),
            arbiters.iter().map(Arbiter::handle).collect(),
            settings.cluster.poll_ms,
            settings.runtime.max_live_sagas,
        );
        registry.send(Rehydrate { resume }).await?;
        tracing::info!(instance_id = %instance_id, lease_ms = settings.cluster.lease_ms, "instance");

        let listener = TcpListener::bind(&settings.server.bind)?;
        let addr = listener.local_addr()?;
        let state = web::Data::new(AppState {
            registry: registry.clone(),
            shared: shared.clone(),
            max_body_bytes: settings.server.max_body_bytes,
            secrets: crate::domain::SecretHeaders::new(&settings.participant.secret_headers),
            purger: purger.clone(),
            trace_url: settings.tracing.trace_url.clone(),
            service_log: service_log.clone(),
            definitions: definitions.clone(),
        });
        // Retention: every instance sweeps in turn; it stops with the service.
        let sweeper = crate::retention::Sweeper {
            purger,
            store: shared.store.clone(),
            reads: shared.reads.clone(),
            metrics: metrics.clone(),
            clock: shared.clock.clone(),
            secrets: crate::domain::SecretHeaders::new(&settings.participant.secret_headers),
            settings: settings.retention.clone(),
            holder: lease.holder(),
            archive: (!settings.retention.archive_dir.is_empty()).then(|| {
                crate::retention::archive::Archive::new(
                    &settings.retention.archive_dir,
                    &instance_id,
                )
            }),
        };
        let sweeping = tokio_util::sync::CancellationToken::new();
        let sweep = actix_web::rt::spawn(sweeper.run(sweeping.clone()));
        // Operators' pauses of services hold on every instance: each follows the log's.
        actix_web::rt::spawn(crate::services::follow_pauses(
            service_log,
            shared.services.clone(),
            Duration::from_millis(settings.cluster.poll_ms),
            sweeping.clone(),
        ));
        let tokens = web::Data::new(settings.auth.tokens().map_err(StartupError::Config)?);
        if tokens.is_open() {
            tracing::warn!(bind = %settings.server.bind, "no [auth] tokens: the API is open to anyone who reaches it");
        }
        let demo = settings.demo.enabled;
        let shop = if demo {
            Some(web::Data::new(
                crate::demo::DemoShop::open()
                    .await
                    .map_err(StartupError::Demo)?,
            ))
        } else {
            None
        };
        // DTM's clients often hard-code a port of their own (36789): a second listener.
        let dtm_listener = match settings.dtm.bind.as_str() {
            "" => None,
            bind => Some(TcpListener::bind(bind)?),
        };
        let dtm_addr = dtm_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let anonymous_dtm = dtm_addr
            .filter(|_| settings.dtm.allow_anonymous)
            .map(|a| web::Data::new(api::auth::AnonymousDtm(a)));
        let grace = Duration::from_millis(settings.server.shutdown_grace_ms);
        let mut server = HttpServer::new(move || {
            App::new()
                // Each route checks its caller's token (api::routes) inside the access log, so
                // that a refused request is logged too, with `who`.
                .wrap(TracingLogger::<api::access_log::SagaRootSpan>::new())
                .app_data(state.clone())
                .app_data(tokens.clone())
                .configure(|c| {
                    if let Some(a) = &anonymous_dtm {
                        c.app_data(a.clone());
                    }
                })
                .configure(api::routes)
                .configure(crate::console::routes)
                .configure(|c| {
                    if let Some(shop) = &shop {
                        crate::demo::routes(c, shop.clone())
                    }
                })
                .default_service(api::unknown_path())
        })
        .listen(listener)?;
        if let Some(l) = dtm_listener {
            server = server.listen(l)?;
        }
        let mut server = server
            .shutdown_timeout(grace.as_secs().max(1))
            // Signals are ours: the first thing a stop does is to stop new participant calls.
            .disable_signals();
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.run();
        tracing::info!(bound = %addr, demo, "listening");
        if let Some(a) = dtm_addr {
            tracing::info!(dtm_bound = %a, anonymous = settings.dtm.allow_anonymous, "listening for DTM clients");
        }
        Ok(Application {
            _single: single,
            keeper,
            port: addr.port(),
            dtm_port: dtm_addr.map(|a| a.port()),
            server,
            shared,
            arbiters,
            registry,
            timer,
            grace,
            sweep: Some((sweeping, sweep)),
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the `dtm.bind` listener, if there is one.
    pub fn dtm_port(&self) -> Option<u16> {
        self.dtm_port
    }

    /// A handle that stops the HTTP server (as SIGTERM does).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or [`Self::handle`]`.stop`), then lets participant calls in
    /// flight finish for the grace period; anything unfinished resumes at the next start.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (handle, shared) = (self.server.handle(), self.shared.clone());
        let signals = actix_web::rt::spawn(async move {
            stop_signal().await;
            shared.stopping.store(true, Ordering::SeqCst);
            tracing::info!(
                "stop signal: no new sagas or participant calls; finishing calls in flight"
            );
            handle.stop(true).await;
        });
        let res = self.server.await;
        signals.abort();
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Calls in flight and the log writes of their answers; nothing new starts once stopping.
        self.shared.work.close();
        let _ = tokio::time::timeout(self.grace, self.shared.work.wait()).await;
        let left = self.shared.work.len();
        // Another instance takes over at once rather than after the lease; what is unfinished
        // here resumes there (or at this instance's next start).
        if let Some((stop, task)) = self.sweep {
            // A sweep under way finishes its batch (a transaction); the turn is given up.
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let mut keeper = self.keeper;
        keeper.stop();
        let owner = self.shared.lease.token().owner;
        match self.shared.store.release_all(&owner).await {
            Ok(n) => {
                self.shared.metrics.lease.released.inc_by(n);
                tracing::info!(
                    work_in_flight = left,
                    released = n,
                    "stopped; unfinished sagas resume on another instance or at the next start"
                );
            }
            Err(e) => tracing::warn!(
                work_in_flight = left,
                error = %e,
                "stopped; leases could not be given up and expire after cluster.lease_ms"
            ),
        }
        self.registry.do_send(Shutdown);
        self.timer.do_send(Shutdown);
        for a in &self.arbiters {
            a.stop();
        }
        res
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Stores every definition of `dir` (a new version where one changed), after checking all.
async fn store_definition_files(
    dir: &std::path::Path,
    log: &store::DefinitionLog,
    shared: &Shared,
) -> Result<(), StartupError> {
    let files = crate::definition_files::read_dir(dir, &shared.defaults, &shared.outbound)
        .map_err(|errs| {
            StartupError::Config(
                errs.into_iter()
                    .map(|e| format!("definitions.dir: {e}"))
                    .collect(),
            )
        })?;
    for f in files {
        let file = f.file.file_name().unwrap_or_default().to_string_lossy();
        let put = log
            .put(
                &f.name,
                &f.checked.document,
                f.checked.description.as_deref(),
                shared.clock.now_ms(),
                &format!("file:{file}"),
            )
            .await?;
        let (action, d) = match put {
            store::Put::Created(d) => ("created", d),
            store::Put::Unchanged(d) => ("unchanged", d),
        };
        shared
            .metrics
            .definition_changes
            .with_label_values(&[action])
            .inc();
        tracing::info!(definition = %d.name, version = d.version, action, %file, "definition file");
    }
    Ok(())
}
