//! Retention (docs/saga-log.md, "Retention"): ended sagas leave the log when their time comes,
//! archived first when `retention.archive_dir` is set, each leaving a tombstone that keeps its
//! id reserved for `retention.tombstone_ms`.
//!
//! When a saga is due is the domain's rule (`domain::retention`), written with the transition
//! that ends it; this module only sweeps: one instance at a time (a turn in `saga_sweeps`),
//! every `retention.sweep_ms`, in small batches on the pool's own connections, never through
//! the log writer.

pub mod archive;

use crate::actors::clock::Clock;
use crate::api::resource::{full_view, History};
use crate::config::RetentionSettings;
use crate::domain::SecretHeaders;
use crate::metrics::Metrics;
use crate::store::{request_sha256, Purger, Reads, SagaLog, SagaRecord, StoreError, Tombstone};
use archive::Archive;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Sagas purged per transaction: small enough that no lock is held long.
const BATCH: u64 = 100;
/// Tombstones expired per statement.
const TOMBSTONE_BATCH: u64 = 1_000;

/// The sweep of one instance.
pub struct Sweeper {
    /// Retention's side of the log.
    pub purger: Purger,
    /// Loads the sagas found due.
    pub store: Arc<dyn SagaLog>,
    /// Their calls and operator actions, for the archive.
    pub reads: Reads,
    /// Counts what was purged and archived.
    pub metrics: Arc<Metrics>,
    /// The time of day.
    pub clock: Arc<dyn Clock>,
    /// Secret header values are archived as `***`.
    pub secrets: SecretHeaders,
    /// `[retention]`.
    pub settings: RetentionSettings,
    /// This process (`{instance_id}#{run}`): whose turn it is.
    pub holder: String,
    /// Where purged sagas go first, if anywhere.
    pub archive: Option<Archive>,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Sagas purged.
    pub purged: u64,
    /// Tombstones that ended.
    pub expired: u64,
}

