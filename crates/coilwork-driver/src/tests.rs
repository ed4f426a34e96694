//! The driver's loop, tested once: a mock stream on tokio's paused clock and
//! on async-io's real one, the timer-wake races, and the idle task's size.

use crate::accept::{Shared, connection};
use crate::conn::serve;
use crate::seam::{ByteStream, Plain, Runtime, TaskSet, Timer};
use coilwork_core::options::TcpServerConfig;
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{CloseCause, CloseReason, CloseSignal, Engine, ServerStats, Session, Transport};
use std::future::Future;
use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

mod paused;
mod real;

/// Tokio's clock (paused in these tests) and timer.
struct TokioRt;
/// async-io's timer on the real clock.
struct AsyncIoRt;

/// No task set: these tests drive one connection by hand.
#[derive(Default)]
struct NoTasks;

impl<F> TaskSet<F> for NoTasks {
    fn push(&mut self, _task: F) {
        panic!("no tasks in these tests");
    }
    fn poll_next(&mut self, _cx: &mut Context<'_>) -> Poll<Option<()>> {
        Poll::Ready(None)
    }
    fn len(&self) -> usize {
        0
    }
}

struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl Timer for TokioTimer {
    fn reset(&mut self, at: Instant) {
        self.0.as_mut().reset(at.into());
    }
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Runtime for TokioRt {
    type Timer = TokioTimer;
    type Tasks<F: Future<Output = ()> + Send + 'static> = NoTasks;
    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }
    fn timer(at: Instant) -> TokioTimer {
        TokioTimer(Box::pin(tokio::time::sleep_until(at.into())))
    }
}

struct IoTimer(Box<async_io::Timer>);

impl Timer for IoTimer {
    fn reset(&mut self, at: Instant) {
        self.0.set_at(at);
    }
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut *self.0).poll(cx).map(drop)
    }
}

impl Runtime for AsyncIoRt {
    type Timer = IoTimer;
    type Tasks<F: Future<Output = ()> + Send + 'static> = NoTasks;
    fn now() -> Instant {
        Instant::now()
    }
    fn timer(at: Instant) -> IoTimer {
        IoTimer(Box::new(async_io::Timer::at(at)))
    }
}

/// A stream the test feeds and blocks by hand; it records who waits on it.
#[derive(Default)]
struct Pipe {
    input: Vec<u8>,
    write_blocked: bool,
    written: Vec<u8>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// Calls of `has_input`: made only by a wait without a buffer.
    bufferless_waits: usize,
    write_polls: usize,
    /// At most this many bytes taken per `poll_write` (0: all).
    max_write: usize,
}

#[derive(Clone, Default)]
struct MockStream(Arc<Mutex<Pipe>>);

impl MockStream {
    fn pipe(&self) -> std::sync::MutexGuard<'_, Pipe> {
        self.0.lock().expect("pipe")
    }

    /// Adds input and wakes the reader.
    fn feed(&self, bytes: &[u8]) {
        let mut pipe = self.pipe();
        pipe.input.extend_from_slice(bytes);
        if let Some(w) = pipe.reader.take() {
            w.wake();
        }
    }

    /// Adds input without waking the reader: only a poll that comes for
    /// another reason finds it.
    fn feed_quietly(&self, bytes: &[u8]) {
        self.pipe().input.extend_from_slice(bytes);
    }

    fn set_write_blocked(&self, blocked: bool) {
        let mut pipe = self.pipe();
        pipe.write_blocked = blocked;
        if let Some(w) = pipe.writer.take() {
            w.wake();
        }
    }
}

