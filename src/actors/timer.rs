//! The timer actor: wakes sagas when a backoff retry, a delayed compensation or a deadline is due.
//!
//! Each saga has at most one pending wake (the earliest thing it waits for); a new one replaces
//! it and [`Cancel`] removes it, so a saga that ended or got stuck is never woken again and
//! `saga_timers_pending` counts live wakes only. Timers live in memory; their due times are
//! durable in the saga log (`next_wake_at`), so after a restart they are scheduled again.

use super::now_ms;
use super::registry::{Registry, Wake};
use crate::metrics::Metrics;
use actix::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Ask for a [`Wake`] of saga `id` at `at_ms`, replacing its pending wake if it has one.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Schedule {
    /// Saga id.
    pub id: String,
    /// Due time, ms since epoch.
    pub at_ms: i64,
}

/// Forget the pending wake of saga `id` (it ended, got stuck, or waits for nothing now).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Cancel {
    /// Saga id.
    pub id: String,
}

/// Tells the timer where to deliver wakes (the registry starts after the timer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetRegistry(pub Addr<Registry>);

/// Stops the actor (the timer or the registry) at shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Pending wakes, one per saga, in due order.
#[derive(Debug, Default)]
pub struct Wakes {
    order: BTreeSet<(i64, Arc<str>)>,
    by_id: HashMap<Arc<str>, i64>,
}

impl Wakes {
    /// Sets the wake of `id` to `at`, replacing any earlier or later one.
    pub fn set(&mut self, id: &str, at: i64) {
        if let Some((key, old)) = self.by_id.get_key_value(id) {
            if *old == at {
                return;
            }
            let key = key.clone();
            self.order.remove(&(*old, key.clone()));
            self.order.insert((at, key.clone()));
            self.by_id.insert(key, at);
        } else {
            let key: Arc<str> = Arc::from(id);
            self.order.insert((at, key.clone()));
            self.by_id.insert(key, at);
        }
    }

    /// Removes the wake of `id`, if any.
    pub fn cancel(&mut self, id: &str) {
        if let Some((key, at)) = self.by_id.remove_entry(id) {
            self.order.remove(&(at, key));
        }
    }

    /// Removes and returns every saga due at `now`, earliest first.
    pub fn pop_due(&mut self, now: i64) -> Vec<Arc<str>> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.order.first() {
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.order.pop_first() {
                self.by_id.remove(&id);
                due.push(id);
            }
        }
        due
    }

    /// The earliest due time.
    pub fn next(&self) -> Option<i64> {
        self.order.first().map(|(at, _)| *at)
    }

    /// Pending wakes.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Holds the pending wakes and keeps one actix timer armed for the earliest.
pub struct Timer {
    wakes: Wakes,
    armed: Option<(i64, SpawnHandle)>,
    registry: Option<Addr<Registry>>,
    metrics: Arc<Metrics>,
}

impl Timer {
    /// An empty timer.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Timer {
            wakes: Wakes::default(),
            armed: None,
            registry: None,
            metrics,
        }
    }

    fn fire(&mut self, ctx: &mut Context<Self>) {
        self.armed = None;
        for id in self.wakes.pop_due(now_ms()) {
            if let Some(r) = &self.registry {
                r.do_send(Wake { id: id.to_string() });
            }
        }
        self.arm(ctx);
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        self.metrics.timers_pending.set(self.wakes.len() as i64);
        let Some(at) = self.wakes.next() else {
            return;
        };
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
        self.wakes.set(&msg.id, msg.at_ms);
        self.arm(ctx);
    }
}

impl Handler<Cancel> for Timer {
    type Result = ();

    fn handle(&mut self, msg: Cancel, _: &mut Context<Self>) {
        // An armed timer for a cancelled wake fires and finds nothing due: harmless.
        self.wakes.cancel(&msg.id);
        self.metrics.timers_pending.set(self.wakes.len() as i64);
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

#[cfg(test)]
mod tests {
    use super::Wakes;

    #[test]
    fn one_wake_per_saga_replaced_and_cancelled() {
        let mut w = Wakes::default();
        w.set("a", 30);
        w.set("b", 10);
        w.set("a", 20);
        assert_eq!(w.len(), 2, "a second wake of a replaces the first");
        assert_eq!(w.next(), Some(10));
        w.cancel("b");
        assert_eq!(w.next(), Some(20));
        assert!(w.pop_due(19).is_empty());
        assert_eq!(
            w.pop_due(25).iter().map(|s| &**s).collect::<Vec<_>>(),
            ["a"]
        );
        assert!(w.is_empty());
        w.cancel("nobody");
        assert!(w.is_empty());
    }

    #[test]
    fn due_wakes_come_out_earliest_first() {
        let mut w = Wakes::default();
        for (id, at) in [("c", 3), ("a", 1), ("d", 9), ("b", 2)] {
            w.set(id, at);
        }
        let due: Vec<String> = w.pop_due(5).iter().map(|s| s.to_string()).collect();
        assert_eq!(due, ["a", "b", "c"]);
        assert_eq!(w.len(), 1);
    }
}