impl Sweeper {
    /// Sweeps every `sweep_ms` until `stop` is cancelled (a sweep under way finishes its
    /// batch); gives its turn up on the way out, so that another instance sweeps at once.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.sweep_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self.sweep().await {
                Ok(s) if s.purged + s.expired > 0 => {
                    tracing::info!(
                        purged = s.purged,
                        tombstones_expired = s.expired,
                        "retention sweep"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "retention sweep failed; tried again at the next one")
                }
            }
        }
        let _ = self.purger.give_up_turn(&self.holder).await;
    }

    /// How long a turn holds without renewal: a sweeper that died hands over after this.
    fn hold_ms(&self) -> i64 {
        (self.settings.sweep_ms as i64 * 3).clamp(1_000, 60_000)
    }

    /// One sweep: the lag gauge on every instance; purges on the one whose turn it is, until
    /// nothing is due or the sweep's time (`sweep_ms`, at least a second) is used up.
    pub async fn sweep(&self) -> Result<Swept, StoreError> {
        let now = self.clock.now_ms();
        let lag = match self.purger.oldest_due(now).await? {
            Some(due) => (now - due).max(0) as f64 / 1000.0,
            None => 0.0,
        };
        self.metrics.purge_lag.set(lag);
        let mut swept = Swept::default();
        if !self
            .purger
            .take_turn(&self.holder, now, now + self.hold_ms())
            .await?
        {
            return Ok(swept);
        }
        swept.expired = self.purger.expire_tombstones(now, TOMBSTONE_BATCH).await?;
        let budget = Instant::now() + Duration::from_millis(self.settings.sweep_ms.max(1_000));
        // Busy until shown quiet: the first batch is a small one.
        let mut busy = true;
        let mut writes_before = self.log_writes();
        loop {
            let batch = Instant::now();
            let now = self.clock.now_ms();
            let ids = self
                .purger
                .due(now, batch_size(busy, self.settings.sweep_rate))
                .await?;
            if ids.is_empty() {
                break;
            }
            let records = self.store.load_many(&ids).await?;
            if records.len() < ids.len() {
                tracing::warn!(
                    due = ids.len(),
                    readable = records.len(),
                    "sagas due for purging cannot be read; they are left in the log"
                );
            }
            let gone = self.purge(records, now).await?;
            if gone == 0 {
                break;
            }
            swept.purged += gone;
            // Yield to the log writer: a purge costs the database about what a saga's writes
            // do, so while sagas run or are written (since the last look: over the pause and
            // this batch) the sweep keeps to `sweep_rate`.
            // Live saga actors count too: a writer stalled on the database writes nothing,
            // and is no less busy.
            let writes = self.log_writes();
            busy = writes > writes_before || self.metrics.actors.get() > 0;
            writes_before = writes;
            let pause = pause_after(batch.elapsed(), gone, busy, self.settings.sweep_rate);
            tracing::debug!(
                purged = gone,
                busy,
                took_ms = batch.elapsed().as_millis() as u64,
                pause_ms = pause.as_millis() as u64,
                "retention batch"
            );
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let now = self.clock.now_ms();
            if Instant::now() > budget
                || !self
                    .purger
                    .take_turn(&self.holder, now, now + self.hold_ms())
                    .await?
            {
                break;
            }
        }
        Ok(swept)
    }

    /// The log writes (starts and transitions) this instance made so far.
    fn log_writes(&self) -> u64 {
        self.metrics.write_create.get_sample_count()
            + self.metrics.write_transition.get_sample_count()
    }

    /// Archives (if configured, synced before anything is deleted) and purges one batch.
    async fn purge(&self, records: Vec<SagaRecord>, now: i64) -> Result<u64, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        let archived_in = match &self.archive {
            None => None,
            Some(archive) => Some(self.archive(archive, &records, now).await?),
        };
        let expires_at = now.saturating_add(self.settings.tombstone_ms as i64);
        let doomed: Vec<Tombstone> = records
            .iter()
            .map(|r| Tombstone {
                id: r.id.clone(),
                name: r.name.clone(),
                request_sha256: request_sha256(&r.request),
                status: r.state.status,
                // A transition is the last change of an ended saga: its end.
                finished_at: r.updated_at,
                purged_at: now,
                archived_in: archived_in.clone(),
                expires_at,
            })
            .collect();
        let gone = self.purger.purge(&doomed, now).await?;
        for t in &gone {
            self.metrics
                .purged
                .with_label_values(&[t.status.as_str()])
                .inc();
        }
        Ok(gone.len() as u64)
    }

    /// Appends the sagas, each as `GET …?include=attempts,request` shows it, to the archive
    /// file of this hour; answers the file.
    async fn archive(
        &self,
        archive: &Archive,
        records: &[SagaRecord],
        now: i64,
    ) -> Result<String, StoreError> {
        let mut lines = Vec::with_capacity(records.len());
        for r in records {
            let history = History {
                calls: self.reads.calls(&r.id).await?,
                operator: self.reads.operator_actions(&r.id).await?,
            };
            let view = full_view(r, Some(&history), Some(&self.secrets));
            lines.push(serde_json::to_string(&view).unwrap_or_default());
        }
        let archive = archive.clone();
        let (file, bytes) = tokio::task::spawn_blocking(move || archive.append(now, &lines))
            .await
            .map_err(|e| StoreError::Unavailable(format!("archive writer: {e}")))?
            .map_err(|e| StoreError::Unavailable(format!("cannot append to the archive: {e}")))?;
        self.metrics.archived_bytes.inc_by(bytes);
        Ok(file)
    }
}

/// Sagas purged per transaction: a full batch on a quiet log, a quarter of a second's worth
/// of `rate` on a busy one (its pauses stay short).
fn batch_size(busy: bool, rate: u64) -> u64 {
    if busy {
        (rate / 4).clamp(1, BATCH)
    } else {
        BATCH
    }
}

/// How long the sweep pauses after purging `gone` sagas in `spent`: none on a quiet log
/// (nobody waits for the database), else as long as keeps it to `rate` sagas a second.
fn pause_after(spent: Duration, gone: u64, busy: bool, rate: u64) -> Duration {
    if !busy {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(gone as f64 / rate.max(1) as f64).saturating_sub(spent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_log_keeps_the_sweep_to_its_rate() {
        let spent = Duration::from_millis(50);
        assert_eq!(
            pause_after(spent, 25, true, 100),
            Duration::from_millis(200)
        );
        assert_eq!(
            pause_after(spent, 100, true, 1000),
            Duration::from_millis(50)
        );
        // A batch slower than the rate: no pause on top.
        assert_eq!(pause_after(spent, 1, true, 1000), Duration::ZERO);
        assert_eq!(batch_size(true, 100), 25);
        assert_eq!(batch_size(true, 2), 1);
        assert_eq!(batch_size(true, 100_000), BATCH);
    }

    #[test]
    fn a_quiet_log_lets_the_sweep_run_flat_out() {
        assert_eq!(
            pause_after(Duration::from_millis(50), 100, false, 100),
            Duration::ZERO
        );
        assert_eq!(batch_size(false, 100), BATCH);
    }
}
