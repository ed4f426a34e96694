//! The smallest Modbus/TCP server (pymodbus's "Simple TCP Server").
//!
//! One device with 100 zeroed entries, shared by the four tables (like
//! `ModbusSequentialDataBlock(0, [0] * 100)` passed as co, di, hr and ir),
//! served for every unit id.
//!
//! Run: `cargo run --example simple_tcp_server [ADDRESS]` (default
//! `127.0.0.1:5020`), then e.g. `mbpoll -m tcp -p 5020 -a 1 -0 -r 0 -c 5 127.0.0.1`.
//! Ctrl-C stops it.

use coilwork::core::Engine;
use coilwork::core::storage::{DeviceContext, SequentialBlock, ServerContext};
use coilwork::tokio::{TcpServer, TcpServerConfig};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5020".to_owned());

    // One block of 100 values at address 0, shared by coils, discrete inputs,
    // holding and input registers.
    let store = Arc::new(SequentialBlock::zeroed(0, 100)?);
    let device = DeviceContext::shared(store);
    // `single`: the same device answers every unit id (pymodbus `single=True`).
    let engine = Engine::builder(ServerContext::single(device)).build();

    let server = TcpServer::new(Arc::new(engine), TcpServerConfig::new(address.parse()?));
    // Bind now, so a port in use is reported before we say we are serving.
    let bound = server.bind()?;
    println!("serving Modbus/TCP on {bound}; Ctrl-C to stop");

    // Ctrl-C asks for a graceful stop: serve_forever then returns.
    let handle = server.handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.stop();
    });
    server.serve_forever().await?;
    println!("stopped");
    Ok(())
}
