//! A new saga: recorded with its first transition folded into the insert (one commit), then
//! its actor started with the commands of that transition.

use super::Registry;
use crate::actors::messages::{StartOutcome, StartSaga};
use crate::actors::saga::SagaActor;
use crate::domain::{Event, Input, SagaState};
use crate::store::{Created, SagaRecord, StepMeta, StoreError};
use actix::prelude::*;
use std::sync::Arc;

impl Handler<StartSaga> for Registry {
    type Result = ResponseActFuture<Self, Result<StartOutcome, StoreError>>;

    fn handle(&mut self, msg: StartSaga, _: &mut Context<Self>) -> Self::Result {
        if self.room() == 0 {
            let why = format!(
                "{} sagas are live (runtime.max_live_sagas)",
                self.live.len()
            );
            return Box::pin(actix::fut::ready(Err(StoreError::Unavailable(why))));
        }
        let now = self.now_ms();
        let def = Arc::new(msg.def);
        // The first transition is folded into the insert: one commit, then the first calls.
        let mut state = SagaState::new(&def, now);
        let cmds = state
            .apply(&def, Input::new(now, 1.0), &Event::Start)
            .unwrap_or_default();
        let token = self.shared.lease.token();
        let record = SagaRecord {
            owner: Some(token.owner.to_string()),
            purge_at: def.retention.purge_at(state.status, now),
            kept: false,
            id: msg.id,
            name: def.name.clone(),
            mode: def.mode,
            request: msg.request,
            definition: Ok(def.clone()),
            created_at: now,
            updated_at: now,
            version: 0,
            steps: StepMeta::of(&def),
            state,
        };
        let store = self.shared.store.clone();
        let t = tokio::time::Instant::now();
        Box::pin(
            async move {
                let res = store.create(&record).await;
                (res, record)
            }
            .into_actor(self)
            .map(move |(res, record), act, ctx| {
                act.shared.metrics.write_create.observe(t.elapsed().as_secs_f64());
                match res? {
                    Created::Existing(r) => Ok(StartOutcome::Existing(r)),
                    Created::Purged(t) => Ok(StartOutcome::Purged(t)),
                    Created::New => {
                        act.shared.metrics.started.with_label_values(&[&record.name]).inc();
                        tracing::info!(saga_id = %record.id, saga_name = %record.name, steps = record.steps.len(), "saga started");
                        let (id, r) = (record.id.clone(), record.clone());
                        act.spawn(id, move |links| SagaActor::fresh(r, def, cmds, token, links), ctx);
                        Ok(StartOutcome::Created(Box::new(record)))
                    }
                }
            }),
        )
    }
}
