//! One client connection whose bytes Python moves: the TLS server built on
//! a Python `ssl.SSLContext` decrypts in an asyncio transport and feeds the
//! plain bytes to the sans-IO core here.

use crate::server::Server;
use coilwork_core::storage::Transport;
use coilwork_core::{Connection, ConnectionConfig, Framing};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// A sans-IO Modbus connection fed from Python.
#[pyclass(module = "coilwork._coilwork", name = "Session")]
pub struct Session {
    /// The core's connection state machine.
    conn: Connection,
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (server, peer=None))]
    fn new(server: &Server, peer: Option<(String, u16)>) -> Self {
        let peer = peer.and_then(|(host, port)| host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)));
        let config = ConnectionConfig::stream(Framing::Mbap, Transport::Tls, peer);
        Self {
            conn: Connection::new(server.engine.clone(), config),
        }
    }

    /// Feeds received bytes; returns the answers to write and whether the
    /// stream is broken (write the answers, then close).
    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> (Bound<'py, PyBytes>, bool) {
        let conn = &mut self.conn;
        let broken = py.allow_threads(|| conn.handle_input(Instant::now(), data).is_err());
        let out = PyBytes::new(py, self.conn.output());
        let n = self.conn.output().len();
        self.conn.consume_output(n);
        if !self.conn.has_output() {
            self.conn.release_idle_buffers();
        }
        (out, broken)
    }
}
