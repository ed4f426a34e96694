//! Cases under full load: what a server promises (graceful stop, no lost
//! write, partial-frame and idle timeouts, `max_connections`) must still
//! hold while every connection is kept busy with pipelined requests.
//!
//! The load comes from [`Flood`] clients: each writes rising values to a
//! register of its own with FC16 and reads it back with FC3, eight requests
//! in flight, and checks every answer (transaction id, exact PDU, the value
//! it wrote last). Writes on one connection are applied in order, so after
//! a stop the register must hold at least the last value whose write was
//! acknowledged: anything less is a lost write.

use crate::client::{Client, STEP, adu, fc3, fc3_answer, fc16, pdu};
use crate::fixture::engine;
use crate::{Harness, TcpServerConfig, tcp_defaults};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests a flood keeps in flight (FC16 + FC3 pairs).
const DEPTH: u16 = 8;

/// The highest value a flood writes; it then only reads, so the values
/// compared after a stop never wrap.
const LAST_VALUE: u16 = 60_000;

/// How a flood ended and what it saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloodReport {
    /// Answers received and checked.
    pub answered: u64,
    /// Highest value whose FC16 write was acknowledged.
    pub acked: u16,
    /// Highest value sent in an FC16 write.
    pub sent: u16,
    /// The server closed the connection (end of stream or reset).
    pub closed_by_server: bool,
    /// The stream ended cleanly in the middle of an answer.
    pub cut_mid_answer: bool,
}

/// One busy client on its own thread (see the module documentation).
#[derive(Debug)]
pub struct Flood {
    answered: Arc<AtomicU64>,
    quit: Arc<AtomicBool>,
    thread: JoinHandle<FloodReport>,
    register: u16,
}

