//! Operator actions (abort, retry) on any instance: to the saga's actor here; else the saga
//! is claimed here; else another instance drives it, so the rule is checked on the log and the
//! action left in `saga_operator_requests` for its owner, which carries it out within a poll.

use super::Registry;
use crate::actors::messages::{OpError, Operate, Operation, OperatorAction};
use crate::domain::Input;
use crate::store::{Claimed, OperatorDetail, OperatorRequest, SagaLog, StoreError};
use actix::prelude::*;

/// Where an operator action goes after the first look.
enum Route {
    /// Answered.
    Done(Result<(), OpError>),
    /// Claimed here: start its actor and hand it the action.
    Claimed(Box<Claimed>),
    /// Another instance holds the saga (or nobody can): check the rule and leave a request.
    Elsewhere,
}

impl Handler<OperatorAction> for Registry {
    type Result = ResponseActFuture<Self, Result<(), OpError>>;

    /// To the saga's actor here; else the saga is claimed here; else (another instance drives
    /// it) the rule is checked on the log and the action left for its owner, who carries it
    /// out within one poll interval.
    fn handle(&mut self, msg: OperatorAction, _: &mut Context<Self>) -> Self::Result {
        let live = self.running(&msg.id).cloned();
        let (store, terms) = (self.shared.store.clone(), self.terms());
        let (id, op, who, here_only) = (msg.id, msg.op, msg.who, msg.here_only);
        let operate = Operate {
            op: op.clone(),
            who: who.clone(),
        };
        let first = {
            let (id, operate) = (id.clone(), operate.clone());
            async move {
                if let Some(addr) = live {
                    match addr.send(operate).await {
                        Ok(Err(OpError::Released)) | Err(_) => {}
                        Ok(r) => return Route::Done(r),
                    }
                }
                match store.claim(std::slice::from_ref(&id), &terms).await {
                    Ok(mut c) if !c.is_empty() => Route::Claimed(Box::new(c.remove(0))),
                    Ok(_) if here_only => Route::Done(Err(OpError::Unavailable)),
                    Ok(_) => Route::Elsewhere,
                    Err(_) => Route::Done(Err(OpError::Unavailable)),
                }
            }
        };
        let store = self.shared.store.clone();
        Box::pin(first.into_actor(self).then(move |route, act, ctx| {
            let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), OpError>>>> =
                match route {
                    Route::Done(r) => Box::pin(async move { r }),
                    Route::Claimed(c) => {
                        let addr = act.claimed(*c, true, ctx);
                        Box::pin(async move {
                            addr.send(operate)
                                .await
                                .unwrap_or(Err(OpError::Unavailable))
                        })
                    }
                    Route::Elsewhere => {
                        let now = act.now_ms();
                        Box::pin(async move { leave_for_owner(&*store, &id, op, who, now).await })
                    }
                };
            fut.into_actor(act)
        }))
    }
}

/// Checks the action against the saga's state in the log (the rule is the state machine's)
/// and leaves it for the instance that drives the saga.
async fn leave_for_owner(
    store: &dyn SagaLog,
    id: &str,
    op: Operation,
    who: String,
    now: i64,
) -> Result<(), OpError> {
    let r = match store.load(id).await {
        Ok(Some(r)) => r,
        Ok(None) | Err(_) => return Err(OpError::Unavailable),
    };
    let def = r.definition.map_err(OpError::Unloadable)?;
    r.state
        .decide(&def, Input::new(now, 1.0), &op.event(&def))?;
    store
        .request_operation(&OperatorRequest {
            request_id: 0,
            saga_id: id.to_string(),
            action: op.op,
            who,
            at: now,
            detail: OperatorDetail {
                reason: op.reason,
                step: op.step,
                edit: op.edit,
                ..OperatorDetail::default()
            },
        })
        .await
        .map_err(|_| OpError::Unavailable)
}

impl Registry {
    /// Carries out the operator actions asked of other instances for sagas this one can drive.
    pub(super) fn poll_requests(&mut self, ctx: &mut Context<Self>) {
        if self.requests_busy {
            return;
        }
        self.requests_busy = true;
        let store = self.shared.store.clone();
        let limit = std::time::Duration::from_millis(self.shared.lease.lease_ms());
        let fut = async move {
            tokio::time::timeout(limit, store.operation_requests(100))
                .await
                .unwrap_or_else(|_| Err(StoreError::timed_out()))
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.requests_busy = false;
            let Ok(requests) = res else { return };
            let me = ctx.address();
            for r in requests {
                let msg = OperatorAction {
                    id: r.saga_id.clone(),
                    op: Operation {
                        op: r.action,
                        step: r.detail.step.clone(),
                        reason: r.detail.reason.clone(),
                        edit: r.detail.edit.clone(),
                    },
                    who: r.who.clone(),
                    here_only: true,
                };
                let (store, me) = (act.shared.store.clone(), me.clone());
                let stale = act.now_ms() - r.at > act.shared.lease.lease_ms() as i64 + 2 * act.poll_every.as_millis() as i64;
                actix::spawn(async move {
                    let res = me.send(msg).await;
                    let done = match &res {
                        Ok(Ok(())) | Ok(Err(OpError::Rejected(_))) | Ok(Err(OpError::Unloadable(_))) => true,
                        _ if stale => {
                            tracing::warn!(saga_id = %r.saga_id, action = r.action.as_str(), who = %r.who, "operator action not carried out: no instance took the saga");
                            true
                        }
                        _ => false,
                    };
                    if let Ok(Err(e)) = &res {
                        if done && !stale {
                            tracing::warn!(saga_id = %r.saga_id, action = r.action.as_str(), error = %e, "operator action asked of another instance refused");
                        }
                    }
                    if done {
                        let _ = store.drop_operation_request(r.request_id).await;
                    }
                });
            }
        }));
    }
}
