//! The driver's seam on async-io: clock, timer, connection tasks driven in
//! place (no spawner needed), and the sockets wrapped as the driver's streams.

use crate::ServerHandle;
use async_io::Async;
use coilwork_driver::{Adapter, ByteStream, Datagram, Listener, Runtime, TaskSet, Timer};
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::io::{self, ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

/// async-io's reactor and timers, under any executor.
#[derive(Debug)]
pub struct AsyncIo;

/// An async-io timer, boxed so a connection's future stays small until it is armed.
pub struct IoTimer(Box<async_io::Timer>);

impl Timer for IoTimer {
    fn reset(&mut self, at: Instant) {
        self.0.set_at(at);
    }
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut *self.0).poll(cx).map(drop)
    }
}

/// Connection futures driven by the server's own future: it needs no executor and no spawner.
pub struct InPlace<F>(FuturesUnordered<F>);

impl<F> Default for InPlace<F> {
    fn default() -> Self {
        Self(FuturesUnordered::new())
    }
}

impl<F: Future<Output = ()> + Send + 'static> TaskSet<F> for InPlace<F> {
    fn push(&mut self, task: F) {
        self.0.push(task);
    }
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>> {
        self.0.poll_next_unpin(cx)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl Runtime for AsyncIo {
    type Timer = IoTimer;
    type Tasks<F: Future<Output = ()> + Send + 'static> = InPlace<F>;
    fn now() -> Instant {
        Instant::now()
    }
    fn timer(at: Instant) -> IoTimer {
        IoTimer(Box::new(async_io::Timer::at(at)))
    }
}

impl Adapter for AsyncIo {
    type Handle = ServerHandle;
    type Listener = Accept;
    type Udp = Udp;
    fn listener(listener: TcpListener) -> io::Result<Accept> {
        Async::new(listener).map(Accept)
    }
    fn udp(socket: UdpSocket) -> io::Result<Udp> {
        Async::new(socket).map(Udp)
    }
}

/// `ByteStream`'s four IO polls over the futures-io stream in `self.0`.
macro_rules! futures_io {
    () => {
        fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
        fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_close(cx)
        }
    };
}
#[cfg_attr(not(feature = "tls"), allow(unused_imports))]
pub(crate) use futures_io;

/// Any futures-io byte stream (a serial port, a pty).
#[cfg_attr(not(feature = "serial"), allow(dead_code))]
pub struct Io<S>(pub(crate) S);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for Io<S> {
    futures_io!();
}

/// An accepted TCP connection.
pub struct Tcp(pub(crate) Async<TcpStream>);

impl ByteStream for Tcp {
    futures_io!();
    const WRITES_THROUGH: bool = true;

    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_readable(cx)
    }

    fn read_received(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut socket: &TcpStream = self.0.get_ref();
        socket.read(buf)
    }
}

/// Runs a non-blocking `op` on `io`, waiting for readiness (`writable`
/// or not) while it would block.
fn poll_io<T, R>(
    io: &Async<T>,
    cx: &mut Context<'_>,
    writable: bool,
    mut op: impl FnMut(&T) -> io::Result<R>,
) -> Poll<io::Result<R>> {
    loop {
        match op(io.get_ref()) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => return Poll::Ready(other),
        }
        if writable {
            ready!(io.poll_writable(cx))?;
        } else {
            ready!(io.poll_readable(cx))?;
        }
    }
}

/// The listening socket.
pub struct Accept(pub(crate) Async<TcpListener>);

impl Listener for Accept {
    type Stream = Tcp;
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Tcp, SocketAddr)>> {
        let (stream, peer) = ready!(poll_io(&self.0, cx, false, TcpListener::accept))?;
        Poll::Ready(Async::new(stream).map(|s| (Tcp(s), peer)))
    }
    fn set_nodelay(stream: &Tcp, on: bool) {
        let _ = stream.0.get_ref().set_nodelay(on);
    }
}

/// The UDP socket.
pub struct Udp(pub(crate) Async<UdpSocket>);

impl Datagram for Udp {
    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<(usize, SocketAddr)>> {
        poll_io(&self.0, cx, false, |s| s.recv_from(buf))
    }
    fn poll_send_to(&self, cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<usize>> {
        poll_io(&self.0, cx, true, |s| s.send_to(buf, to))
    }
}
