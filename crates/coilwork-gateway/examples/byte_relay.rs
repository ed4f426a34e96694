//! A relay that does no Modbus work: each client connection gets its own
//! connection to the upstream, and bytes are copied both ways as they come
//! (tokio's `copy_bidirectional`, one worker thread like `coilwork gateway`).
//! `benches/gateway.sh` runs it as the floor any proxy is measured against:
//! what a forwarder costs on this machine before it parses a single frame.
//!
//! ```text
//! cargo run --release -p coilwork-gateway --example byte_relay -- 127.0.0.1:0 127.0.0.1:5020
//! ```
#![forbid(unsafe_code)]

use tokio::net::{TcpListener, TcpStream};

/// Listens on the first argument and relays every connection to the second.
fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: byte_relay LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    runtime.block_on(relay(listen, upstream))
}

/// Accepts clients until killed; a client whose upstream connect fails is closed.
async fn relay(listen: String, upstream: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(&listen).await?;
    println!("relay on {}", listener.local_addr()?);
    loop {
        let (mut client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
