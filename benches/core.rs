//! Criterion benchmarks of the core: one request decoded, executed and its
//! answer encoded, through `Connection::handle_input`, per framing.
//!
//! Run: `cargo bench --bench core`. Figures go in benches/README.md.

use coilwork_core::frame::{ascii, mbap, rtu};
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Connection, ConnectionConfig, Engine, Framing, Transport};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

fn engine() -> Arc<Engine> {
    let device = DeviceContext::with_sizes(10_000, 10_000, 10_000, 10_000).expect("device");
    Arc::new(Engine::builder(ServerContext::single(device)).build())
}

fn pdus() -> Vec<(&'static str, Vec<u8>)> {
    let mut fc16 = vec![0x10, 0x00, 0x64, 0x00, 0x0A, 20];
    fc16.extend((0..20u8).map(|i| i.wrapping_mul(7)));
    vec![
        ("fc3_10", vec![0x03, 0x00, 0x00, 0x00, 0x0A]),
        ("fc3_125", vec![0x03, 0x00, 0x00, 0x00, 0x7D]),
        ("fc16_10", fc16),
    ]
}

fn frame(framing: Framing, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match framing {
        Framing::Mbap => mbap::encode(1, 1, pdu, &mut out),
        Framing::Rtu => rtu::encode(1, pdu, &mut out),
        Framing::Ascii => ascii::encode(1, pdu, ascii::DEFAULT_DELIMITER, &mut out),
    }
    out
}

fn bench(c: &mut Criterion) {
    let engine = engine();
    let now = Instant::now();
    for (framing, transport, name) in [
        (Framing::Mbap, Transport::Tcp, "mbap"),
        (Framing::Rtu, Transport::Tcp, "rtu"),
        (Framing::Ascii, Transport::Tcp, "ascii"),
    ] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        for (what, pdu) in pdus() {
            let request = frame(framing, &pdu);
            let mut conn = Connection::new(engine.clone(), ConnectionConfig::stream(framing, transport, None));
            group.bench_with_input(BenchmarkId::from_parameter(what), &request, |b, req| {
                b.iter(|| {
                    conn.handle_input(now, black_box(req)).ok();
                    let n = conn.output().len();
                    black_box(conn.output());
                    conn.consume_output(n);
                    n
                })
            });
        }
        group.finish();
    }
}

/// FC3 of 10 on the MBAP path while another thread serves the same request
/// on its own connection to the same device without pause: what two
/// connections on two cores cost each other (the block's values and the
/// device's counters are shared).
fn contended(c: &mut Criterion) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let engine = engine();
    let now = Instant::now();
    let request = frame(Framing::Mbap, &[0x03, 0x00, 0x00, 0x00, 0x0A]);
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (engine, request, stop) = (engine.clone(), request.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut conn = Connection::new(engine, ConnectionConfig::stream(Framing::Mbap, Transport::Tcp, None));
            while !stop.load(Ordering::Relaxed) {
                conn.handle_input(now, &request).ok();
                let n = conn.output().len();
                conn.consume_output(n);
            }
        })
    };
    let mut conn = Connection::new(engine, ConnectionConfig::stream(Framing::Mbap, Transport::Tcp, None));
    let mut group = c.benchmark_group("contended");
    group.throughput(Throughput::Elements(1));
    group.bench_function("mbap_fc3_10", |b| {
        b.iter(|| {
            conn.handle_input(now, black_box(&request)).ok();
            let n = conn.output().len();
            black_box(conn.output());
            conn.consume_output(n);
            n
        })
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    other.join().ok();
}

criterion_group!(benches, bench, contended);
criterion_main!(benches);
