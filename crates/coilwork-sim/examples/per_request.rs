//! Runs N Modbus/TCP requests through a simulator's engine and connection
//! in-process (no sockets), for counting instructions per request:
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/per_request fc3x125 2000    # and 12000: the difference / 10000
//!     target/release/examples/per_request fc3x125 2000 serve    # the same for `coilwork serve`
//! ```
//!
//! The device is the issue's bench map: holding registers and coils
//! 0–9999, all writable, no actions. A third argument `serve` runs the same
//! requests through an engine like `coilwork serve`'s instead (a
//! `DeviceContext` of 10 000 entries per table, no hook, no observer), so
//! the two compare in one harness. `PIPELINE=8` puts eight requests in
//! each input, as a pipelining client's read does (N stays the number of
//! requests; make it a multiple of the depth).

use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Connection, ConnectionConfig, Engine};
use coilwork_sim::{Simulator, SimulatorOptions};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "fc3x10".into());
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let serve = args.next().as_deref() == Some("serve");
    let config = json!({
        "server_list": {"server": {"comm": "tcp", "host": "127.0.0.1", "port": 0, "framer": "socket"}},
        "device_list": {"device": {
            "setup": {"co size": 10000, "di size": 10000, "hr size": 10000, "ir size": 10000,
                      "shared blocks": true, "type exception": false,
                      "defaults": {"value": {"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "},
                                   "action": {"bits": null, "uint16": null, "uint32": null, "float32": null, "float64": null, "string": null}}},
            "invalid": [], "write": [[0, 9999]], "uint16": [{"addr": [0, 9999], "value": 0}], "repeat": []
        }}
    });
    let sim = match Simulator::from_json(&config.to_string(), SimulatorOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let frame: Vec<u8> = match scenario.as_str() {
        "fc3x125" => vec![0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 125],
        "fc16x10" => {
            let mut f = vec![0, 1, 0, 0, 0, 27, 1, 0x10, 0, 0, 0, 10, 20];
            f.extend_from_slice(&[0u8; 20]);
            f
        }
        _ => vec![0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 10],
    };
    let depth: usize = std::env::var("PIPELINE")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(1)
        .max(1);
    let input = frame.repeat(depth);
    let peer = "127.0.0.1:40000".parse().ok();
    let engine = if serve {
        let device = DeviceContext::with_sizes(10_000, 10_000, 10_000, 10_000).unwrap_or_else(|e| panic!("{e}"));
        Arc::new(Engine::builder(ServerContext::single(device)).build())
    } else {
        sim.engine().clone()
    };
    let mut conn = Connection::new(engine, ConnectionConfig::tcp(peer));
    let mut answered = 0usize;
    for _ in 0..n as usize / depth {
        if conn.handle_input(Instant::now(), &input).is_err() {
            eprintln!("refused");
            std::process::exit(1);
        }
        let len = conn.output().len();
        answered += len;
        conn.consume_output(len);
    }
    println!("{scenario}: {n} requests, {answered} bytes answered");
}
