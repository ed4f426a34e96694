//! The stop switch of a running server.

use crate::ServerError;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// A cloneable handle to stop a server from any thread (pymodbus `ServerStop`).
///
/// [`ServerHandle::stop`] asks for a graceful stop and returns at once;
/// [`ServerHandle::shutdown`] asks and blocks until the server has returned.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Mirror of `state.stopping`, read on every loop turn without the lock.
    stopping: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
    addr: OnceLock<SocketAddr>,
}

#[derive(Debug, Default)]
struct State {
    stopping: bool,
    stopped: bool,
}

impl Default for ServerHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerHandle {
    /// A fresh handle, not stopped. Give it to a server with `with_handle`
    /// to keep a stop switch for a server that blocks the calling thread.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the server to stop gracefully. Never blocks.
    pub fn stop(&self) {
        let mut state = self.lock();
        state.stopping = true;
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.changed.notify_all();
    }

    /// True once a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }

    /// True once the server has stopped serving.
    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Blocks until the server has stopped serving.
    pub fn wait_stopped(&self) {
        self.wait_stopped_timeout(Duration::MAX);
    }

    /// Blocks until the server has stopped serving or `timeout` passed; true if it stopped.
    pub fn wait_stopped_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock();
        while !state.stopped {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return false;
            }
            state = self
                .inner
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Asks for a graceful stop and blocks until the server has returned.
    pub fn shutdown(&self) {
        self.stop();
        self.wait_stopped();
    }

    /// The address the server listens on, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.addr.get().copied()
    }

    /// Sleeps up to `d`, waking at once when a stop is asked for; true if stopping.
    pub(crate) fn sleep_unless_stopped(&self, d: Duration) -> bool {
        let mut state = self.lock();
        if !state.stopping {
            state = self
                .inner
                .changed
                .wait_timeout_while(state, d, |s| !s.stopping)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.stopping
    }

    pub(crate) fn set_local_addr(&self, addr: SocketAddr) {
        let _ = self.inner.addr.set(addr);
    }

    pub(crate) fn mark_stopped(&self) {
        let mut state = self.lock();
        state.stopped = true;
        self.inner.changed.notify_all();
    }
}

/// What every server does around its serving loop: the stop switch, the
/// guard against serving twice, and the socket (or port) bound before serving.
#[derive(Debug)]
pub(crate) struct Lifecycle<T> {
    pub(crate) handle: ServerHandle,
    serving: AtomicBool,
    bound: Mutex<Option<T>>,
}

impl<T> Lifecycle<T> {
    pub(crate) fn new(handle: ServerHandle) -> Self {
        Self {
            handle,
            serving: AtomicBool::new(false),
            bound: Mutex::new(None),
        }
    }

    /// Binds with `open` unless bound already (idempotent) or stopping.
    pub(crate) fn bind(
        &self,
        open: impl FnOnce() -> Result<(T, SocketAddr), ServerError>,
    ) -> Result<SocketAddr, ServerError> {
        if self.handle.is_stopping() {
            return Err(ServerError::Closed);
        }
        if let Some(addr) = self.handle.local_addr() {
            return Ok(addr);
        }
        let (socket, addr) = open()?;
        self.put(socket);
        self.handle.set_local_addr(addr);
        Ok(addr)
    }

    /// Keeps `socket` for the serving loop.
    pub(crate) fn put(&self, socket: T) {
        *self.bound.lock().unwrap_or_else(PoisonError::into_inner) = Some(socket);
    }

    /// Takes what was bound, if anything.
    pub(crate) fn take(&self) -> Option<T> {
        self.bound.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Runs `run` once (a second call is refused), then marks the server stopped.
    pub(crate) fn serve(&self, run: impl FnOnce() -> Result<(), ServerError>) -> Result<(), ServerError> {
        if self.serving.swap(true, Ordering::AcqRel) {
            return Err(ServerError::AlreadyServing);
        }
        let result = if self.handle.is_stopping() { Ok(()) } else { run() };
        self.handle.mark_stopped();
        result
    }

    /// Binds with `open` if needed and runs `run` on what was bound
    /// (nothing, with `Ok`, if a stop or `close` came first).
    pub(crate) fn serve_bound(
        &self,
        open: impl FnOnce() -> Result<(T, SocketAddr), ServerError>,
        run: impl FnOnce(T) -> Result<(), ServerError>,
    ) -> Result<(), ServerError> {
        self.serve(|| match self.bind(open) {
            Err(ServerError::Closed) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => self.take().map_or(Ok(()), run),
        })
    }

    /// Stops and blocks until serving has returned.
    pub(crate) fn shutdown(&self) {
        self.handle.stop();
        if self.serving.load(Ordering::Acquire) {
            self.handle.wait_stopped();
        } else {
            self.close();
        }
    }

    /// Stops and releases what was bound if not serving yet.
    pub(crate) fn close(&self) {
        self.handle.stop();
        drop(self.take());
        if !self.serving.load(Ordering::Acquire) {
            self.handle.mark_stopped();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_wakes_a_sleeper_at_once() {
        let h = ServerHandle::new();
        let h2 = h.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            let stopping = h2.sleep_unless_stopped(Duration::from_secs(10));
            (stopping, start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(20));
        h.stop();
        let (stopping, took) = t.join().unwrap();
        assert!(stopping);
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(h.is_stopping() && !h.is_stopped());
    }

    #[test]
    fn wait_stopped_sees_mark_stopped() {
        let h = ServerHandle::new();
        assert!(!h.wait_stopped_timeout(Duration::from_millis(10)));
        let h2 = h.clone();
        let t = std::thread::spawn(move || h2.wait_stopped_timeout(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        h.mark_stopped();
        assert!(t.join().unwrap());
        assert!(h.is_stopped());
        h.shutdown(); // returns at once once stopped
    }
}
