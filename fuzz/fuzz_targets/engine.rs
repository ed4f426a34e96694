//! Fuzzes the whole engine: arbitrary bytes into a Connection (every framing,
//! stream and serial transports, sparse and sequential storage, broadcast
//! and listen-only reachable), answers out. Checks that nothing panics, that
//! every answer is a well-formed frame of the connection's framing, and that
//! the output for the stream fed whole equals the output for it fed in pieces.
#![no_main]

use coilwork_core::engine::EngineOptions;
use coilwork_core::frame::{Decoded, Framing, ascii, mbap};
use coilwork_core::storage::{DeviceContext, FileStore, ServerContext, SparseBlock};
use coilwork_core::{Connection, ConnectionConfig, Engine, Identity, Transport};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn engine(options: EngineOptions) -> Arc<Engine> {
    let sparse = Arc::new(SparseBlock::new((0..200u16).step_by(3).map(|a| (a, a))));
    let files = FileStore::new();
    let _ = files.add_file(1, vec![7; 100]);
    let seq = DeviceContext::with_sizes(300, 300, 300, 300).map(|d| d.with_files(files));
    let Ok(seq) = seq else {
        return Arc::new(Engine::builder(ServerContext::multi()).build());
    };
    let context = ServerContext::multi().with_device(1, seq).with_device(
        2,
        DeviceContext::new(sparse.clone(), sparse.clone(), sparse.clone(), sparse),
    );
    let identity = Identity::new()
        .vendor_name(&"v".repeat(120))
        .product_code(&"p".repeat(120))
        .major_minor_revision("1.0")
        .product_name("fuzz");
    Arc::new(Engine::builder(context).options(options).identity(identity).build())
}

fn run(engine: &Arc<Engine>, config: &ConnectionConfig, chunks: &mut dyn Iterator<Item = &[u8]>) -> Vec<u8> {
    let mut conn = Connection::new(engine.clone(), config.clone());
    let t0 = Instant::now();
    let mut out = Vec::new();
    for c in chunks {
        // On a fatal error the answers to the frames before it are still
        // queued: an adapter writes them, then closes.
        let result = conn.handle_input(t0, c);
        out.extend_from_slice(conn.output());
        let n = conn.output().len();
        conn.consume_output(n);
        if result.is_err() {
            break;
        }
    }
    conn.handle_timeout(t0 + Duration::from_secs(1));
    out
}

fn check_answers(framing: Framing, mut out: &[u8]) {
    let mut scratch = [0u8; 256];
    while !out.is_empty() {
        let decoded = match framing {
            Framing::Mbap => mbap::decode(out),
            Framing::Rtu => {
                // An answer is address + a response PDU that decodes + its CRC.
                let end = (5..=out.len()).find(|&e| {
                    coilwork_core::frame::checksum::crc16(&out[..e]) == 0
                        && coilwork_core::pdu::Response::decode(&out[1..e - 2]).is_ok()
                });
                assert!(end.is_some(), "RTU answer without a CRC: {out:02x?}");
                out = &out[end.unwrap_or(out.len())..];
                continue;
            }
            Framing::Ascii => ascii::decode(out, b'\n', &mut scratch),
        };
        match decoded {
            Decoded::Frame { consumed, .. } => out = &out[consumed..],
            other => panic!("malformed answer {other:?}"),
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let framing = [Framing::Mbap, Framing::Rtu, Framing::Ascii, Framing::Rtu][usize::from(mode & 3)];
    let transport = if mode & 4 != 0 {
        Transport::Serial
    } else {
        Transport::Tcp
    };
    let options = EngineOptions {
        ignore_missing_devices: None,
        broadcast_enable: mode & 8 != 0,
    };
    let engine_a = engine(options);
    let engine_b = engine(options);
    let config = ConnectionConfig::stream(framing, transport, None);
    let chunk = usize::from(mode >> 4).max(1);
    let whole = run(&engine_a, &config, &mut std::iter::once(stream));
    let split = run(&engine_b, &config, &mut stream.chunks(chunk));
    if framing != Framing::Ascii {
        // ASCII may change its delimiter mid-stream (FC8 0x03): answers then
        // end differently, so only the RTU and MBAP answers are re-framed here.
        check_answers(framing, &whole);
    }
    // Diagnostics answers count frame errors, which may differ by split for
    // garbage; everything else must not.
    if !stream
        .windows(2)
        .any(|w| w[0] == 0x08 || w[1] == 0x08 || w[0] == 0x0C || w[1] == 0x0C)
    {
        assert_eq!(whole, split, "output depends on how the stream was split");
    }
});
