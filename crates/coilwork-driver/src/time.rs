//! Waiting on the runtime's timer: sleeps, timeouts and pauses a stop cuts short.

use crate::seam::{Runtime, Stop, Timer};
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Sleeps until `at` on `R`'s timer.
pub async fn sleep_until<R: Runtime>(at: Instant) {
    let mut timer = R::timer(at);
    std::future::poll_fn(|cx| timer.poll_fired(cx)).await;
}

/// Sleeps for `duration` on `R`'s timer (forever if it overflows the clock).
pub async fn sleep<R: Runtime>(duration: Duration) {
    match R::now().checked_add(duration) {
        Some(at) => sleep_until::<R>(at).await,
        None => std::future::pending().await,
    }
}

/// `future`'s output, or `None` if `limit` passed first.
pub async fn timeout<R: Runtime, T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    let at = R::now().checked_add(limit);
    let mut timer = at.map(R::timer);
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match timer.as_mut() {
            Some(t) => t.poll_fired(cx).map(|()| None),
            None => Poll::Pending,
        }
    })
    .await
}

/// Waits until `at` unless `stop` is (or gets) raised; true if stopped.
pub async fn sleep_unless_stopped<R: Runtime>(at: Instant, stop: &impl Stop) -> bool {
    if stop.is_raised() {
        return true;
    }
    let mut timer = R::timer(at);
    let mut stopped = pin!(stop.raised());
    std::future::poll_fn(|cx| {
        if stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        timer.poll_fired(cx).map(|()| false)
    })
    .await
}
