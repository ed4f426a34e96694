//! A Modbus/TCP server for load tests (loadgen): unit 1, 10,000 coils,
//! discrete inputs, holding and input registers, up to 10,000 connections.
//!
//! ```sh
//! cargo run --release -p coilwork-async-std --example serve_bench -- 127.0.0.1:5020 --runtime smol
//! ```
//! `--runtime async-std` drives the same server with `async_std::task::block_on`.

use coilwork_async_std::{TcpServer, TcpServerConfig};
use coilwork_core::Engine;
use coilwork_core::storage::{DeviceContext, ServerContext};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut address = "127.0.0.1:5020".to_owned();
    let mut runtime = "smol".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runtime" => runtime = args.next().ok_or("--runtime needs smol or async-std")?,
            _ => address = arg,
        }
    }
    let device = DeviceContext::with_sizes(10_000, 10_000, 10_000, 10_000)?;
    let engine = Arc::new(Engine::builder(ServerContext::multi().with_device(1, device)).build());
    let config = TcpServerConfig {
        max_connections: 10_000,
        backlog: 1024,
        ..TcpServerConfig::new(address.parse()?)
    };
    let server = TcpServer::new(engine, config);
    let addr = server.bind()?;
    println!("serving Modbus/TCP on {addr} ({runtime})");
    match runtime.as_str() {
        "smol" => smol::block_on(server.serve_forever())?,
        "async-std" => async_std::task::block_on(server.serve_forever())?,
        other => return Err(format!("unknown runtime {other}: smol or async-std").into()),
    }
    Ok(())
}
