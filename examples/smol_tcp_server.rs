//! A Modbus/TCP server on smol.
//!
//! ```sh
//! cargo run --example smol_tcp_server -- 127.0.0.1:5020
//! ```
//! Stop it with Ctrl-C (or after `COILWORK_EXAMPLE_SECS` seconds, if set).

use coilwork::async_std::{TcpServer, TcpServerConfig};
use coilwork::core::Engine;
use coilwork::core::storage::{DeviceContext, ServerContext};
use std::sync::Arc;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5020".into())
        .parse()?;
    let device = DeviceContext::with_sizes(1000, 1000, 1000, 1000)?;
    let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
    let server = Arc::new(TcpServer::new(engine, TcpServerConfig::new(address)));
    let addr = server.bind()?;
    println!("serving Modbus/TCP on {addr} (smol)");

    // Any thread can stop the server through its handle.
    if let Some(secs) = std::env::var("COILWORK_EXAMPLE_SECS").ok().and_then(|s| s.parse().ok()) {
        let handle = server.handle();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            handle.stop();
        });
    }

    smol::block_on(async {
        // `serve_forever` drives every connection itself; spawning it is optional.
        let task = smol::spawn({
            let server = Arc::clone(&server);
            async move { server.serve_forever().await }
        });
        task.await
    })?;
    println!("stopped");
    Ok(())
}
