//! The seam: what a runtime adapter implements so the driver can run on it.
//!
//! Everything here is `std` only. An adapter wraps its sockets in types that
//! implement [`ByteStream`], [`Listener`] and [`Datagram`], names its timer
//! and task set in a [`Runtime`], and its stop switch is a [`Stop`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// A runtime's clock, timer and task set.
pub trait Runtime: Send + Sync + 'static {
    /// A resettable one-shot timer (boxed by the adapter if large: a
    /// connection holds one, made when first armed).
    type Timer: Timer;
    /// The set of connection tasks an accept loop owns.
    type Tasks<F: Future<Output = ()> + Send + 'static>: TaskSet<F>;
    /// Now, on the runtime's clock (a test runtime's may be paused).
    fn now() -> Instant;
    /// A timer that fires at `at`.
    fn timer(at: Instant) -> Self::Timer;
}

/// A one-shot timer that can be moved.
pub trait Timer: Unpin + Send {
    /// Sets it to fire at `at` (it registers a waker on its next poll).
    fn reset(&mut self, at: Instant);
    /// Ready once the deadline passed; else registers `cx`'s waker.
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// The connection tasks of one server: spawned (tokio) or driven in place
/// (futures-io executors, which the server then needs none of).
pub trait TaskSet<F>: Default + Send {
    /// Adds a connection task.
    fn push(&mut self, task: F);
    /// Drives the tasks (if held in place) and reaps one that ended:
    /// `Ready(None)` when there are none.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>>;
    /// Tasks still running.
    fn len(&self) -> usize;
    /// Cuts every task (spawned ones end at their next await; tasks held
    /// in place end when the set is dropped).
    fn abort_all(&mut self) {}
    /// True when no task runs.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A server's stop switch, as the driver sees it.
pub trait Stop: Sync {
    /// True once a stop was asked for.
    fn is_raised(&self) -> bool;
    /// Ready once a stop was asked for.
    fn raised(&self) -> impl Future<Output = ()> + Send + '_;
}

/// A byte stream: a TCP or TLS connection, or a serial line.
pub trait ByteStream: Unpin + Send {
    /// Reads into `buf`; `Ok(0)` at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes some of `buf`.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Pushes out what the stream still holds (TLS records).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Closes the write side (TLS: `close_notify` first).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Ready once a read can make progress, without a buffer: how a
    /// connection with no buffer, or one whose last read came back short,
    /// waits (so a request costs one `recv`, not a second saying `EAGAIN`).
    /// Streams that cannot tell are always ready: the read itself waits.
    fn poll_readable(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    /// After `poll_readable`: `Ok` if a read would return something, else
    /// `WouldBlock` (readiness cleared). Before a buffer is made for it.
    fn has_input(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// On a stop: reads what already reached the stream, never waiting;
    /// `Ok(0)` or an error when there is nothing more.
    fn read_received(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_read(&mut cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
    /// True when a write needs no flush (a plain socket).
    const WRITES_THROUGH: bool = false;
}

/// A listening socket.
pub trait Listener: Send {
    /// An accepted connection.
    type Stream: Send + 'static;
    /// Accepts one connection.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Stream, SocketAddr)>>;
    /// Sets `TCP_NODELAY` on an accepted connection.
    fn set_nodelay(stream: &Self::Stream, on: bool);
}

/// A datagram socket.
pub trait Datagram: Send + Sync {
    /// Receives one datagram into `buf`.
    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<(usize, SocketAddr)>>;
    /// Sends `buf` as one datagram to `to`.
    fn poll_send_to(&self, cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<usize>>;
}

/// The step between accept and serving: nothing for plain TCP
/// ([`Plain`]), the handshake and role check for TLS.
pub trait Upgrade<In>: Send + Sync + 'static {
    /// The stream served.
    type Stream: ByteStream + 'static;
    /// The transport the engine is told.
    const TRANSPORT: coilwork_core::Transport;
    /// The server's name in log lines.
    const NAME: &'static str;
    /// The stream to serve and the client's TLS role, or `None` to close
    /// the connection (counted as a handshake failure).
    fn upgrade(
        &self,
        stream: In,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<(Self::Stream, Option<String>)>> + Send;
}

/// Plain Modbus/TCP: the accepted stream as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl<S: ByteStream + 'static> Upgrade<S> for Plain {
    type Stream = S;
    const TRANSPORT: coilwork_core::Transport = coilwork_core::Transport::Tcp;
    const NAME: &'static str = "modbus tcp";

    fn upgrade(&self, stream: S, _peer: SocketAddr) -> impl Future<Output = Option<(S, Option<String>)>> + Send {
        std::future::ready(Some((stream, None)))
    }
}
