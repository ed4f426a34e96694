//! Start a server in the background, then stop it from another task
//! (pymodbus's `StartAsyncTcpServer` + `ServerAsyncStop`).
//!
//! `start_tcp_server` binds (reporting a bind error at once), spawns the
//! server and returns a `ServerHandle`. Any task holding a clone of the handle
//! can stop it: here a task stops it after N seconds, or on Ctrl-C, whichever
//! comes first, while `main` waits for it to be stopped.
//!
//! Run: `cargo run --example async_server_stopped_from_task [ADDRESS] [SECONDS]`
//! (defaults `127.0.0.1:5020` and 30).

use coilwork::core::Engine;
use coilwork::core::storage::{DeviceContext, SequentialBlock, ServerContext};
use coilwork::tokio::{TcpServerConfig, start_tcp_server};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:5020".to_owned());
    let seconds: u64 = args.next().map_or(Ok(30), |s| s.parse())?;

    // Registers 0..100 hold 0, 1, 2, … 99 (pymodbus: `list(range(100))`).
    let store = Arc::new(SequentialBlock::new(0, (0..100).collect())?);
    let engine = Engine::builder(ServerContext::single(DeviceContext::shared(store))).build();

    let handle = start_tcp_server(Arc::new(engine), TcpServerConfig::new(address.parse()?)).await?;
    let bound = handle.local_addr().map(|a| a.to_string()).unwrap_or(address);
    println!("serving Modbus/TCP on {bound}; stopping in {seconds} s or on Ctrl-C");

    // Another task owns a clone of the handle and decides when to stop.
    let stopper = handle.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => println!("Ctrl-C: shutting down"),
            () = tokio::time::sleep(Duration::from_secs(seconds)) => println!("time is up: shutting down"),
        }
        // Graceful: stops accepting, answers requests already received,
        // closes the connections, and returns once the server is done.
        stopper.shutdown().await;
    });

    // Meanwhile `main` could do anything; here it just waits for the stop.
    handle.stopped().await;
    println!("stopped");
    Ok(())
}
