//! One running server: the engine, a tokio runtime and a coilwork-tokio server.

use crate::context::ServerContextPy;
use crate::custom::PyCustom;
use crate::hook::PyServerHook;
use coilwork_core::storage::Transport;
use coilwork_core::{Engine, EngineOptions, Framing, Identity, SessionConfig, SessionKind, StreamTimeoutConfig};
use coilwork_tokio::serial::{Parity, SerialServer, SerialServerConfig};
use coilwork_tokio::tls::{TlsClientAuth, TlsConfig, TlsServer, TlsServerConfig};
use coilwork_tokio::{ServerError, ServerHandle, TcpServer, TcpServerConfig, UdpServer, UdpServerConfig};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// The transport server behind a [`Server`].
enum Kind {
    /// Modbus/TCP (or RTU/ASCII over TCP).
    Tcp(Arc<TcpServer>),
    /// Modbus over UDP.
    Udp(Arc<UdpServer>),
    /// A serial line.
    Serial(Arc<SerialServer>),
    /// Modbus/TCP Security through rustls.
    Tls(Arc<TlsServer>),
    /// No transport: Python feeds [`crate::session::Session`]s (TLS through an `SSLContext`).
    Engine(ServerHandle),
}

/// Serial line settings: port, baud rate, data bits, parity, stop bits, local echo.
type SerialArgs = (String, u32, u8, String, u8, bool);
/// TLS settings: certificate file, key file, CA file for client certificates.
type TlsArgs = (String, String, Option<String>);
/// A server subclass's overrides: `validate_device_id` and `process_request` callbacks.
type Hooks = (Option<Py<PyAny>>, Option<Py<PyAny>>);

/// A coilwork server driven from Python (the core of every `Modbus*Server`).
#[pyclass(module = "coilwork._coilwork", name = "Server")]
pub struct Server {
    /// Owned runtime; shut down in the background when dropped.
    runtime: Option<Runtime>,
    /// The transport.
    kind: Kind,
    /// The settings of the sessions Python feeds (TLS through an `SSLContext`):
    /// the engine and the same timeouts as the Rust servers.
    pub(crate) sessions: Arc<SessionConfig>,
    /// The `serve_forever` task, once started.
    task: Mutex<Option<JoinHandle<Result<(), ServerError>>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle().stop();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A Python `OSError` for a server error.
fn os_error(e: &ServerError) -> PyErr {
    let errno = match e {
        ServerError::AddrInUse { source, .. }
        | ServerError::Bind { source, .. }
        | ServerError::Socket { source, .. }
        | ServerError::SerialOpen { source, .. }
        | ServerError::Io(source) => source.raw_os_error().unwrap_or(0),
        _ => 0,
    };
    PyOSError::new_err((errno, e.to_string()))
}

/// The framing of pymodbus's framer names.
fn framing(framer: &str) -> PyResult<Framing> {
    match framer.to_ascii_lowercase().as_str() {
        "socket" | "tls" | "mbap" => Ok(Framing::Mbap),
        "rtu" => Ok(Framing::Rtu),
        "ascii" => Ok(Framing::Ascii),
        other => Err(PyValueError::new_err(format!(
            "unknown framer {other:?} (socket, rtu, ascii, tls)"
        ))),
    }
}

/// `host:port` resolved to one address.
fn address(host: &str, port: u16) -> PyResult<SocketAddr> {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| PyOSError::new_err(format!("cannot resolve {host}:{port}: {e}")))?
        .next()
        .ok_or_else(|| PyOSError::new_err(format!("{host}:{port} resolves to no address")))
}

/// A timeout in seconds from Python (None: never), checked.
fn seconds(name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    value
        .map(|v| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    PyValueError::new_err(format!("{name} must be a positive number of seconds or None, not {v}"))
                })
        })
        .transpose()
}

