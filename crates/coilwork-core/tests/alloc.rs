//! The MBAP read/write path allocates nothing once a connection's buffers
//! have grown to their working size.

use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Connection, ConnectionConfig, Engine};
use std::sync::Arc;
use std::time::Instant;

fn connection() -> Connection {
    let device = DeviceContext::with_sizes(100, 100, 100, 100).expect("device");
    let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
    Connection::new(engine, ConnectionConfig::tcp(None))
}

/// Counts what it is told, in an atomic: observing allocates nothing.
#[derive(Default)]
struct Counting(std::sync::atomic::AtomicU64);

impl coilwork_core::engine::RequestObserver for Counting {
    fn observe(&self, _ctx: &coilwork_core::RequestContext<'_>, seen: coilwork_core::engine::Observation) {
        let n = seen.data.map_or(0, |(_, r)| u64::from(r.count()));
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

fn fc3(tid: u16) -> [u8; 12] {
    let t = tid.to_be_bytes();
    [t[0], t[1], 0, 0, 0, 6, 1, 0x03, 0x00, 0x00, 0x00, 0x0A]
}

fn fc16(tid: u16) -> [u8; 33] {
    let t = tid.to_be_bytes();
    let mut f = [0u8; 33];
    f[..13].copy_from_slice(&[t[0], t[1], 0, 0, 0, 27, 1, 0x10, 0x00, 0x05, 0x00, 0x0A, 20]);
    for (i, b) in f[13..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

#[test]
fn fc3_and_fc16_over_mbap_allocate_nothing() {
    let mut conn = connection();
    let now = Instant::now();
    // Warm up: the buffers grow once.
    for tid in 0..4 {
        conn.handle_input(now, &fc3(tid)).unwrap();
        conn.handle_input(now, &fc16(tid)).unwrap();
        let n = conn.output().len();
        conn.consume_output(n);
    }
    let reqs: Vec<[u8; 12]> = (0..100).map(fc3).collect();
    let writes: Vec<[u8; 33]> = (0..100).map(fc16).collect();
    let mut answered = 0;
    let info = allocation_counter::measure(|| {
        for (r, w) in reqs.iter().zip(&writes) {
            conn.handle_input(now, r).unwrap();
            answered += conn.output().len();
            let n = conn.output().len();
            conn.consume_output(n);
            conn.handle_input(now, w).unwrap();
            answered += conn.output().len();
            let n = conn.output().len();
            conn.consume_output(n);
        }
    });
    // 100 FC3 answers of 9 + 20 bytes and 100 FC16 answers of 12 bytes.
    assert_eq!(answered, 100 * 29 + 100 * 12);
    assert_eq!(info.count_total, 0, "allocations on the MBAP path: {info:?}");
}

#[test]
fn split_request_allocates_nothing_after_warm_up() {
    let mut conn = connection();
    let now = Instant::now();
    let req = fc3(1);
    conn.handle_input(now, &req[..5]).unwrap();
    conn.handle_input(now, &req[5..]).unwrap();
    let n = conn.output().len();
    conn.consume_output(n);
    let info = allocation_counter::measure(|| {
        for _ in 0..50 {
            conn.handle_input(now, &req[..5]).unwrap();
            conn.handle_input(now, &req[5..]).unwrap();
            let n = conn.output().len();
            assert_eq!(n, 29);
            conn.consume_output(n);
        }
    });
    assert_eq!(info.count_total, 0, "allocations on a split request: {info:?}");
}

/// The session around the connection adds no allocation per request: its
/// deadlines are instants, its outputs borrow the connection's buffer.
#[test]
fn a_session_serving_requests_allocates_nothing_after_warm_up() {
    use coilwork_core::{Framing, Input, Output, Session, SessionConfig, SessionKind, Transport};
    let device = DeviceContext::with_sizes(100, 100, 100, 100).expect("device");
    let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
    let shared = Arc::new(SessionConfig::new(
        engine,
        SessionKind::Stream,
        Framing::Mbap,
        Transport::Tcp,
    ));
    let now = Instant::now();
    let mut session = Session::new(shared, now, 0, None, None);
    let serve = |session: &mut Session, request: &[u8]| -> usize {
        session.handle(now, Input::Bytes(request));
        let mut written = 0;
        loop {
            match session.poll(now) {
                Output::Transmit(bytes) => {
                    let n = bytes.len();
                    written += n;
                    session.handle(now, Input::Sent(n));
                }
                Output::Wait(_) => return written,
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    for tid in 0..4 {
        serve(&mut session, &fc3(tid));
        serve(&mut session, &fc16(tid));
    }
    let reqs: Vec<[u8; 12]> = (0..100).map(fc3).collect();
    let writes: Vec<[u8; 33]> = (0..100).map(fc16).collect();
    let mut answered = 0;
    let info = allocation_counter::measure(|| {
        for (r, w) in reqs.iter().zip(&writes) {
            answered += serve(&mut session, r);
            answered += serve(&mut session, w);
        }
    });
    assert_eq!(answered, 100 * 29 + 100 * 12);
    assert_eq!(info.count_total, 0, "allocations on the session path: {info:?}");
}

/// With metrics on, a session's requests, answers and its folds into the
/// shared metrics (once a second here) allocate nothing after warm-up.
#[test]
fn a_session_counting_metrics_allocates_nothing_after_warm_up() {
    use coilwork_core::{Framing, Input, Metrics, Output, Session, SessionConfig, SessionKind, Transport};
    let device = DeviceContext::with_sizes(100, 100, 100, 100).expect("device");
    let metrics = Arc::new(Metrics::new());
    let engine = Engine::builder(ServerContext::single(device))
        .metrics(Arc::clone(&metrics))
        .build();
    let shared = Arc::new(SessionConfig::new(
        Arc::new(engine),
        SessionKind::Stream,
        Framing::Mbap,
        Transport::Tcp,
    ));
    let t0 = Instant::now();
    let mut session = Session::new(shared, t0, 1, None, None);
    let mut step = |i: u32| {
        // 100 ms apart: a fold every tenth request.
        let now = t0 + std::time::Duration::from_millis(u64::from(i) * 100);
        session.handle(now, Input::Bytes(&fc3(i as u16)));
        while let Output::Transmit(bytes) = session.poll(now) {
            let n = bytes.len();
            session.handle(now, Input::Sent(n));
        }
    };
    for i in 0..30 {
        step(i);
    }
    let info = allocation_counter::measure(|| {
        for i in 30..230 {
            step(i);
        }
    });
    assert_eq!(info.count_total, 0, "allocations with metrics on: {info:?}");
    let snap = metrics.snapshot();
    assert!(snap.requests[&(1, 3)].requests >= 220, "{snap:?}");
}

#[test]
fn an_observed_connection_allocates_nothing_after_warm_up() {
    let device = DeviceContext::with_sizes(100, 100, 100, 100).expect("device");
    let counting = Arc::new(Counting::default());
    let engine = Engine::builder(ServerContext::single(device))
        .observer(counting.clone())
        .build();
    let mut conn = Connection::new(Arc::new(engine), ConnectionConfig::tcp(None));
    let now = Instant::now();
    // Warm up as measured below: the output grows once to two answers.
    for tid in 0..4 {
        conn.handle_input(now, &fc3(tid)).unwrap();
        conn.handle_input(now, &fc16(tid)).unwrap();
        let n = conn.output().len();
        conn.consume_output(n);
    }
    let reqs: Vec<[u8; 12]> = (0..100).map(fc3).collect();
    let writes: Vec<[u8; 33]> = (0..100).map(fc16).collect();
    let info = allocation_counter::measure(|| {
        for (r, w) in reqs.iter().zip(&writes) {
            conn.handle_input(now, r).unwrap();
            conn.handle_input(now, w).unwrap();
            let n = conn.output().len();
            conn.consume_output(n);
        }
    });
    assert_eq!(info.count_total, 0, "allocations with an observer: {info:?}");
    // 104 reads of 10 registers and 104 writes of 10.
    assert_eq!(counting.0.load(std::sync::atomic::Ordering::Relaxed), 208 * 10);
}