impl Flood {
    /// Connects to `addr` and starts writing and reading `register`.
    pub fn start(addr: SocketAddr, register: u16) -> Self {
        let answered = Arc::new(AtomicU64::new(0));
        let quit = Arc::new(AtomicBool::new(false));
        let stream = TcpStream::connect_timeout(&addr, STEP).expect("flood connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(STEP)).expect("read timeout");
        stream.set_write_timeout(Some(STEP)).expect("write timeout");
        let (a, q) = (Arc::clone(&answered), Arc::clone(&quit));
        let thread = std::thread::Builder::new()
            .name(format!("flood-{register}"))
            .spawn(move || run(stream, register, &a, &q))
            .expect("spawn flood");
        Self {
            answered,
            quit,
            thread,
            register,
        }
    }

    /// Answers checked so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// The register it writes.
    pub fn register(&self) -> u16 {
        self.register
    }

    /// True while its thread runs (the server has not closed it and it was not told to quit).
    pub fn running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Tells it to finish its batch and stop, without waiting.
    pub fn quit(&self) {
        self.quit.store(true, Ordering::Relaxed);
    }

    /// Waits (at most [`STEP`] twice over) for it to end; panics if its
    /// thread panicked (a wrong answer) or does not end.
    pub fn join(self) -> FloodReport {
        let end = Instant::now() + STEP * 2;
        while !self.thread.is_finished() {
            assert!(Instant::now() < end, "flood on register {} did not end", self.register);
            std::thread::sleep(Duration::from_millis(5));
        }
        match self.thread.join() {
            Ok(report) => report,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// The flood loop: one write of `DEPTH` requests, then their answers, until
/// told to quit or the server closes the connection.
fn run(mut stream: TcpStream, register: u16, answered: &AtomicU64, quit: &AtomicBool) -> FloodReport {
    let mut report = FloodReport::default();
    let mut tid: u16 = 0;
    let mut batch = Vec::new();
    let mut expected: Vec<(u16, Vec<u8>, Option<u16>)> = Vec::new();
    while !quit.load(Ordering::Relaxed) {
        batch.clear();
        expected.clear();
        for _ in 0..DEPTH / 2 {
            if report.sent < LAST_VALUE {
                report.sent += 1;
                let v = report.sent;
                tid = tid.wrapping_add(1);
                batch.extend_from_slice(&adu(tid, 1, &fc16(register, &[v])));
                expected.push((tid, pdu(0x10, &[register, 1]), Some(v)));
            }
            tid = tid.wrapping_add(1);
            batch.extend_from_slice(&adu(tid, 1, &fc3(register, 1)));
            expected.push((tid, fc3_answer(&[report.sent]), None));
        }
        if stream.write_all(&batch).is_err() {
            report.closed_by_server = true;
            return report;
        }
        for (tid, answer, write) in &expected {
            match read_answer(&mut stream) {
                Read1::Answer(got_tid, got) => {
                    assert_eq!(
                        (got_tid, &got),
                        (*tid, answer),
                        "flood on register {register}: answer to transaction {tid}"
                    );
                    if let Some(v) = write {
                        report.acked = *v;
                    }
                    report.answered += 1;
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                Read1::Closed { mid_answer } => {
                    report.closed_by_server = true;
                    report.cut_mid_answer = mid_answer;
                    return report;
                }
            }
        }
    }
    report
}

/// One read of an answer by a flood.
enum Read1 {
    /// Transaction id and PDU.
    Answer(u16, Vec<u8>),
    /// The server closed the stream; `mid_answer` if it ended cleanly (not
    /// reset) after part of an answer.
    Closed { mid_answer: bool },
}

fn read_answer(stream: &mut TcpStream) -> Read1 {
    let mut head = [0u8; 7];
    match read_all(stream, &mut head) {
        Filled::All => {}
        Filled::Part(n) => return Read1::Closed { mid_answer: n > 0 },
        Filled::Reset => return Read1::Closed { mid_answer: false },
    }
    let mut body = vec![0u8; crate::client::Answer::pdu_len(&head)];
    match read_all(stream, &mut body) {
        Filled::All => Read1::Answer(u16::from_be_bytes([head[0], head[1]]), body),
        Filled::Part(_) => Read1::Closed { mid_answer: true },
        Filled::Reset => Read1::Closed { mid_answer: false },
    }
}

enum Filled {
    All,
    /// End of stream after this many bytes.
    Part(usize),
    /// Reset (or another error but a timeout).
    Reset,
}

fn read_all(stream: &mut TcpStream, buf: &mut [u8]) -> Filled {
    let mut n = 0;
    while n < buf.len() {
        match stream.read(&mut buf[n..]) {
            Ok(0) => return Filled::Part(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no answer within {STEP:?}: the server stalled under load")
            }
            Err(_) => return Filled::Reset,
        }
    }
    Filled::All
}

/// Starts `n` floods on registers `first..first + n` and waits until each
/// has had `min` answers.
fn floods(addr: SocketAddr, first: u16, n: u16, min: u64) -> Vec<Flood> {
    let floods: Vec<Flood> = (first..first + n).map(|r| Flood::start(addr, r)).collect();
    let end = Instant::now() + STEP;
    while floods.iter().any(|f| f.answered() < min) {
        assert!(
            Instant::now() < end,
            "floods not answered: {:?}",
            floods.iter().map(Flood::answered).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    floods
}

/// A stop while six clients keep eight requests each in flight: the server
/// returns within [`crate::cases::STOP_WITHIN`], closes every connection
/// at an answer's boundary, and every write it acknowledged is in the
/// registers (read back from a new server on the same engine).
pub fn stop_under_load_keeps_every_acknowledged_write<H: Harness>() {
    const FIRST: u16 = 100;
    let engine = engine();
    let server = H::start_tcp(Arc::clone(&engine), &tcp_defaults());
    let floods = floods(server.addr(), FIRST, 6, 200);
    std::thread::sleep(Duration::from_millis(200));
    let took = server.stop();
    assert!(
        took < crate::cases::STOP_WITHIN,
        "{}: stop under load took {took:?}",
        H::NAME
    );
    let reports: Vec<FloodReport> = floods.into_iter().map(Flood::join).collect();
    for (i, r) in reports.iter().enumerate() {
        assert!(
            r.closed_by_server,
            "{}: flood {i} still open after the stop: {r:?}",
            H::NAME
        );
        assert!(
            !r.cut_mid_answer,
            "{}: flood {i} cut in the middle of an answer",
            H::NAME
        );
    }
    let again = H::start_tcp(engine, &tcp_defaults());
    let mut c = Client::connect(again.addr());
    let answer = c.call(1, 1, &fc3(FIRST, 6));
    for (i, r) in reports.iter().enumerate() {
        let stored = u16::from_be_bytes([answer[2 + 2 * i], answer[3 + 2 * i]]);
        assert!(
            stored >= r.acked && stored <= r.sent,
            "{}: register {} holds {stored}, but {} was acknowledged and {} sent: a lost write",
            H::NAME,
            usize::from(FIRST) + i,
            r.acked,
            r.sent
        );
    }
    let took = again.stop();
    assert!(took < crate::cases::STOP_WITHIN, "{}: stop took {took:?}", H::NAME);
}

/// While five clients keep eight requests each in flight: a stalled half
/// request is closed by the partial-frame timeout, a quiet client by the
/// idle timeout, a client past `max_connections` is refused; the busy
/// clients are neither timed out nor slowed to a stop, and all answers
/// stay right.
pub fn timeouts_and_limits_under_load<H: Harness>() {
    let partial = Duration::from_millis(300);
    let idle = Duration::from_secs(1);
    let server = H::start_tcp(
        engine(),
        &TcpServerConfig {
            max_connections: 7,
            partial_frame_timeout: Some(partial),
            idle_timeout: Some(idle),
            ..tcp_defaults()
        },
    );
    let addr = server.addr();
    let floods = floods(addr, 300, 5, 200);
    let mut quiet = Client::connect(addr);
    let mut stalled = Client::connect(addr);
    let answer = quiet.call(1, 1, &fc3(300, 1));
    assert_eq!(answer.len(), 4, "{}: quiet client served", H::NAME);
    let t_quiet = Instant::now();
    stalled.send(&adu(9, 1, &fc3(0, 1))[..5]);
    let t_stalled = Instant::now();
    // The eighth connection: refused while the seven are open.
    let mut extra = Client::connect(addr);
    assert!(
        extra.closed_by_server(STEP),
        "{}: client past the limit refused",
        H::NAME
    );

    // Each closed at its timeout: not before it, within 2 s after.
    for (client, since, timeout, what) in [
        (&mut stalled, t_stalled, partial, "partial-frame"),
        (&mut quiet, t_quiet, idle, "idle"),
    ] {
        assert!(client.closed_by_server(STEP), "{}: {what} client closed", H::NAME);
        let took = since.elapsed();
        assert!(
            took >= timeout - Duration::from_millis(50) && took < timeout + Duration::from_secs(2),
            "{}: {what} timeout of {timeout:?} under load closed after {took:?}",
            H::NAME
        );
    }
    let before: Vec<u64> = floods.iter().map(Flood::answered).collect();
    std::thread::sleep(Duration::from_millis(100));
    for (f, b) in floods.iter().zip(&before) {
        assert!(
            f.running(),
            "{}: busy client on register {} was closed",
            H::NAME,
            f.register()
        );
        assert!(
            f.answered() > *b,
            "{}: busy client on register {} no longer answered",
            H::NAME,
            f.register()
        );
    }
    let c = server.counters();
    assert_eq!(
        (c.partial_timeouts, c.idle_timeouts, c.refused),
        (1, 1, 1),
        "{}: {c:?}",
        H::NAME
    );
    for f in &floods {
        f.quit();
    }
    for f in floods {
        let r = f.join();
        assert!(!r.closed_by_server, "{}: busy client closed: {r:?}", H::NAME);
    }
    let took = server.stop();
    assert!(took < crate::cases::STOP_WITHIN, "{}: stop took {took:?}", H::NAME);
}
