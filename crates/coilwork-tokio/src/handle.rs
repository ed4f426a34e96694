//! The stop switch of a running server.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A cloneable handle to stop a server from any task or thread.
///
/// [`ServerHandle::stop`] asks for a graceful stop and returns at once;
/// [`ServerHandle::shutdown`] asks and waits until the server has returned.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stop: CancellationToken,
    done: watch::Sender<bool>,
    /// The same flag as `done`, for threads that block (no runtime needed).
    done_blocking: (Mutex<bool>, Condvar),
    addr: OnceLock<SocketAddr>,
}

impl Default for ServerHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerHandle {
    /// A fresh handle, not stopped.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                stop: CancellationToken::new(),
                done: watch::Sender::new(false),
                done_blocking: (Mutex::new(false), Condvar::new()),
                addr: OnceLock::new(),
            }),
        }
    }

    /// Asks the server to stop gracefully (pymodbus `ServerStop`). Never blocks.
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }

    /// True once a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// True once the server has stopped serving.
    pub fn is_stopped(&self) -> bool {
        *self.inner.done.borrow()
    }

    /// Waits until the server has stopped serving.
    pub async fn stopped(&self) {
        let mut rx = self.inner.done.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Blocks the calling thread until the server has stopped serving or
    /// `timeout` passed; true if it stopped. For plain threads (no runtime
    /// needed); inside an async task use [`ServerHandle::stopped`].
    pub fn wait_stopped_timeout(&self, timeout: Duration) -> bool {
        let (lock, changed) = &self.inner.done_blocking;
        let deadline = Instant::now().checked_add(timeout);
        let mut done = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !*done {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return false;
            }
            done = changed
                .wait_timeout(done, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Asks for a graceful stop and waits until the server has returned
    /// (pymodbus `ServerAsyncStop`).
    pub async fn shutdown(&self) {
        self.stop();
        self.stopped().await;
    }

    /// The address the server listens on, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.addr.get().copied()
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.inner.stop
    }

    pub(crate) fn set_local_addr(&self, addr: SocketAddr) {
        let _ = self.inner.addr.set(addr);
    }

    pub(crate) fn mark_stopped(&self) {
        self.inner.done.send_replace(true);
        let (lock, changed) = &self.inner.done_blocking;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_stopped_timeout_sees_mark_stopped() {
        let h = ServerHandle::new();
        let t0 = Instant::now();
        assert!(!h.wait_stopped_timeout(Duration::from_millis(30)));
        assert!(t0.elapsed() >= Duration::from_millis(30), "waited the whole timeout");
        let h2 = h.clone();
        let waiter = std::thread::spawn(move || h2.wait_stopped_timeout(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        h.mark_stopped();
        assert!(waiter.join().unwrap(), "woken by mark_stopped");
        assert!(h.wait_stopped_timeout(Duration::ZERO), "stays stopped");
    }
}
