//! A Modbus/TCP Security (mbaps) server on tokio: Modbus/TCP over TLS.
//!
//! By default a client must present a certificate signed by the CA given;
//! the role in it (extension 1.3.6.1.4.1.50316.802.1) reaches an
//! `Authorizer`, here: only role "operator" may write. `--server-only`
//! asks for no client certificate (plain TLS, not mbaps; logged as such).
//!
//! Run: `cargo run --example tls_server -- server.pem server.key ca.pem [ADDRESS]`
//! or `cargo run --example tls_server -- --server-only server.pem server.key [ADDRESS]`
//! (default address `127.0.0.1:8020`; the mbaps port 802 needs privileges).
//!
//! Test certificates with openssl (EC P-256; a client with role "operator"):
//! ```sh
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
//!   -subj "/CN=test CA" -keyout ca.key -out ca.pem
//! openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
//!   -keyout server.key -out server.csr
//! openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 30 -out server.pem \
//!   -extfile <(printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")
//! openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=operator" \
//!   -keyout client.key -out client.csr
//! openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -days 30 -out client.pem \
//!   -extfile <(printf "extendedKeyUsage=clientAuth\n1.3.6.1.4.1.50316.802.1=ASN1:UTF8String:operator")
//! ```
//! Then e.g. `openssl s_client -connect 127.0.0.1:8020 -CAfile ca.pem -cert client.pem -key client.key`.
//! Ctrl-C stops it.

use coilwork::core::Engine;
use coilwork::core::engine::{Access, AccessRequest, Authorizer};
use coilwork::core::storage::{DeviceContext, ServerContext};
use coilwork::tls::{TlsClientAuth, TlsConfig};
use coilwork::tokio::{TlsServer, TlsServerConfig};
use std::sync::Arc;

/// Anyone with a certificate may read; only role "operator" may write.
struct OperatorsWrite;

impl Authorizer for OperatorsWrite {
    fn authorize(&self, request: &AccessRequest<'_>) -> bool {
        request.access == Access::Read || request.role == Some("operator")
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: tls_server [--server-only] CERT KEY [CA] [ADDRESS]";
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let server_only = args.iter().any(|a| a == "--server-only");
    args.retain(|a| a != "--server-only");
    let mut args = args.into_iter();
    let (cert, key) = (args.next().ok_or(usage)?, args.next().ok_or(usage)?);

    // mbaps: client certificates must chain to this CA. Server-only: none asked.
    let client_auth = if server_only {
        TlsClientAuth::None
    } else {
        TlsClientAuth::ca_file(args.next().ok_or(usage)?)?
    };
    let tls = TlsConfig::from_pem_files(cert, key, client_auth)?;
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8020".to_owned());

    let device = DeviceContext::with_sizes(100, 100, 100, 100)?;
    let engine = Engine::builder(ServerContext::single(device))
        .authorizer(Arc::new(OperatorsWrite))
        .build();

    let server = TlsServer::new(Arc::new(engine), TlsServerConfig::new(address.parse()?), tls);
    // Bind now, so a port in use is reported before we say we are serving.
    let bound = server.bind()?;
    let mode = if server_only { "server-only TLS" } else { "mbaps" };
    println!("serving Modbus/TCP over TLS ({mode}) on {bound}; Ctrl-C to stop");

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