/// The settings of Python-fed TLS sessions: `tcp`'s timeouts and limits.
fn session_config(engine: Arc<Engine>, tcp: &TcpServerConfig) -> SessionConfig {
    SessionConfig {
        timeouts: StreamTimeoutConfig {
            partial_frame: tcp.partial_frame_timeout,
            idle: tcp.idle_timeout,
            release_buffers_after: tcp.release_buffers_after,
        },
        max_buffered: tcp.max_buffered,
        ..SessionConfig::new(engine, SessionKind::Stream, Framing::Mbap, Transport::Tls)
    }
}

/// A tokio runtime with `workers` threads (default: one per core).
fn runtime(workers: Option<usize>) -> PyResult<Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n.max(1));
    }
    builder
        .thread_name("coilwork")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the runtime: {e}")))
}

/// The engine over `context` with identity, options and custom functions.
fn engine(
    py: Python<'_>,
    context: &Bound<'_, ServerContextPy>,
    identity: Vec<(u8, String)>,
    custom: Vec<Bound<'_, PyAny>>,
    runner: Option<Py<PyAny>>,
    hooks: Hooks,
    options: EngineOptions,
) -> PyResult<Engine> {
    let mut id = Identity::new();
    for (object, value) in identity {
        id = identity_object(id, object, &value)?;
    }
    let mut builder = Engine::builder(context.borrow().fresh()?).options(options).identity(id);
    let (validate, process) = hooks;
    if let Some(hook) = PyServerHook::new(validate, process, options.ignore_missing_devices) {
        builder = builder.hook(Arc::new(hook));
    }
    for class in custom {
        let runner = runner
            .as_ref()
            .map(|r| r.clone_ref(py))
            .ok_or_else(|| PyValueError::new_err("no runner"))?;
        let handler = PyCustom::new(&class, runner, context.clone().into_any().unbind())?;
        builder = builder.custom_function(Arc::new(handler)).map_err(|e| {
            PyValueError::new_err(format!(
                "custom function {}: {e}",
                class.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
    }
    Ok(builder.build())
}

/// `identity` with object `object` set to `value`.
fn identity_object(identity: Identity, object: u8, value: &str) -> PyResult<Identity> {
    Ok(match object {
        0 => identity.vendor_name(value),
        1 => identity.product_code(value),
        2 => identity.major_minor_revision(value),
        3 => identity.vendor_url(value),
        4 => identity.product_name(value),
        5 => identity.model_name(value),
        6 => identity.user_application_name(value),
        _ => identity
            .object(object, value)
            .map_err(|e| PyValueError::new_err(format!("identity: {e}")))?,
    })
}

/// A serial configuration from Python's settings.
fn serial_config(args: SerialArgs, framer: Framing) -> PyResult<SerialServerConfig> {
    let (port, baud, bytesize, parity, stopbits, local_echo) = args;
    let mut config = SerialServerConfig::new(port);
    config.framing = if framer == Framing::Mbap { Framing::Rtu } else { framer };
    config.baud_rate = baud;
    config.data_bits = bytesize;
    config.stop_bits = stopbits;
    config.local_echo = local_echo;
    config.parity = match parity.to_ascii_uppercase().as_str() {
        "N" => Parity::None,
        "E" => Parity::Even,
        "O" => Parity::Odd,
        other => return Err(PyValueError::new_err(format!("parity {other:?} is not N, E or O"))),
    };
    if !matches!(bytesize, 7 | 8) || !matches!(stopbits, 1 | 2) || baud == 0 {
        return Err(PyValueError::new_err(
            "serial line: bytesize 7 or 8, stopbits 1 or 2, baudrate > 0",
        ));
    }
    Ok(config)
}

/// The rustls configuration of `certfile` / `keyfile` (and a CA for client certificates).
fn tls_config(args: TlsArgs) -> PyResult<TlsConfig> {
    let (cert, key, ca) = args;
    let auth = match ca {
        Some(ca) => TlsClientAuth::ca_file(ca).map_err(|e| PyValueError::new_err(e.to_string()))?,
        None => TlsClientAuth::None,
    };
    TlsConfig::from_pem_files(cert, key, auth).map_err(|e| PyValueError::new_err(e.to_string()))
}

#[pymethods]
impl Server {
    #[new]
    #[pyo3(signature = (kind, context, *, host="127.0.0.1".to_string(), port=502, framer="socket".to_string(),
        identity=Vec::new(), custom=Vec::new(), runner=None, hooks=(None, None), ignore_missing=None, broadcast=false, backlog=20,
        reuse_address=true, reuse_port=false, serial=None, tls=None, workers=None, idle_timeout=None,
        partial_frame_timeout=Some(5.0)))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        kind: &str,
        context: &Bound<'_, ServerContextPy>,
        host: String,
        port: u16,
        framer: String,
        identity: Vec<(u8, String)>,
        custom: Vec<Bound<'_, PyAny>>,
        runner: Option<Py<PyAny>>,
        hooks: Hooks,
        ignore_missing: Option<bool>,
        broadcast: bool,
        backlog: u32,
        reuse_address: bool,
        reuse_port: bool,
        serial: Option<SerialArgs>,
        tls: Option<TlsArgs>,
        workers: Option<usize>,
        idle_timeout: Option<f64>,
        partial_frame_timeout: Option<f64>,
    ) -> PyResult<Self> {
        let framer = framing(&framer)?;
        let options = EngineOptions {
            ignore_missing_devices: ignore_missing,
            broadcast_enable: broadcast,
        };
        let engine = Arc::new(engine(py, context, identity, custom, runner, hooks, options)?);
        context.borrow().register(&engine);
        let mut tcp = TcpServerConfig::new(address(&host, port)?);
        (tcp.framing, tcp.backlog, tcp.allow_reuse_address, tcp.allow_reuse_port) =
            (framer, backlog, reuse_address, reuse_port);
        tcp.idle_timeout = seconds("idle_timeout", idle_timeout)?;
        tcp.partial_frame_timeout = seconds("partial_frame_timeout", partial_frame_timeout)?;
        let sessions = Arc::new(session_config(engine.clone(), &tcp));
        let kind = match kind {
            "tcp" => Kind::Tcp(Arc::new(TcpServer::new(engine.clone(), tcp))),
            "udp" => {
                let mut udp = UdpServerConfig::new(tcp.address);
                (udp.framing, udp.allow_reuse_address, udp.allow_reuse_port) = (framer, reuse_address, reuse_port);
                Kind::Udp(Arc::new(UdpServer::new(engine.clone(), udp)))
            }
            "serial" => {
                let args = serial.ok_or_else(|| PyValueError::new_err("a serial server needs a port"))?;
                Kind::Serial(Arc::new(SerialServer::new(
                    engine.clone(),
                    serial_config(args, framer)?,
                )))
            }
            "tls" => {
                let args = tls.ok_or_else(|| PyValueError::new_err("a TLS server needs certfile and keyfile"))?;
                let config = TlsServerConfig {
                    tcp,
                    ..TlsServerConfig::default()
                };
                Kind::Tls(Arc::new(TlsServer::new(engine.clone(), config, tls_config(args)?)))
            }
            "engine" => Kind::Engine(ServerHandle::new()),
            other => return Err(PyValueError::new_err(format!("unknown server kind {other:?}"))),
        };
        Ok(Self {
            runtime: Some(runtime(workers)?),
            kind,
            sessions,
            task: Mutex::new(None),
        })
    }

    /// Binds (or opens the serial port) now; returns `(host, port)`, or None on a serial line.
    fn bind(&self, py: Python<'_>) -> PyResult<Option<(String, u16)>> {
        let _guard = self.rt()?.enter();
        let bound = py.allow_threads(|| match &self.kind {
            Kind::Tcp(s) => s.bind().map(Some),
            Kind::Udp(s) => s.bind().map(Some),
            Kind::Tls(s) => s.bind().map(Some),
            Kind::Serial(s) => s.open().map(|()| None),
            Kind::Engine(_) => Ok(None),
        });
        let bound = bound.map_err(|e| os_error(&e))?;
        Ok(bound.map(|a| (a.ip().to_string(), a.port())))
    }

    /// Starts serving in the background (idempotent).
    fn start(&self) -> PyResult<()> {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.is_some() {
            return Ok(());
        }
        let rt = self.rt()?;
        *task = Some(match &self.kind {
            Kind::Tcp(s) => spawn(rt, s.clone(), |s| async move { s.serve_forever().await }),
            Kind::Udp(s) => spawn(rt, s.clone(), |s| async move { s.serve_forever().await }),
            Kind::Tls(s) => spawn(rt, s.clone(), |s| async move { s.serve_forever().await }),
            Kind::Serial(s) => spawn(rt, s.clone(), |s| async move { s.serve_forever().await }),
            Kind::Engine(_) => return Ok(()),
        });
        Ok(())
    }

    /// Waits up to `timeout` seconds for the server to stop, with the GIL
    /// released; True once it has stopped. Raises the error that ended it.
    fn wait(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let handle = self.handle();
        let limit = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX);
        if let Kind::Engine(h) = &self.kind {
            return Ok(py.allow_threads(|| wait_stopping(h, limit)));
        }
        let stopped = py.allow_threads(|| handle.wait_stopped_timeout(limit));
        if !stopped && !self.finished() {
            return Ok(false);
        }
        self.result(py)?;
        Ok(true)
    }

    /// Asks the server to stop; returns at once.
    fn stop(&self) {
        self.handle().stop();
    }

    /// Stops and releases the socket of a server that is not serving yet.
    fn close(&self) {
        match &self.kind {
            Kind::Tcp(s) => s.server_close(),
            Kind::Udp(s) => s.server_close(),
            Kind::Tls(s) => s.server_close(),
            Kind::Serial(_) | Kind::Engine(_) => self.stop(),
        }
    }

    /// True once a stop was asked for.
    #[getter]
    fn stopping(&self) -> bool {
        self.handle().is_stopping()
    }

    /// The bound `(host, port)`, once bound.
    #[getter]
    fn address(&self) -> Option<(String, u16)> {
        self.handle().local_addr().map(|a| (a.ip().to_string(), a.port()))
    }
}

