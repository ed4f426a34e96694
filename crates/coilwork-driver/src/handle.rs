//! The stop switch of a running server, and the one-shot signal it is made
//! of: runtime-neutral (an `event_listener` event), so one type serves every
//! adapter, its tasks and plain threads alike.

use crate::seam::Stop;
use crate::server::Handle;
use event_listener::{Event, EventListener, Listener};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A one-shot flag that futures and threads can wait on (never reset).
#[derive(Debug, Default)]
struct Signal {
    set: AtomicBool,
    event: Event,
}

impl Signal {
    /// Raises the flag and wakes every waiter.
    fn raise(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// True once raised.
    fn is_raised(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// A listener to await; `None` if the flag is already up.
    ///
    /// Because the flag is never lowered, one listener taken early stays
    /// valid for the whole life of a connection (no allocation per wait).
    fn listener(&self) -> Option<EventListener> {
        if self.is_raised() {
            return None;
        }
        let l = self.event.listen();
        if self.is_raised() { None } else { Some(l) }
    }

    /// Waits until raised.
    async fn raised(&self) {
        while let Some(l) = self.listener() {
            l.await;
        }
    }

    /// Blocks the calling thread until raised or `timeout` passed; true if raised.
    fn wait_blocking(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        while let Some(l) = self.listener() {
            match deadline {
                None => l.wait(),
                Some(d) => {
                    if l.wait_deadline(d).is_none() && !self.is_raised() {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// A cloneable handle to stop a server from any task or thread, on any runtime.
///
/// [`ServerHandle::stop`] asks for a graceful stop and returns at once;
/// [`ServerHandle::shutdown`] asks and waits until the server has returned;
/// [`ServerHandle::shutdown_blocking`] does the same from a plain thread.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stop: Signal,
    done: Signal,
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
            inner: Arc::new(Inner::default()),
        }
    }

    /// Asks the server to stop gracefully (pymodbus `ServerStop`). Never blocks.
    pub fn stop(&self) {
        self.inner.stop.raise();
    }

    /// True once a stop was asked for.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_raised()
    }

    /// True once the server has stopped serving.
    pub fn is_stopped(&self) -> bool {
        self.inner.done.is_raised()
    }

    /// Waits until the server has stopped serving.
    pub async fn stopped(&self) {
        self.inner.done.raised().await;
    }

    /// Asks for a graceful stop and waits until the server has returned
    /// (pymodbus `ServerAsyncStop`).
    pub async fn shutdown(&self) {
        self.stop();
        self.stopped().await;
    }

    /// Blocks the calling thread until the server has stopped serving or
    /// `timeout` passed; true if it stopped. Not for use inside an async
    /// task (use [`ServerHandle::stopped`] there).
    pub fn wait_stopped_timeout(&self, timeout: Duration) -> bool {
        self.inner.done.wait_blocking(Some(timeout))
    }

    /// Asks for a graceful stop and blocks this thread until the server has
    /// returned or `timeout` passed; true if it returned. Not for use inside
    /// an async task.
    pub fn shutdown_blocking(&self, timeout: Option<Duration>) -> bool {
        self.stop();
        self.inner.done.wait_blocking(timeout)
    }

    /// The address the server listens on, once bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.addr.get().copied()
    }

    /// Records the address bound (done by the server).
    pub fn set_local_addr(&self, addr: SocketAddr) {
        let _ = self.inner.addr.set(addr);
    }

    /// Marks the server stopped, waking every waiter (done by the server
    /// when it returns).
    pub fn mark_stopped(&self) {
        self.inner.done.raise();
    }
}

impl Stop for ServerHandle {
    fn is_raised(&self) -> bool {
        self.is_stopping()
    }
    fn raised(&self) -> impl Future<Output = ()> + Send + '_ {
        self.inner.stop.raised()
    }
}

impl Handle for ServerHandle {
    fn stop(&self) {
        ServerHandle::stop(self);
    }
    fn stopped(&self) -> impl Future<Output = ()> + Send + '_ {
        ServerHandle::stopped(self)
    }
    fn set_local_addr(&self, addr: SocketAddr) {
        ServerHandle::set_local_addr(self, addr);
    }
    fn local_addr(&self) -> Option<SocketAddr> {
        ServerHandle::local_addr(self)
    }
    fn mark_stopped(&self) {
        ServerHandle::mark_stopped(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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
