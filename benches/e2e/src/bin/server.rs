//! `coilwork-bench-server`: the data set of the shared bench harness, served
//! with the adapter chosen on the command line.
//!
//! Unit 1 (every unit: one device) holds 10 000 coils, discrete inputs,
//! holding registers and input registers, as `coilwork serve` does by
//! default. `--udp` serves Modbus/UDP instead of Modbus/TCP, and
//! `--adapter udp-ceiling` answers UDP datagrams from a canned image with no
//! Modbus work (the UDP ceiling of `benches/udp.sh`); `--adapter smol-ceiling`
//! does the same for TCP on smol (the smol column of `benches/e2e.sh`).
//!
//! ```text
//! coilwork-bench-server --adapter blocking --address 127.0.0.1:5020
//! coilwork-bench-server --adapter smol --udp --address 127.0.0.1:5020
//! ```
//!
//! It prints one line `coilwork-bench-server: serving ... on ADDR` once the
//! socket is bound. The tokio adapter stops on SIGTERM / SIGINT; the others
//! keep the default disposition of those signals (the process ends).
#![forbid(unsafe_code)]

use clap::{Parser, ValueEnum};
use coilwork_bench::{ceiling_answer, ceiling_stream, server_engine};
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;

/// Most TCP connections open at once (the harness's memory step opens 5000).
const MAX_CONNECTIONS: usize = 10_000;
/// Listen backlog, as `coilwork serve` (the library's default is pymodbus's 20).
const BACKLOG: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Adapter {
    /// coilwork-tokio on a multi-thread runtime (one worker per available CPU).
    Tokio,
    /// coilwork-async-std's servers under `smol::block_on`.
    Smol,
    /// coilwork-async-std's servers under `async_std::task::block_on`.
    AsyncStd,
    /// coilwork-blocking (one thread per TCP connection).
    Blocking,
    /// UDP only: canned answers, no Modbus work (the ceiling).
    UdpCeiling,
    /// TCP only: canned answers, no Modbus work, on smol (the ceiling of
    /// the smol and async-std adapters): one thread, one task per connection.
    SmolCeiling,
}

/// Serve the bench harness's data set with one coilwork adapter.
#[derive(Debug, Parser)]
#[command(name = "coilwork-bench-server")]
struct Args {
    /// Adapter (runtime) serving the requests.
    #[arg(long, value_enum, default_value_t = Adapter::Tokio)]
    adapter: Adapter,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5020")]
    address: SocketAddr,
    /// Serve Modbus/UDP instead of Modbus/TCP.
    #[arg(long)]
    udp: bool,
    /// Blocking adapter: stack size of each connection thread in bytes (std default 2 MiB).
    #[arg(long)]
    thread_stack_size: Option<usize>,
}

fn announce(what: &str, addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "coilwork-bench-server: serving {what} on {addr}");
    let _ = out.flush();
}