/// Waits up to `limit` until a stop of `handle` was asked for.
fn wait_stopping(handle: &ServerHandle, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while !handle.is_stopping() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Spawns `f(server)` on the runtime.
fn spawn<S, F, Fut>(rt: &Runtime, server: S, f: F) -> JoinHandle<Result<(), ServerError>>
where
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = Result<(), ServerError>> + Send + 'static,
{
    rt.spawn(f(server))
}

impl Server {
    /// The runtime (present until drop).
    fn rt(&self) -> PyResult<&Runtime> {
        self.runtime
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the server is gone"))
    }

    /// The stop switch.
    fn handle(&self) -> ServerHandle {
        match &self.kind {
            Kind::Tcp(s) => s.handle(),
            Kind::Udp(s) => s.handle(),
            Kind::Tls(s) => s.handle(),
            Kind::Serial(s) => s.handle(),
            Kind::Engine(h) => h.clone(),
        }
    }

    /// True if the serving task has ended.
    fn finished(&self) -> bool {
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        task.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// Takes the ended task's result: its error as a Python exception.
    fn result(&self, py: Python<'_>) -> PyResult<()> {
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(task) = task.filter(JoinHandle::is_finished) else {
            return Ok(());
        };
        let rt = self.rt()?;
        match py.allow_threads(|| rt.block_on(task)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(os_error(&e)),
            Err(e) => Err(PyRuntimeError::new_err(format!("the server task failed: {e}"))),
        }
    }
}
