//! The driver's seam on tokio: clock, timer, spawned tasks, and the
//! sockets wrapped as the driver's streams.

use crate::ServerHandle;
use coilwork_driver::{Adapter, ByteStream, Datagram, Listener, Runtime, TaskSet, Timer};
use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::Sleep;

/// Spawns `serve` (a server's `serve_forever`), logging its failure as `name`'s.
pub(crate) fn spawn_server(
    name: &'static str,
    serve: impl Future<Output = Result<(), crate::ServerError>> + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "{name} failed");
        }
    });
}

/// The tokio runtime: its (pausable) clock, its timer wheel, spawned tasks.
#[derive(Debug)]
pub struct Tokio;

/// A tokio timer, boxed so a connection's task stays small until it is armed.
pub struct TokioTimer(Pin<Box<Sleep>>);

impl Timer for TokioTimer {
    fn reset(&mut self, at: Instant) {
        self.0.as_mut().reset(tokio::time::Instant::from_std(at));
    }
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// Connection tasks spawned on the runtime (they run in parallel).
pub struct Spawned(JoinSet<()>);

impl Default for Spawned {
    fn default() -> Self {
        Self(JoinSet::new())
    }
}

impl<F: Future<Output = ()> + Send + 'static> TaskSet<F> for Spawned {
    fn push(&mut self, task: F) {
        self.0.spawn(task);
    }
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>> {
        self.0.poll_join_next(cx).map(|r| r.map(drop))
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn abort_all(&mut self) {
        self.0.abort_all();
    }
}

impl Runtime for Tokio {
    type Timer = TokioTimer;
    type Tasks<F: Future<Output = ()> + Send + 'static> = Spawned;
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }
    fn timer(at: Instant) -> TokioTimer {
        TokioTimer(Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(at))))
    }
}

impl Adapter for Tokio {
    type Handle = ServerHandle;
    type Listener = Accept;
    type Udp = Udp;
    fn listener(listener: std::net::TcpListener) -> io::Result<Accept> {
        TcpListener::from_std(listener).map(Accept)
    }
    fn udp(socket: std::net::UdpSocket) -> io::Result<Udp> {
        UdpSocket::from_std(socket).map(Udp)
    }
}

/// Any tokio byte stream (a serial port, a pty): read, write, flush, shut down.
#[cfg_attr(not(feature = "serial"), allow(dead_code))]
pub struct Io<S>(pub(crate) S);

/// `ByteStream`'s four IO polls over the tokio stream in `self.0`.
macro_rules! tokio_io {
    () => {
        fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            let mut read = ReadBuf::new(buf);
            ready!(Pin::new(&mut self.0).poll_read(cx, &mut read))?;
            Poll::Ready(Ok(read.filled().len()))
        }
        fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }
        fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }
        fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_shutdown(cx)
        }
    };
}
#[cfg_attr(not(feature = "tls"), allow(unused_imports))]
pub(crate) use tokio_io;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for Io<S> {
    tokio_io!();
}

/// An accepted TCP connection.
pub struct Tcp(pub(crate) TcpStream);

impl ByteStream for Tcp {
    tokio_io!();
    const WRITES_THROUGH: bool = true;

    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_read_ready(cx)
    }

    fn has_input(&mut self) -> io::Result<()> {
        // tokio reports a freshly registered socket readable before any byte
        // arrived; peek one byte so an idle connection gets no buffer.
        self.0.try_io(tokio::io::Interest::READABLE, || {
            let socket = socket2::SockRef::from(&self.0);
            socket.peek(&mut [std::mem::MaybeUninit::uninit(); 1]).map(drop)
        })
    }

    fn read_received(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Read the socket directly: tokio's `try_read` trusts its cached
        // readiness and would skip bytes the reactor has not reported yet.
        let socket = socket2::SockRef::from(&self.0);
        (&*socket).read(buf)
    }
}

/// The listening socket.
pub struct Accept(pub(crate) TcpListener);

impl Listener for Accept {
    type Stream = Tcp;
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Tcp, SocketAddr)>> {
        self.0.poll_accept(cx).map_ok(|(s, peer)| (Tcp(s), peer))
    }
    fn set_nodelay(stream: &Tcp, on: bool) {
        let _ = stream.0.set_nodelay(on);
    }
}

/// The UDP socket.
pub struct Udp(pub(crate) UdpSocket);

impl Datagram for Udp {
    fn poll_recv_from(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut read = ReadBuf::new(buf);
        let from = ready!(self.0.poll_recv_from(cx, &mut read))?;
        Poll::Ready(Ok((read.filled().len(), from)))
    }
    fn poll_send_to(&self, cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<usize>> {
        self.0.poll_send_to(cx, buf, to)
    }
}