fn run(args: &Args) -> Result<(), String> {
    let engine = Arc::new(server_engine().map_err(|e| format!("cannot build the device: {e}"))?);
    let err = |e: &dyn std::fmt::Display| e.to_string();
    match (args.adapter, args.udp) {
        (Adapter::UdpCeiling, _) => udp_ceiling(args.address),
        (Adapter::SmolCeiling, false) => smol_ceiling(args.address),
        (Adapter::SmolCeiling, true) => Err("smol-ceiling serves TCP only (the UDP ceiling: udp-ceiling)".into()),
        (Adapter::Tokio, udp) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let address = args.address;
            // The server runs on a worker: the thread in `block_on` does not
            // drive I/O, so serving from it costs a cross-thread wake-up per
            // event.
            let serve = async move {
                use coilwork_tokio::{TcpServer, TcpServerConfig, UdpServer, UdpServerConfig};
                if udp {
                    let server = UdpServer::new(engine, UdpServerConfig::new(address));
                    announce("tokio udp", server.bind().map_err(|e| err(&e))?);
                    let handle = server.handle();
                    tokio::spawn(async move {
                        termination().await;
                        handle.stop();
                    });
                    server.serve_forever().await.map_err(|e| err(&e))
                } else {
                    let config = TcpServerConfig {
                        max_connections: MAX_CONNECTIONS,
                        backlog: BACKLOG,
                        ..TcpServerConfig::new(address)
                    };
                    let server = TcpServer::new(engine, config);
                    announce("tokio tcp", server.bind().map_err(|e| err(&e))?);
                    let handle = server.handle();
                    tokio::spawn(async move {
                        termination().await;
                        handle.stop();
                    });
                    server.serve_forever().await.map_err(|e| err(&e))
                }
            };
            rt.block_on(async move { tokio::spawn(serve).await.map_err(|e| err(&e))? })
        }
        (Adapter::Smol | Adapter::AsyncStd, udp) => {
            use coilwork_async_std::{TcpServer, TcpServerConfig, UdpServer, UdpServerConfig};
            let name = if args.adapter == Adapter::Smol {
                "smol"
            } else {
                "async-std"
            };
            let block_on = |f: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + '_>>| {
                if args.adapter == Adapter::Smol {
                    smol::block_on(f)
                } else {
                    async_std::task::block_on(f)
                }
            };
            if udp {
                let server = UdpServer::new(engine, UdpServerConfig::new(args.address));
                announce(&format!("{name} udp"), server.bind().map_err(|e| err(&e))?);
                block_on(Box::pin(async { server.serve_forever().await.map_err(|e| err(&e)) }))
            } else {
                let config = TcpServerConfig {
                    max_connections: MAX_CONNECTIONS,
                    backlog: BACKLOG,
                    ..TcpServerConfig::new(args.address)
                };
                let server = TcpServer::new(engine, config);
                announce(&format!("{name} tcp"), server.bind().map_err(|e| err(&e))?);
                block_on(Box::pin(async { server.serve_forever().await.map_err(|e| err(&e)) }))
            }
        }
        (Adapter::Blocking, true) => {
            use coilwork_blocking::{UdpServer, UdpServerConfig};
            let server = UdpServer::new(engine, UdpServerConfig::new(args.address));
            announce("blocking udp", server.bind().map_err(|e| err(&e))?);
            server.serve_forever().map_err(|e| err(&e))
        }
        (Adapter::Blocking, false) => {
            use coilwork_blocking::{TcpServer, TcpServerConfig};
            let config = TcpServerConfig {
                max_connections: MAX_CONNECTIONS,
                backlog: BACKLOG,
                thread_stack_size: args.thread_stack_size,
                ..TcpServerConfig::new(args.address)
            };
            let server = TcpServer::new(engine, config);
            announce("blocking tcp", server.bind().map_err(|e| err(&e))?);
            server.serve_forever().map_err(|e| err(&e))
        }
    }
}

/// The UDP ceiling: one blocking socket, every datagram answered from the
/// canned image (FC3 registers, FC16 echo), no Modbus engine.
fn udp_ceiling(address: SocketAddr) -> Result<(), String> {
    let socket = UdpSocket::bind(address).map_err(|e| e.to_string())?;
    announce("udp-ceiling", socket.local_addr().map_err(|e| e.to_string())?);
    let mut buf = [0u8; 512];
    let mut out = Vec::with_capacity(512);
    loop {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e.to_string()),
        };
        out.clear();
        if ceiling_answer(buf.get(..n).unwrap_or(&[]), &mut out) {
            let _ = socket.send_to(&out, peer);
        }
    }
}

/// The smol TCP ceiling: a `LocalExecutor` on this thread, as the smol
/// adapter's `smol::block_on` is, with one task per connection answering
/// whole MBAP frames from the canned image and no Modbus engine. The gap
/// between it and `--adapter smol` is coilwork's cost; the gap between it
/// and the tokio ceiling is the runtime's.
fn smol_ceiling(address: SocketAddr) -> Result<(), String> {
    let listener = smol::net::TcpListener::bind(address);
    let executor = smol::LocalExecutor::new();
    smol::block_on(executor.run(async {
        let listener = listener.await.map_err(|e| e.to_string())?;
        announce("smol-ceiling tcp", listener.local_addr().map_err(|e| e.to_string())?);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    executor.spawn(ceiling_connection(stream)).detach();
                }
                // Out of descriptors or a reset before accept: back off and go on.
                Err(_) => {
                    smol::Timer::after(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }))
}

/// Serves one ceiling connection until the peer closes or breaks framing.
async fn ceiling_connection(mut stream: smol::net::TcpStream) {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let mut inp = vec![0u8; 4096];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        let Some(free) = inp.get_mut(filled..) else { return };
        match stream.read(free).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        let Some(used) = ceiling_stream(inp.get(..filled).unwrap_or(&[]), &mut out) else {
            return;
        };
        inp.copy_within(used..filled, 0);
        filled -= used;
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coilwork-bench-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}
