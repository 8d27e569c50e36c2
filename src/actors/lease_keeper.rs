//! The lease keeper: registers this instance's token at start-up (or takes over its earlier
//! run's), then renews it every `lease_ms / 5` until the service stops, on a thread and a
//! database connection of its own ([`LeaseLog`]): no saga work (a takeover's burst of claims
//! and loads, a queue behind the log writer, a busy pool, a busy actor thread) ever delays a
//! renewal. When a renewal comes too late (the database was unreachable, the process was
//! paused), the lease's generation ends: the registry sees it on the [`Lease`] and drops every
//! saga of that generation, and the keeper registers a new token.

use super::clock::Clock;
use super::lease::Lease;
use crate::metrics::Metrics;
use crate::store::{LeaseLog, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Which earlier runs a starting instance knows to be dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlierRuns {
    /// None known (a generated instance id): their sagas are taken over when their lease ends.
    MayLive,
    /// Those of this configured instance id: it is restarting.
    OfThisId,
    /// All (SQLite: this process holds the database's only lock).
    AllDead,
}

/// The running keeper; dropping it (or [`Keeper::stop`]) ends the renewals.
pub struct Keeper {
    stop: Option<oneshot::Sender<()>>,
}

impl Keeper {
    /// Starts the keeper's thread on the saga log at `url`, registers this instance (see
    /// [`register`]) and answers the earlier run's token taken over, if any: its sagas are this
    /// run's to resume. Renewals go on until the keeper is stopped.
    pub async fn start(
        lease: Arc<Lease>,
        url: &str,
        earlier: EarlierRuns,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Keeper, Option<Arc<str>>), StoreError> {
        let (registered, answer) = oneshot::channel();
        let (stop, stopped) = oneshot::channel();
        let url = url.to_string();
        std::thread::Builder::new()
            .name("lease-keeper".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let why = format!("cannot start the lease keeper: {e}");
                        let _ = registered.send(Err(StoreError::Unavailable(why)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let idle = Duration::from_millis(lease.lease_ms());
                    let log = match LeaseLog::connect(&url, idle).await {
                        Ok(log) => log,
                        Err(e) => return drop(registered.send(Err(e.into()))),
                    };
                    let res = register(&lease, &log, earlier, clock.now_ms()).await;
                    let ok = res.is_ok();
                    if registered.send(res).is_err() || !ok {
                        return;
                    }
                    tokio::select! {
                        _ = keep(&lease, &log, &metrics, &*clock) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the lease keeper: {e}")))?;
        let resume = answer.await.map_err(|_| {
            StoreError::Unavailable("the lease keeper stopped before registering".into())
        })??;
        Ok((Keeper { stop: Some(stop) }, resume))
    }

    /// Ends the renewals (the leases then run out, unless released first).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Registers this instance's token. When its earlier runs are known dead, the newest of their
/// tokens is taken over instead (answered: its sagas are this run's to resume) and the leases
/// of the others end, so that their sagas are taken over at once.
async fn register(
    lease: &Lease,
    log: &LeaseLog,
    earlier_runs: EarlierRuns,
    now_ms: i64,
) -> Result<Option<Arc<str>>, StoreError> {
    let t = lease.token();
    let sent = Instant::now();
    let dead = match earlier_runs {
        EarlierRuns::MayLive => None,
        EarlierRuns::OfThisId => Some(Some(lease.instance_id())),
        EarlierRuns::AllDead => Some(None),
    };
    let holder = lease.holder();
    let until = lease.until(now_ms);
    let Some(which) = dead else {
        log.register(&t.owner, lease.instance_id(), &holder, until)
            .await?;
        lease.activate(sent, t.generation);
        return Ok(None);
    };
    let adopted = log
        .adopt_earlier_run(which, lease.instance_id(), &holder, until)
        .await?;
    match &adopted {
        Some(token) => {
            lease.adopt(token, sent);
            tracing::info!(instance_id = %lease.instance_id(), token = %token, "took over the lease token of the earlier run; its sagas resume now");
        }
        None => {
            log.register(&t.owner, lease.instance_id(), &holder, until)
                .await?;
            lease.activate(sent, t.generation);
        }
    }
    let current = lease.token();
    let n = log.end_earlier_runs(which, &current.owner).await?;
    if n > 0 {
        tracing::info!(instance_id = %lease.instance_id(), runs = n, "ended the leases of earlier runs of this instance; their sagas resume now");
    }
    Ok(adopted.map(|_| current.owner))
}

/// Renews the lease every period until the process ends; when a renewal came too late, the
/// generation is given up (the registry drops its sagas) and a new token is registered.
async fn keep(lease: &Lease, log: &LeaseLog, metrics: &Metrics, clock: &dyn Clock) {
    let every = lease.period();
    let holder = lease.holder();
    let timed_out = || StoreError::Db(sea_orm::DbErr::Custom("lease statement timed out".into()));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Some(generation) = lease.expire_if_late() {
            metrics.lease.lost.inc();
            tracing::warn!(
                instance_id = %lease.instance_id(),
                generation,
                "lease expired before it could be renewed; dropping every saga of this instance (they are claimed again from the log)"
            );
        }
        let t = lease.token();
        let sent = Instant::now();
        let until = lease.until(clock.now_ms());
        if lease.remaining(&t).is_none() {
            // A new token: registered before it holds anything.
            let reg = tokio::time::timeout(
                every,
                log.register(&t.owner, lease.instance_id(), &holder, until),
            );
            match reg.await.unwrap_or_else(|_| Err(timed_out())) {
                Ok(()) => lease.activate(sent, t.generation),
                Err(e) => {
                    tracing::warn!(instance_id = %lease.instance_id(), error = %e, "cannot register a new lease token")
                }
            }
            continue;
        }
        // Bounded: a renewal stuck on a cut connection must not keep the keeper from noticing
        // the expiry.
        let renewal = tokio::time::timeout(every, log.renew(&t.owner, &holder, until));
        let res = renewal.await.unwrap_or_else(|_| Err(timed_out()));
        metrics.lease_renewal.observe(sent.elapsed().as_secs_f64());
        match res {
            Ok(true) => {
                lease.renewed(sent, t.generation);
                metrics.lease.renewed.inc();
            }
            Ok(false) => {
                lease.disowned(t.generation);
                tracing::warn!(instance_id = %lease.instance_id(), "lease token no longer registered, or taken over by another process; giving up its sagas")
            }
            Err(e) => {
                tracing::warn!(instance_id = %lease.instance_id(), error = %e, "cannot renew the lease")
            }
        }
    }
}
