//! Drives the sans-IO core in memory: no sockets, no runtime.
//!
//! Builds a device with 100 entries per table, feeds it an FC16 write and an
//! FC3 read as MBAP bytes split at an odd place, and prints the answers.
//!
//! Run: `cargo run --example in_memory`

use coilwork_core::frame::mbap;
use coilwork_core::storage::{DeviceContext, ServerContext};
use coilwork_core::{Connection, ConnectionConfig, Engine, Identity};
use std::sync::Arc;
use std::time::Instant;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = DeviceContext::with_sizes(100, 100, 100, 100)?;
    let engine = Engine::builder(ServerContext::single(device))
        .identity(Identity::new().vendor_name("coilwork").product_code("CW"))
        .build();
    let mut conn = Connection::new(Arc::new(engine), ConnectionConfig::tcp(None));

    let mut wire = Vec::new();
    // FC16: write 0x000A, 0x0102 at holding registers 1 and 2.
    mbap::encode(1, 1, &[0x10, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00, 0x0A, 0x01, 0x02], &mut wire);
    // FC3: read 3 holding registers from 0.
    mbap::encode(2, 1, &[0x03, 0x00, 0x00, 0x00, 0x03], &mut wire);

    println!("requests: {}", hex(&wire));
    let (a, b) = wire.split_at(9);
    conn.handle_input(Instant::now(), a)?;
    conn.handle_input(Instant::now(), b)?;
    println!("answers:  {}", hex(conn.output()));
    let n = conn.output().len();
    conn.consume_output(n);
    Ok(())
}
