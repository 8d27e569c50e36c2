//! The timer actor: wakes sagas when a backoff retry, a delayed compensation or a deadline is due.
//!
//! Timers live in memory only; their due times are durable in the saga log (`next_attempt_at`,
//! `deadline_at`), so after a restart rehydrated sagas simply schedule them again.

use super::now_ms;
use super::registry::{Registry, Wake};
use crate::metrics::Metrics;
use actix::prelude::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

/// Ask for a [`Wake`] of saga `id` at `at_ms`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Schedule {
    /// Saga id.
    pub id: String,
    /// Due time, ms since epoch.
    pub at_ms: i64,
}

/// Tells the timer where to deliver wakes (the registry starts after the timer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRegistry(pub Addr<Registry>);

/// Stops the actor (the timer or the registry) at shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Holds pending wake-ups in a min-heap and keeps one actix timer armed for the earliest.
pub struct Timer {
    heap: BinaryHeap<Reverse<(i64, String)>>,
    armed: Option<(i64, SpawnHandle)>,
    registry: Option<Addr<Registry>>,
    metrics: Arc<Metrics>,
}

impl Timer {
    /// An empty timer.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Timer {
            heap: BinaryHeap::new(),
            armed: None,
            registry: None,
            metrics,
        }
    }

    fn fire(&mut self, ctx: &mut Context<Self>) {
        self.armed = None;
        let now = now_ms();
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, id))) = self.heap.pop() else {
                break;
            };
            if let Some(r) = &self.registry {
                r.do_send(Wake { id });
            }
        }
        self.arm(ctx);
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        self.metrics.timers_pending.set(self.heap.len() as i64);
        let Some(Reverse((at, _))) = self.heap.peek() else {
            return;
        };
        let at = *at;
        if let Some((armed_at, handle)) = self.armed {
            if armed_at <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = Duration::from_millis((at - now_ms()).max(0) as u64);
        let handle = ctx.run_later(delay, |act, ctx| act.fire(ctx));
        self.armed = Some((at, handle));
    }
}

impl Actor for Timer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
    }
}

impl Handler<Schedule> for Timer {
    type Result = ();

    fn handle(&mut self, msg: Schedule, ctx: &mut Context<Self>) {
        self.heap.push(Reverse((msg.at_ms, msg.id)));
        self.arm(ctx);
    }
}

impl Handler<SetRegistry> for Timer {
    type Result = ();

    fn handle(&mut self, msg: SetRegistry, _: &mut Context<Self>) {
        self.registry = Some(msg.0);
    }
}

impl Handler<Shutdown> for Timer {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
