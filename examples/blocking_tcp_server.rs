//! A blocking Modbus/TCP server: no async runtime, one thread per client.
//!
//! Serves a device with 1000 entries per table on `127.0.0.1:5020` (or the
//! address given as the first argument) and stops gracefully after the
//! number of seconds given as the second argument (default: runs until
//! killed).
//!
//! Run: `cargo run --example blocking_tcp_server -- 127.0.0.1:5020 30`
//! Try: `mbpoll -m tcp -p 5020 -a 1 -r 1 -c 4 127.0.0.1`

use coilwork::blocking::{ServerHandle, TcpServer, TcpServerConfig};
use coilwork::core::Engine;
use coilwork::core::storage::{DeviceContext, ServerContext};
use std::sync::Arc;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:5020".to_owned()).parse()?;
    let run_for: Option<u64> = args.next().map(|s| s.parse()).transpose()?;

    let device = DeviceContext::with_sizes(1000, 1000, 1000, 1000)?;
    let engine = Arc::new(Engine::builder(ServerContext::single(device)).build());
    let config = TcpServerConfig {
        idle_timeout: Some(Duration::from_secs(60)),
        ..TcpServerConfig::new(address)
    };

    // Keep a clone of the handle: `serve_forever` blocks this thread.
    let handle = ServerHandle::new();
    let server = TcpServer::with_handle(engine, config, handle.clone());
    let bound = server.bind()?;
    println!("serving Modbus/TCP on {bound}");
    if let Some(secs) = run_for {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            println!("stopping");
            handle.stop();
        });
    }
    server.serve_forever()?;
    let stats = server.stats();
    println!(
        "stopped: {} connections served, {} refused",
        stats.accepted(),
        stats.refused()
    );
    Ok(())
}
