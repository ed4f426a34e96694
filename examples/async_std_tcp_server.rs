//! A Modbus/TCP server on async-std.
//!
//! ```sh
//! cargo run --example async_std_tcp_server -- 127.0.0.1:5020
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
    println!("serving Modbus/TCP on {addr} (async-std)");

    async_std::task::block_on(async {
        let task = async_std::task::spawn({
            let server = Arc::clone(&server);
            async move { server.serve_forever().await }
        });
        if let Some(secs) = std::env::var("COILWORK_EXAMPLE_SECS").ok().and_then(|s| s.parse().ok()) {
            async_std::task::sleep(Duration::from_secs(secs)).await;
            // Graceful: stop accepting, answer what arrived, close, wait.
            server.shutdown().await;
        }
        task.await
    })?;
    println!("stopped");
    Ok(())
}
