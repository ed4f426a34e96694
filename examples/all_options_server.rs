//! Every `TcpServerConfig` option spelled out, each set to its default and
//! explained, plus the engine options. Copy it and change what you need.
//!
//! Run: `cargo run --example all_options_server [ADDRESS]` (default
//! `127.0.0.1:5020`). Ctrl-C stops it.

use coilwork::core::storage::{DeviceContext, ServerContext};
use coilwork::core::{Engine, EngineOptions, Framing};
use coilwork::tokio::{OverflowPolicy, TcpServer, TcpServerConfig};
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5020".to_owned());

    // 10,000 zeroed entries in each of the four tables (separate blocks).
    let device = DeviceContext::with_sizes(10_000, 10_000, 10_000, 10_000)?;
    let options = EngineOptions {
        // Unknown unit ids: None (default) = per transport: exception 0x0B
        // over TCP/UDP (as pymodbus), silence on a serial line. Some(true):
        // never answer. Some(false): always exception 0x0B.
        ignore_missing_devices: None,
        // Serial only: unit 0 as a broadcast (writes run on every device,
        // never answered). Over TCP units 0 and 0xFF are ordinary ids.
        broadcast_enable: false,
    };
    let engine = Engine::builder(ServerContext::single(device)).options(options).build();

    let config = TcpServerConfig {
        // Where to listen. The default is 127.0.0.1:502 (502 needs root on
        // most systems); use 0.0.0.0 to accept clients from other hosts.
        address: address.parse()?,
        // MBAP (Modbus/TCP, default). Framing::Rtu or Framing::Ascii carry
        // serial frames over TCP, e.g. behind a serial-to-Ethernet gateway.
        framing: Framing::Mbap,
        // Pending connections the OS queues before accept (default 20).
        backlog: 20,
        // SO_REUSEADDR (default on): a restarted server can bind at once
        // even while old connections sit in TIME_WAIT.
        allow_reuse_address: true,
        // SO_REUSEPORT (default off): several processes share one port.
        allow_reuse_port: false,
        // Most clients connected at once (default 1000).
        max_connections: 1000,
        // Past max_connections: RefuseNew (default) closes the newcomer;
        // EvictOldest closes the oldest connection to make room.
        overflow: OverflowPolicy::RefuseNew,
        // None (default): any client. Some(list): only these IPs, others are
        // closed at once, e.g. Some(vec!["127.0.0.1".parse()?]).
        allow_list: None,
        // Close a client that sent nothing for this long (default never).
        idle_timeout: None,
        // Close a client whose request stays incomplete this long after its
        // first byte (default 5 s): a half-sent frame cannot block forever.
        partial_frame_timeout: Some(Duration::from_secs(5)),
        // Cap on bytes held for frames not complete yet (default: the core's
        // DEFAULT_MAX_BUFFERED); past it the connection is closed.
        max_buffered: coilwork::core::connection::DEFAULT_MAX_BUFFERED,
        // Size of each connection's read buffer (default 4 KiB).
        read_buffer_size: 4096,
        // Free an idle connection's buffers after it was quiet this long
        // (default 1 s), so thousands of quiet clients cost little memory.
        release_buffers_after: Duration::from_secs(1),
        // On shutdown, how long clients get to receive their answers before
        // their connections are cut (default 5 s).
        shutdown_timeout: Duration::from_secs(5),
        // Blocking adapter only: how often the accept loop (the timeout
        // watchdog too) looks for a stop and passed deadlines (default 100 ms).
        poll_interval: Duration::from_millis(100),
        // Blocking adapter only: a client that does not read its answers for
        // this long is disconnected (default 10 s).
        write_timeout: Some(Duration::from_secs(10)),
        // Blocking adapter only: each connection thread's stack size
        // (default None: the standard library's default).
        thread_stack_size: None,
        // TCP_NODELAY on accepted connections (default on): answers go out
        // at once instead of waiting to be coalesced.
        nodelay: true,
    };
    // Every value above is the default except the address.
    debug_assert_eq!(
        config,
        TcpServerConfig {
            address: config.address,
            ..TcpServerConfig::default()
        }
    );

    let server = TcpServer::new(Arc::new(engine), config);
    let bound = server.bind()?;
    println!("serving Modbus/TCP on {bound}; Ctrl-C to stop");

    let handle = server.handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.stop();
    });
    server.serve_forever().await?;
    // Counters kept while serving.
    let stats = server.stats();
    println!(
        "stopped: {} connections accepted, {} refused",
        stats.accepted(),
        stats.refused()
    );
    Ok(())
}