impl ByteStream for MockStream {
    // Its flush does nothing, as a socket's.
    const WRITES_THROUGH: bool = true;

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut pipe = self.pipe();
        if pipe.input.is_empty() {
            pipe.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = pipe.input.len().min(buf.len());
        buf[..n].copy_from_slice(&pipe.input[..n]);
        pipe.input.drain(..n);
        Poll::Ready(Ok(n))
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut pipe = self.pipe();
        pipe.write_polls += 1;
        if pipe.write_blocked {
            pipe.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = match pipe.max_write {
            0 => buf.len(),
            max => buf.len().min(max),
        };
        pipe.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut pipe = self.pipe();
        if pipe.input.is_empty() {
            pipe.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
    fn has_input(&mut self) -> io::Result<()> {
        let mut pipe = self.pipe();
        pipe.bufferless_waits += 1;
        if pipe.input.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(())
    }
}

/// FC3, one register at 0, unit 1, and its answer.
const READ_ONE: [u8; 12] = [0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 1];
const READ_ONE_ANSWER: [u8; 11] = [0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 0];
const IDLE: Duration = Duration::from_millis(100);

fn idle_config() -> TcpServerConfig {
    TcpServerConfig {
        idle_timeout: Some(IDLE),
        partial_frame_timeout: None,
        release_buffers_after: Duration::from_secs(60),
        ..TcpServerConfig::default()
    }
}

fn engine() -> Arc<Engine> {
    let device = DeviceContext::with_sizes(10, 10, 10, 10).expect("device");
    Arc::new(Engine::builder(ServerContext::single(device)).build())
}

/// What the accept loop would share for `config`, with its counters.
fn shared(config: &TcpServerConfig) -> (Arc<Shared>, Arc<ServerStats>) {
    let stats = Arc::new(ServerStats::default());
    let shared = Shared::new(engine(), config, Arc::clone(&stats), Transport::Tcp);
    (Arc::new(shared), stats)
}

/// The connection loop of `R` on `stream`, as the accept loop runs it.
async fn serve_mock<R: Runtime>(shared: Arc<Shared>, signal: Arc<CloseSignal>, mut stream: MockStream) -> CloseCause {
    let peer = "127.0.0.1:1".parse().ok();
    let session = Session::new(Arc::clone(&shared.session), R::now(), 0, peer, None);
    serve::<R, MockStream>(&mut stream, session, &signal, 4096).await
}

/// A tokio socket as an adapter wraps it (the real size of a stream in a task).
struct TokioTcp(tokio::net::TcpStream);

impl ByteStream for TokioTcp {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut read = tokio::io::ReadBuf::new(buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut read) {
            Poll::Ready(r) => Poll::Ready(r.map(|()| read.filled().len())),
            Poll::Pending => Poll::Pending,
        }
    }
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }
    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}

/// Every open connection holds its task whether it talks or not; the
/// connection state, buffers and timer are boxed on first use so that an
/// idle connection costs little more than this future (with a runtime's
/// task header and reactor entry: under 2 KiB in all).
#[tokio::test]
async fn an_idle_connection_task_stays_small() {
    let (shared, _stats) = shared(&TcpServerConfig::default());
    let conn = shared.admit("127.0.0.1:1".parse().expect("peer")).expect("admitted");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stream = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let future = connection::<TokioRt, TokioTcp, Plain>(Arc::clone(&shared), conn, TokioTcp(stream), Arc::new(Plain));
    let size = std::mem::size_of_val(&future);
    println!("connection task future: {size} bytes");
    assert!(size <= 1024, "connection task future grew to {size} bytes");
    let real = connection::<AsyncIoRt, MockStream, Plain>(
        Arc::clone(&shared),
        shared.admit("127.0.0.1:2".parse().expect("peer")).expect("admitted"),
        MockStream::default(),
        Arc::new(Plain),
    );
    assert!(std::mem::size_of_val(&real) <= 1024, "async-io connection future grew");
}

/// Polls `fut` with one waker (the same on every poll, as an executor's
/// task has) until ready or `limit` passes; `between` runs after each
/// pending poll, with that poll's number.
fn run_with_one_waker<F: Future>(fut: F, limit: Duration, mut between: impl FnMut(usize)) -> Option<F::Output> {
    struct ThreadWaker(std::thread::Thread, Arc<AtomicBool>);
    impl std::task::Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.1.store(true, Ordering::SeqCst);
            self.0.unpark();
        }
    }
    let mut fut = std::pin::pin!(fut);
    let woken = Arc::new(AtomicBool::new(false));
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current(), Arc::clone(&woken))));
    let mut cx = Context::from_waker(&waker);
    let end = Instant::now() + limit;
    for polls in 1.. {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Some(out);
        }
        between(polls);
        // A poll only after a wake: `park` can return without one.
        while !woken.swap(false, Ordering::SeqCst) {
            let now = Instant::now();
            if now >= end {
                return None;
            }
            std::thread::park_timeout(end - now);
        }
    }
    None
}

#[test]
fn close_reasons_map_to_stop_and_eviction() {
    assert_eq!(crate::conn::input_for(CloseReason::Stop), coilwork_core::Input::Stop);
    assert_eq!(crate::conn::input_for(CloseReason::Evict), coilwork_core::Input::Evict);
}
