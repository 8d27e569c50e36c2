//! A restart of a configured instance takes its earlier run's lease token over (see
//! `lease_keeper`): that run's unfinished sagas are this run's already, with nothing rewritten.
//! They are paged in here, their ids a page at a time through the status index and the sagas
//! loaded a few batches at once, as room for live actors allows; then the log is polled.

use super::poll::{LOADS, LOAD_BATCH};
use super::Registry;
use crate::actors::messages::Rehydrate;
use crate::store::{OwnedCursor, SagaRecord, StoreError};
use actix::prelude::*;
use std::sync::Arc;

/// Most ids of the earlier run's sagas read by one query.
const RESUME_PAGE: usize = 10_000;

/// The walk through the sagas held by the token taken over from the earlier run: ids are read
/// a page at a time, the sagas loaded a few batches at once.
pub(super) struct Resuming {
    /// The token (this run's current one, of generation 0).
    owner: Arc<str>,
    /// Where the next page of ids starts; none once every page was read.
    from: Option<OwnedCursor>,
    /// A page is being read.
    reading: bool,
    /// Ids read, waiting to be loaded.
    ids: Vec<String>,
    /// Sagas resumed so far.
    resumed: u64,
}

impl Registry {
    /// Resumes the sagas of the earlier run's token: reads the next page of their ids when
    /// none wait, and loads waiting ids a few batches at once, as room allows. Given up when
    /// the token's lease was lost (its sagas are then let go and claimed like any other).
    pub(super) fn resume(&mut self, ctx: &mut Context<Self>) {
        let Some(r) = &self.resuming else { return };
        let t = self.shared.lease.token();
        if *t.owner != *r.owner {
            self.resuming = None;
            return;
        }
        if self.shared.is_stopping() || self.shared.lease.remaining(&t).is_none() {
            return;
        }
        while self.loading < LOADS && self.room() > 0 {
            let n = self.room().min(LOAD_BATCH);
            let Some(r) = self.resuming.as_mut().filter(|r| !r.ids.is_empty()) else {
                break;
            };
            let ids: Vec<String> = r.ids.drain(..n.min(r.ids.len())).collect();
            self.load_resumed(ids, t.owner.clone(), ctx);
        }
        let room = self.room();
        let Some(r) = self.resuming.as_mut() else {
            return;
        };
        // The next page is read while the last batches of this one load, so loads never wait.
        if r.reading || r.ids.len() >= LOADS * LOAD_BATCH || room <= r.ids.len() {
            return;
        }
        let Some(from) = r.from.clone() else {
            if !r.ids.is_empty() || self.loading > 0 {
                return;
            }
            tracing::info!(actor = "registry", instance_id = %self.shared.lease.instance_id(), sagas = r.resumed, "resumed the sagas of the earlier run");
            self.resuming = None;
            return;
        };
        r.reading = true;
        let (store, owner) = (self.shared.store.clone(), r.owner.clone());
        let limit = (room - r.ids.len()).min(RESUME_PAGE) as u64;
        let bound = std::time::Duration::from_millis(self.shared.lease.lease_ms());
        let fut = async move {
            tokio::time::timeout(bound, store.owned_page(&owner, &from, limit))
                .await
                .unwrap_or_else(|_| Err(StoreError::timed_out()))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let Some(r) = act.resuming.as_mut() else { return };
            r.reading = false;
            match res {
                Ok((ids, next)) => {
                    r.ids.extend(ids);
                    r.from = next;
                }
                Err(e) => {
                    tracing::warn!(actor = "registry", error = %e, "cannot read the sagas of the earlier run; trying again at the next poll");
                    return;
                }
            }
            act.resume(ctx);
        }));
    }

    /// Loads a batch of the earlier run's sagas and starts their actors: they are this run's
    /// already (the token was taken over), so nothing is written.
    fn load_resumed(&mut self, ids: Vec<String>, owner: Arc<str>, ctx: &mut Context<Self>) {
        self.loading += 1;
        let store = self.shared.store.clone();
        let fut = async move { (store.load_many(&ids).await, ids) };
        ctx.spawn(fut.into_actor(self).map(move |(res, ids), act, ctx| {
            act.loading -= 1;
            match res {
                Ok(records) => {
                    let mine: Vec<SagaRecord> = records
                        .into_iter()
                        .filter(|r| r.owner.as_deref() == Some(&*owner))
                        .collect();
                    let n = mine.len() as u64;
                    act.shared.metrics.lease.resumed.inc_by(n);
                    if let Some(r) = act.resuming.as_mut() {
                        r.resumed += n;
                    }
                    for record in mine {
                        act.start_loaded(record, false, ctx);
                    }
                }
                Err(e) => {
                    tracing::warn!(actor = "registry", error = %e, "cannot load sagas of the earlier run; trying again at the next poll");
                    if let Some(r) = act.resuming.as_mut() {
                        r.ids.extend(ids);
                    }
                }
            }
            act.resume(ctx);
            act.load_due(ctx);
        }));
    }
}

impl Handler<Rehydrate> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Rehydrate, ctx: &mut Context<Self>) {
        self.resuming = msg.resume.map(|owner| Resuming {
            owner,
            from: Some(OwnedCursor::default()),
            reading: false,
            ids: Vec::new(),
            resumed: 0,
        });
        // Work is found by query, not by memory: nothing is loaded up front, and sagas with
        // long delays cost no memory until they are due.
        self.poll(ctx);
        ctx.run_interval(self.poll_every, |act, ctx| act.poll(ctx));
        tracing::info!(
            actor = "registry",
            instance_id = %self.shared.lease.instance_id(),
            "looking for due sagas in the saga log"
        );
    }
}
