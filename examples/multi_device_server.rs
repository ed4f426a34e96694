//! Two devices behind one server, each with its own data (pymodbus's
//! "Multi-Device Server").
//!
//! Unit 1 holds 10, 20, 30, 40, 50 and unit 2 holds 100 … 500 at addresses
//! 0..5 of every table. Any other unit id gets exception 0x0B (gateway target
//! failed to respond), as pymodbus answers over TCP.
//!
//! Run: `cargo run --example multi_device_server [ADDRESS]` (default
//! `127.0.0.1:5020`), then e.g. `mbpoll -m tcp -p 5020 -a 2 -0 -r 0 -c 5 127.0.0.1`.
//! Ctrl-C stops it.

use coilwork::core::Engine;
use coilwork::core::storage::{DeviceContext, SequentialBlock, ServerContext};
use coilwork::tokio::{TcpServer, TcpServerConfig};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5020".to_owned());

    let device1 = DeviceContext::shared(Arc::new(SequentialBlock::new(0, vec![10, 20, 30, 40, 50])?));
    let device2 = DeviceContext::shared(Arc::new(SequentialBlock::new(0, vec![100, 200, 300, 400, 500])?));
    // `multi`: a map of unit id → device (pymodbus `single=False`).
    let context = ServerContext::multi().with_device(1, device1).with_device(2, device2);
    // Devices can also be added or removed while serving: `context.insert(3, ...)`.
    let engine = Engine::builder(context).build();

    let server = TcpServer::new(Arc::new(engine), TcpServerConfig::new(address.parse()?));
    let bound = server.bind()?;
    println!("serving units 1 and 2 on {bound}; Ctrl-C to stop");

    let handle = server.handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.stop();
    });
    server.serve_forever().await?;
    println!("stopped");
    Ok(())
}
