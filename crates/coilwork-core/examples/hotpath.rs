//! Callgrind driver for the per-request cost (see benches/README.md).
//!
//! `hotpath <mbap|rtu|ascii> <fc3_10|fc3_125|fc16_10> [n]` runs `n` requests
//! (default 10000) through `Connection::handle_input` and takes the answer,
//! one request per call of `one`, so
//! `valgrind --tool=callgrind --toggle-collect='*hotpath::one*'` counts
//! instructions of the request path only. With `HOTPATH_TIME=1` it then
//! prints the fastest of 3000 batches of 200 requests, in ns per request,
//! per thread: `HOTPATH_THREADS=n` runs n connections on one engine at once.
//! `HOTPATH_PIPELINE=k` puts k requests in each call (a pipelining client's
//! read): divide the instructions by `n * k`.

use coilwork_core::frame::{ascii, mbap, rtu};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Connection, ConnectionConfig, Engine, Framing, Transport};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

#[inline(never)]
fn one(conn: &mut Connection, now: Instant, req: &[u8]) -> usize {
    conn.handle_input(now, black_box(req)).ok();
    let n = conn.output().len();
    black_box(conn.output());
    conn.consume_output(n);
    n
}

fn main() {
    let mut args = std::env::args().skip(1);
    let framing = match args.next().as_deref() {
        Some("rtu") => Framing::Rtu,
        Some("ascii") => Framing::Ascii,
        _ => Framing::Mbap,
    };
    let pdu: Vec<u8> = match args.next().as_deref() {
        Some("fc3_125") => vec![0x03, 0x00, 0x00, 0x00, 0x7D],
        Some("fc16_10") => {
            let mut p = vec![0x10, 0x00, 0x64, 0x00, 0x0A, 20];
            p.extend((0..20u8).map(|i| i.wrapping_mul(7)));
            p
        }
        _ => vec![0x03, 0x00, 0x00, 0x00, 0x0A],
    };
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let mut req = Vec::new();
    match framing {
        Framing::Mbap => mbap::encode(1, 1, &pdu, &mut req),
        Framing::Rtu => rtu::encode(1, &pdu, &mut req),
        Framing::Ascii => ascii::encode(1, &pdu, ascii::DEFAULT_DELIMITER, &mut req),
    }
    // HOTPATH_PIPELINE=k: k requests in each input, as a pipelining client sends them.
    let pipeline: usize = std::env::var("HOTPATH_PIPELINE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    req = req.repeat(pipeline.max(1));
    let device = DeviceContext::with_sizes(10_000, 10_000, 10_000, 10_000).unwrap_or_else(|e| panic!("{e}"));
    let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
    let mut conn = Connection::new(engine, ConnectionConfig::stream(framing, Transport::Tcp, None));
    let now = Instant::now();
    let mut total = 0;
    for _ in 0..n {
        total += one(&mut conn, now, &req);
    }
    println!("{n} requests, {total} bytes answered");
    if std::env::var_os("HOTPATH_TIME").is_some() {
        let threads: usize = std::env::var("HOTPATH_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let engine = conn.engine().clone();
        let start = std::sync::Barrier::new(threads);
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (engine, req, start) = (engine.clone(), &req, &start);
                scope.spawn(move || {
                    let config = ConnectionConfig::stream(framing, Transport::Tcp, None);
                    let mut conn = Connection::new(engine, config);
                    start.wait();
                    // The fastest of many short batches: robust against a loaded
                    // machine (preemption only ever makes a batch slower).
                    let mut batches = Vec::with_capacity(3000);
                    let mut total = 0;
                    for _ in 0..3000 {
                        let t = Instant::now();
                        for _ in 0..200 {
                            total += one(&mut conn, now, req);
                        }
                        batches.push(t.elapsed().as_secs_f64() * 1e9 / 200.0);
                    }
                    batches.sort_by(f64::total_cmp);
                    let (best, median) = (batches[0], batches[batches.len() / 2]);
                    println!("thread {t} best batch: {best:.1} ns/request, median {median:.1} ({total})");
                });
            }
        });
    }
}
