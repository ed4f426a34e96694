//! One client connection whose bytes Python moves: the TLS server built on
//! a Python `ssl.SSLContext` decrypts in an asyncio transport and feeds the
//! plain bytes to the sans-IO core's [`coilwork_core::Session`] here. The
//! session decides every deadline (partial frame, idle, buffer release);
//! Python only arms an asyncio timer for the delay each call returns.

use crate::server::Server;
use coilwork_core::session::{Input, Output, Session as CoreSession};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Polls a session at most this often per call: each poll either writes
/// output, consumes input or returns, so this is never reached in practice.
const MAX_POLLS: usize = 4096;

/// What Python must do after a call: write `bytes`; then, if `closed` names a
/// cause, close the transport; otherwise call `timeout()` after `wake`
/// seconds (no timer when None).
type Step<'py> = (Bound<'py, PyBytes>, Option<f64>, Option<String>);

/// A sans-IO Modbus connection fed from Python.
#[pyclass(module = "coilwork._coilwork", name = "Session")]
pub struct Session {
    /// The core's whole connection life.
    session: CoreSession,
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (server, peer=None))]
    fn new(server: &Server, peer: Option<(String, u16)>) -> Self {
        let peer = peer.and_then(|(host, port)| host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)));
        Self {
            session: CoreSession::new(server.sessions.clone(), Instant::now(), 0, peer, None),
        }
    }

    /// What to do now, with no input (call once when the connection opens: it arms the idle timer).
    fn poll<'py>(&mut self, py: Python<'py>) -> Step<'py> {
        self.drive(py, Instant::now())
    }

    /// Feeds received bytes (requests are executed with the GIL released).
    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> Step<'py> {
        let session = &mut self.session;
        let now = py.allow_threads(|| {
            let now = Instant::now();
            session.handle(now, Input::Bytes(data));
            now
        });
        self.drive(py, now)
    }

    /// The timer armed from the last `wake` fired.
    fn timeout<'py>(&mut self, py: Python<'py>) -> Step<'py> {
        let now = Instant::now();
        self.session.handle(now, Input::Timeout);
        self.drive(py, now)
    }

    /// The peer closed its side.
    fn eof<'py>(&mut self, py: Python<'py>) -> Step<'py> {
        let now = Instant::now();
        self.session.handle(now, Input::Eof);
        self.drive(py, now)
    }
}

impl Session {
    /// Polls until the session waits or closes, collecting what to write.
    fn drive<'py>(&mut self, py: Python<'py>, now: Instant) -> Step<'py> {
        let mut out = Vec::new();
        for _ in 0..MAX_POLLS {
            let sent = match self.session.poll(now) {
                Output::Transmit(bytes) => {
                    out.extend_from_slice(bytes);
                    bytes.len()
                }
                Output::ReleaseBuffers | Output::Discarded => continue,
                // Python hands over everything it reads at once: nothing is queued.
                Output::ReadQueued => {
                    self.session.handle(now, Input::Eof);
                    continue;
                }
                Output::Wait(deadline) => return (PyBytes::new(py, &out), deadline.map(|d| delay(now, d)), None),
                Output::Pause(until) => return (PyBytes::new(py, &out), Some(delay(now, until)), None),
                Output::Close(cause) => return (PyBytes::new(py, &out), None, Some(format!("{cause:?}"))),
            };
            self.session.handle(now, Input::Sent(sent));
        }
        // Not reached: poll again at once rather than spin here.
        (PyBytes::new(py, &out), Some(0.0), None)
    }
}

/// Seconds from `now` to `deadline` (0 when passed).
fn delay(now: Instant, deadline: Instant) -> f64 {
    deadline.saturating_duration_since(now).as_secs_f64()
}
