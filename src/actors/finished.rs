//! Completion waiters: a long-polling request waits for the end of one saga, and is woken by
//! that saga's end only (not by every saga that ends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// The requests waiting for sagas to end, by saga id.
#[derive(Default)]
pub struct Finished {
    waiting: Mutex<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

impl Finished {
    /// Registers interest in the end of `id`. Subscribe before reading the saga's status, so an
    /// end between the read and the wait is not missed.
    pub fn subscribe(self: &Arc<Self>, id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.entry(id.to_string()).or_default().push(tx);
        Waiter {
            finished: self.clone(),
            id: id.to_string(),
            rx: Some(rx),
        }
    }

    /// Wakes everyone waiting for `id`.
    pub fn notify(&self, id: &str) {
        let senders = {
            let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            w.remove(id)
        };
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(());
        }
    }

    /// Forgets waiters of `id` that gave up (their receiver is gone), so that sagas which
    /// never end do not keep them.
    fn forget_gone(&self, id: &str) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = w.get_mut(id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                w.remove(id);
            }
        }
    }

    /// Sagas someone waits for.
    pub fn len(&self) -> usize {
        self.waiting.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One request waiting for one saga's end; dropping it forgets it.
pub struct Waiter {
    finished: Arc<Finished>,
    id: String,
    rx: Option<oneshot::Receiver<()>>,
}

impl Waiter {
    /// Waits until the saga ends (true) or `limit` passes (false).
    pub async fn wait(mut self, limit: Duration) -> bool {
        match self.rx.take() {
            Some(rx) => matches!(tokio::time::timeout(limit, rx).await, Ok(Ok(()))),
            None => false,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.finished.forget_gone(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::Finished;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn only_the_waiters_of_the_saga_that_ended_wake() {
        let f = Arc::new(Finished::default());
        let a = f.subscribe("a");
        let b = f.subscribe("b");
        f.notify("a");
        assert!(a.wait(Duration::from_secs(5)).await);
        assert!(!b.wait(Duration::from_millis(10)).await, "b has not ended");
        assert!(f.is_empty(), "a waiter that gave up is forgotten");
        drop(f.subscribe("c"));
        assert!(f.is_empty(), "a dropped waiter is forgotten");
    }
}
