//! The stop switch of a running server.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
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
    }
}
