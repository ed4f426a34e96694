//! A server that tells who it is (pymodbus's "Server with Device Identity").
//!
//! The identity answers Read Device Identification (FC 0x2B / MEI 0x0E) and
//! Report Server ID (FC 0x11).
//!
//! Run: `cargo run --example server_with_identity [ADDRESS]` (default
//! `127.0.0.1:5020`), then ask with pymodbus:
//! `client.read_device_information(read_code=1, object_id=0)`. Ctrl-C stops it.

use coilwork::core::storage::{DeviceContext, SequentialBlock, ServerContext};
use coilwork::core::{Engine, Identity};
use coilwork::tokio::{TcpServer, TcpServerConfig};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:5020".to_owned());

    let device = DeviceContext::shared(Arc::new(SequentialBlock::zeroed(0, 100)?));

    // Basic objects (0x00-0x02) are mandatory; regular ones (0x03-0x06) optional.
    // Values longer than 244 bytes are cut so that one answer holds them.
    let identity = Identity::new()
        .vendor_name("Coilwork")
        .product_code("CW")
        .major_minor_revision(env!("CARGO_PKG_VERSION"))
        .vendor_url("https://example.invalid/coilwork")
        .product_name("Coilwork Server")
        .model_name("Coilwork Server")
        .user_application_name("server_with_identity example")
        // FC 0x11 Report Server ID answers this id, then the run indicator.
        .server_id(b"coilwork-example".to_vec())?;

    let engine = Engine::builder(ServerContext::single(device))
        .identity(identity)
        .build();

    let server = TcpServer::new(Arc::new(engine), TcpServerConfig::new(address.parse()?));
    let bound = server.bind()?;
    println!("serving Modbus/TCP with a device identity on {bound}; Ctrl-C to stop");

    let handle = server.handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.stop();
    });
    server.serve_forever().await?;
    println!("stopped");
    Ok(())
}
