//! A wake-up with one waiter: what `tokio::sync::Notify` does for a
//! single task, without its waiter list. Each upstream task and each
//! client's outbox has one waiter, and polling one costs a lock of an
//! uncontended mutex, not a fresh `Notified` per loop.

use core::future::poll_fn;
use core::task::{Context, Poll, Waker};
use std::sync::{Mutex, PoisonError};

/// A pending flag and the waiter's waker.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    state: Mutex<State>,
}

/// The flag and the waker behind the lock.
#[derive(Debug, Default)]
struct State {
    raised: bool,
    waker: Option<Waker>,
}

impl Signal {
    /// Raises the flag and wakes the waiter (if it waits); a raise with no
    /// one waiting is kept for the next [`Signal::wait`].
    pub(crate) fn raise(&self) {
        let waker = {
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            s.raised = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Waits until the flag is raised, and lowers it.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| self.poll_wait(cx)).await;
    }

    /// Ready (flag lowered) if raised; otherwise remembers `cx`'s waker.
    fn poll_wait(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.raised {
            s.raised = false;
            return Poll::Ready(());
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::Signal;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_raise_before_the_wait_is_kept_and_consumed_once() {
        let s = Signal::default();
        s.raise();
        s.raise();
        s.wait().await;
        let again = tokio::time::timeout(Duration::from_millis(20), s.wait()).await;
        assert!(again.is_err(), "one pending raise, however many calls");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_raise_from_another_task_wakes_the_waiter() {
        let s = Arc::new(Signal::default());
        let waiter = tokio::spawn({
            let s = Arc::clone(&s);
            async move { s.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        s.raise();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
