//! The timer actor: wakes sagas when a backoff retry, a delayed compensation or a deadline is due.
//!
//! Each saga has at most one pending wake (the earliest thing it waits for); a new one replaces
//! it and [`Cancel`] removes it, so a saga that ended or got stuck is never woken again and
//! `saga_timers_pending` counts live wakes only. The wakes sit in a `tokio_util` `DelayQueue`
//! (its keys replace and remove them); they live in memory only: their due times are durable in
//! the saga log (`next_wake_at`), so after a restart they are scheduled again. Due times are
//! wall-clock (the [`Clock`]), waits are tokio's, so tests run it on a paused clock.

use super::clock::Clock;
use super::messages::{Cancel, Schedule, Shutdown, Wake};
use crate::metrics::Metrics;
use actix::fut::ActorStream;
use actix::prelude::*;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio_util::time::{delay_queue, DelayQueue};

/// The longest a wake waits in the queue at once (the queue holds about two years at most); a
/// later one is put back when this passes, until it is due.
const FURTHEST: Duration = Duration::from_secs(24 * 3600);

/// Holds the pending wakes and sends each due one to the registry.
pub struct Timer {
    queue: DelayQueue<Arc<str>>,
    /// The pending wake of each saga: when, and its place in the queue.
    wakes: HashMap<Arc<str>, (i64, delay_queue::Key)>,
    wake: Recipient<Wake>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl Timer {
    /// A timer that delivers wakes to `wake`.
    pub fn new(wake: Recipient<Wake>, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        Timer {
            queue: DelayQueue::new(),
            wakes: HashMap::new(),
            wake,
            clock,
            metrics,
        }
    }

    /// How long from now until `at_ms`, at most [`FURTHEST`].
    fn delay(&self, at_ms: i64) -> Duration {
        let ms = (at_ms - self.clock.now_ms()).max(0) as u64;
        Duration::from_millis(ms).min(FURTHEST)
    }

    /// Sets the wake of `id` to `at_ms`, replacing any earlier or later one.
    fn set(&mut self, id: &str, at_ms: i64) {
        let delay = self.delay(at_ms);
        match self.wakes.get_mut(id) {
            Some((at, _)) if *at == at_ms => {}
            Some((at, key)) => {
                *at = at_ms;
                self.queue.reset(key, delay);
            }
            None => {
                let id: Arc<str> = Arc::from(id);
                let key = self.queue.insert(id.clone(), delay);
                self.wakes.insert(id, (at_ms, key));
            }
        }
        self.count();
    }

    /// Removes the wake of `id`, if any.
    fn cancel(&mut self, id: &str) {
        if let Some((_, key)) = self.wakes.remove(id) {
            self.queue.remove(&key);
        }
        self.count();
    }

    /// A wake left the queue: sent, or put back when it is not due yet (a distant one).
    fn expired(&mut self, id: Arc<str>) {
        let Some((at, _)) = self.wakes.remove(&id) else {
            return;
        };
        if at > self.clock.now_ms() {
            let key = self.queue.insert(id.clone(), self.delay(at));
            self.wakes.insert(id, (at, key));
            return;
        }
        self.count();
        self.wake.do_send(Wake { id: id.to_string() });
    }

    fn count(&self) {
        self.metrics.timers_pending.set(self.wakes.len() as i64);
    }
}

/// The queue's expired wakes, as a stream the actor's context polls.
struct Expired;

impl ActorStream<Timer> for Expired {
    type Item = Arc<str>;

    fn poll_next(
        self: Pin<&mut Self>,
        act: &mut Timer,
        _: &mut Context<Timer>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<Option<Arc<str>>> {
        match act.queue.poll_expired(task) {
            Poll::Ready(Some(e)) => Poll::Ready(Some(e.into_inner())),
            // An empty queue keeps this task's waker and wakes it on the next insert.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

impl Actor for Timer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
        ctx.spawn(
            Expired
                .map(|id, act: &mut Timer, _| act.expired(id))
                .finish(),
        );
    }
}

impl Handler<Schedule> for Timer {
    type Result = ();

    fn handle(&mut self, msg: Schedule, _: &mut Context<Self>) {
        self.set(&msg.id, msg.at_ms);
    }
}

impl Handler<Cancel> for Timer {
    type Result = ();

    fn handle(&mut self, msg: Cancel, _: &mut Context<Self>) {
        self.cancel(&msg.id);
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
    use super::*;
    use crate::actors::clock::TokioClock;
    use std::sync::Mutex;
    use tokio::time::Instant;

    /// Notes every wake it receives, with when (ms after the test's start).
    struct Woken(Arc<Mutex<Vec<(String, u64)>>>, Instant);

    impl Actor for Woken {
        type Context = Context<Self>;
    }

    impl Handler<Wake> for Woken {
        type Result = ();
        fn handle(&mut self, msg: Wake, _: &mut Context<Self>) {
            let at = self.1.elapsed().as_millis() as u64;
            self.0.lock().unwrap().push((msg.id, at));
        }
    }

    const T0: i64 = 1_000_000;

    #[actix_web::test]
    async fn wakes_come_when_due_replaced_and_cancelled_one_per_saga() {
        tokio::time::pause();
        let log = Arc::new(Mutex::new(vec![]));
        let woken = Woken(log.clone(), Instant::now()).start();
        let metrics = Arc::new(Metrics::new());
        let clock = Arc::new(TokioClock::new(T0));
        let timer = Timer::new(woken.recipient(), clock, metrics.clone()).start();
        let at = |id: &str, ms: i64| Schedule {
            id: id.into(),
            at_ms: T0 + ms,
        };
        timer.send(at("a", 300)).await.unwrap();
        timer.send(at("b", 100)).await.unwrap();
        timer.send(at("a", 200)).await.unwrap(); // replaces a's wake at 300
        timer.send(at("c", 150)).await.unwrap();
        timer.send(Cancel { id: "c".into() }).await.unwrap();
        assert_eq!(metrics.timers_pending.get(), 2, "a once, b; c cancelled");
        timer.send(at("late", -50)).await.unwrap(); // overdue: at once
        tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
        let log = log.lock().unwrap();
        let ids: Vec<&str> = log.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            ["late", "b", "a"],
            "once each, earliest first, replaced and cancelled ones never"
        );
        // Each when due, to the queue's millisecond (it rounds a deadline up to the next one).
        for ((_, at), due) in log.iter().zip([0, 100, 200]) {
            assert!((due..=due + 1).contains(at), "{log:?}");
        }
        assert_eq!(metrics.timers_pending.get(), 0);
    }

    #[actix_web::test]
    async fn a_wake_years_away_waits_in_steps_and_comes_on_time() {
        tokio::time::pause();
        let log = Arc::new(Mutex::new(vec![]));
        let woken = Woken(log.clone(), Instant::now()).start();
        let clock = Arc::new(TokioClock::new(T0));
        let timer = Timer::new(woken.recipient(), clock, Arc::new(Metrics::new())).start();
        let three_years = 3 * 365 * 24 * 3600 * 1000i64;
        let msg = Schedule {
            id: "far".into(),
            at_ms: T0 + three_years,
        };
        timer.send(msg).await.unwrap();
        tokio::time::sleep(Duration::from_millis(three_years as u64 - 1)).await;
        assert!(log.lock().unwrap().is_empty(), "not before it is due");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1, "{log:?}");
        // On time to the queue's millisecond (each step back into it may round up by one).
        let late = log[0].1 - three_years as u64;
        assert!(log[0].0 == "far" && late <= 5, "{log:?}");
    }
}
