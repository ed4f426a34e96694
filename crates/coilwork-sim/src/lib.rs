//! # coilwork-sim: a Modbus device simulator
//!
//! Reads pymodbus's simulator configuration (the JSON of
//! `pymodbus.server.simulator`, `setup.json`) and serves the selected device
//! over the selected server with coilwork's engine and tokio adapter.
//!
//! ```no_run
//! # async fn run() -> Result<(), coilwork_sim::SimError> {
//! use coilwork_sim::{Simulator, SimulatorOptions};
//! let sim = Simulator::from_file("setup.json", SimulatorOptions::default())?;
//! let handle = sim.start().await?;
//! println!("serving on {:?}", handle.local_addr());
//! sim.device().set_register(3, 42)?;
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The register layout, the actions and where coilwork follows the Modbus
//! spec instead of pymodbus are described in the crate's README.md.
#![forbid(unsafe_code)]

pub mod actions;
pub mod config;
pub mod device;
mod error;
pub mod http;
pub mod monitor;
mod tls;

pub use actions::{ActionContext, CustomAction};
pub use config::{Endpoint, SimConfig};
pub use device::{Cell, CellType, DecodedValue, RegisterInfo, SimDevice};
pub use error::{ConfigError, SimError};
pub use monitor::{Call, CallFilter, Fault, FaultKind, FaultSpec, LogEntry, Monitor};

use coilwork_core::storage::ServerContext;
use coilwork_core::{Engine, EngineOptions, ExceptionCode, Framing, Identity};
use coilwork_tokio::{
    ServerHandle, TcpServer, TcpServerConfig, TcpStats, TlsConfig, TlsServer, TlsServerConfig, UdpServer,
    UdpServerConfig, UdpStats,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::watch;

/// The configuration `coilwork simulate` runs without `--json-file`: a TCP
/// server on 127.0.0.1:5020 and one device with a few registers of each type.
pub const DEFAULT_CONFIG: &str = include_str!("default.json");

/// Which server and device to run, custom actions, and the HTTP settings.
#[derive(Clone, Default)]
pub struct SimulatorOptions {
    /// Name in `server_list` (default `server`, or the only one).
    pub modbus_server: Option<String>,
    /// Name in `device_list` (default `device`, or the only one).
    pub modbus_device: Option<String>,
    /// HTTP host: with it or `http_port`, the REST API and the web page are
    /// served (default host 127.0.0.1).
    pub http_host: Option<String>,
    /// HTTP port: with it or `http_host`, the REST API and the web page are
    /// served (default port 8080; 0 picks a free one).
    pub http_port: Option<u16>,
    /// Serve the files of this directory as the web page instead of the
    /// built-in one (the API stays).
    pub web_app_path: Option<PathBuf>,
    /// Bearer token every API call (and `/metrics`) must carry.
    pub http_token: Option<String>,
    /// Host names the HTTP server answers to besides loopback names and its
    /// bound address (other `Host` headers get 421).
    pub http_allow_hosts: Vec<String>,
    actions: Vec<(String, CustomAction)>,
}

impl std::fmt::Debug for SimulatorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorOptions")
            .field("modbus_server", &self.modbus_server)
            .field("modbus_device", &self.modbus_device)
            .field("http_host", &self.http_host)
            .field("http_port", &self.http_port)
            .field("web_app_path", &self.web_app_path)
            .field("http_token", &self.http_token.as_ref().map(|_| "<set>"))
            .field("http_allow_hosts", &self.http_allow_hosts)
            .field("actions", &self.actions.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .finish()
    }
}

impl SimulatorOptions {
    /// Selects the server by name.
    pub fn server(mut self, name: impl Into<String>) -> Self {
        self.modbus_server = Some(name.into());
        self
    }

    /// Selects the device by name.
    pub fn device(mut self, name: impl Into<String>) -> Self {
        self.modbus_device = Some(name.into());
        self
    }

    /// Serves HTTP on `host:port` (port 0: a free one).
    pub fn http(mut self, host: impl Into<String>, port: u16) -> Self {
        self.http_host = Some(host.into());
        self.http_port = Some(port);
        self
    }

    /// Registers a custom action usable as `"action": name` in the configuration.
    pub fn action(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&mut ActionContext<'_>) -> Result<(), ExceptionCode> + Send + Sync + 'static,
    ) -> Self {
        self.actions.push((name.into(), Arc::new(f)));
        self
    }
}

/// A running simulator: its addresses and its stop switch.
#[derive(Debug, Clone)]
pub struct SimulatorHandle {
    inner: Arc<Inner>,
    local_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
}

impl SimulatorHandle {
    /// The Modbus server's bound address (network servers).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The HTTP server's bound address, when HTTP is served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Asks the simulator (Modbus and HTTP) to stop; returns at once.
    pub fn stop(&self) {
        self.inner.stop_all();
    }

    /// Waits until the simulator has stopped: without HTTP, when the Modbus
    /// server stops; with HTTP, after a stop of the whole simulator (a
    /// Modbus stop from the API leaves the HTTP server up for a restart).
    pub async fn stopped(&self) {
        self.inner.stopped().await;
    }

    /// Stops and waits.
    pub async fn shutdown(&self) {
        self.stop();
        self.stopped().await;
    }
}

/// Counters of the Modbus server now running.
#[derive(Debug, Clone)]
pub(crate) enum Stats {
    Tcp(Arc<TcpStats>),
    Udp(Arc<UdpStats>),
}

/// Connection and byte counters of the Modbus server, over restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Connections accepted (TCP).
    pub connections_total: u64,
    /// Connections open now (TCP).
    pub connections_active: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

impl Stats {
    fn traffic(&self) -> Traffic {
        match self {
            Self::Tcp(s) => Traffic {
                connections_total: s.accepted(),
                connections_active: s.active(),
                bytes_in: s.bytes_in(),
                bytes_out: s.bytes_out(),
            },
            Self::Udp(s) => Traffic {
                bytes_in: s.bytes_in(),
                bytes_out: s.bytes_out(),
                ..Traffic::default()
            },
        }
    }
}

/// The Modbus server's state.
#[derive(Debug, Default)]
pub(crate) struct Modbus {
    pub(crate) handle: Option<ServerHandle>,
    pub(crate) local_addr: Option<SocketAddr>,
    stats: Option<Stats>,
    /// Totals of earlier runs (before restarts).
    base: Traffic,
    pub(crate) started: Option<Instant>,
}

/// What the simulator and its HTTP handlers share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) server_name: String,
    pub(crate) device_name: String,
    pub(crate) endpoint: Endpoint,
    /// The loaded TLS configuration of a `comm: "tls"` server.
    tls: Option<TlsConfig>,
    pub(crate) device: Arc<SimDevice>,
    pub(crate) engine: Arc<Engine>,
    pub(crate) monitor: Arc<Monitor>,
    pub(crate) options: SimulatorOptions,
    pub(crate) modbus: Mutex<Modbus>,
    /// True once the whole simulator is asked to stop.
    shutdown: watch::Sender<bool>,
    /// True while the HTTP server runs.
    http_running: watch::Sender<bool>,
    pub(crate) http_addr: Mutex<Option<SocketAddr>>,
    pub(crate) created: Instant,
}

/// A device from `device_list` served by a server from `server_list`.
pub struct Simulator {
    config: SimConfig,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("server", &self.inner.server_name)
            .field("device", &self.inner.device_name)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pick<'a, T>(
    list: &'a std::collections::BTreeMap<String, T>,
    wanted: Option<&str>,
    default: &str,
    what: &str,
) -> Result<(&'a str, &'a T), ConfigError> {
    let names = || list.keys().cloned().collect::<Vec<_>>().join(", ");
    match wanted {
        Some(name) => list.get_key_value(name).map(|(k, v)| (k.as_str(), v)).ok_or_else(|| {
            ConfigError::new(
                what,
                format!("{name:?}"),
                format!("no such entry (there are: {})", names()),
            )
        }),
        None => {
            if let Some((k, v)) = list.get_key_value(default) {
                return Ok((k.as_str(), v));
            }
            let mut it = list.iter();
            match (it.next(), it.next()) {
                (Some((k, v)), None) => Ok((k.as_str(), v)),
                (None, _) => Err(ConfigError::new(what, "(none given)", "the list has no entries")),
                _ => Err(ConfigError::new(
                    what,
                    "(none given)",
                    format!("no entry named {default:?}; choose one of: {}", names()),
                )),
            }
        }
    }
}

fn framing(f: config::FramerName) -> Framing {
    match f {
        config::FramerName::Rtu => Framing::Rtu,
        config::FramerName::Ascii => Framing::Ascii,
        config::FramerName::Socket | config::FramerName::Tls => Framing::Mbap,
    }
}

impl Simulator {
    /// Reads and validates the configuration file at `path`.
    pub fn from_file(path: impl AsRef<Path>, options: SimulatorOptions) -> Result<Self, SimError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_str_with_origin(&text, &path.display().to_string(), path.parent(), options)
    }

    /// Validates a configuration given as JSON text.
    pub fn from_json(json: &str, options: SimulatorOptions) -> Result<Self, SimError> {
        Self::from_str_with_origin(json, "configuration", None, options)
    }

    /// The embedded default configuration ([`DEFAULT_CONFIG`]).
    pub fn with_default_config(options: SimulatorOptions) -> Result<Self, SimError> {
        Self::from_str_with_origin(DEFAULT_CONFIG, "default configuration", None, options)
    }

    fn from_str_with_origin(
        json: &str,
        origin: &str,
        base_dir: Option<&Path>,
        options: SimulatorOptions,
    ) -> Result<Self, SimError> {
        let config: SimConfig = serde_json::from_str(json).map_err(|source| SimError::Json {
            origin: origin.to_owned(),
            source,
        })?;
        Self::build(config, options, base_dir).map_err(|e| match e {
            SimError::Config { error, .. } => SimError::Config {
                origin: origin.to_owned(),
                error,
            },
            other => other,
        })
    }

    /// Builds the simulator from a parsed configuration: every server entry
    /// and the selected device are validated, the selected server's TLS
    /// files (relative paths: from the working directory) are loaded;
    /// nothing is opened.
    pub fn from_config(config: SimConfig, options: SimulatorOptions) -> Result<Self, SimError> {
        Self::build(config, options, None)
    }

    /// As [`Simulator::from_config`]; relative TLS file paths are looked up
    /// in `base_dir` (the JSON file's directory) first.
    fn build(config: SimConfig, options: SimulatorOptions, base_dir: Option<&Path>) -> Result<Self, SimError> {
        let wrap = |error: ConfigError| SimError::Config {
            origin: "configuration".to_owned(),
            error,
        };
        for (name, server) in &config.server_list {
            server.endpoint(name).map_err(wrap)?;
        }
        let (server_name, server) = pick(
            &config.server_list,
            options.modbus_server.as_deref(),
            "server",
            "modbus_server",
        )
        .map_err(wrap)?;
        let (device_name, device_cfg) = pick(
            &config.device_list,
            options.modbus_device.as_deref(),
            "device",
            "modbus_device",
        )
        .map_err(wrap)?;
        let endpoint = server.endpoint(server_name).map_err(wrap)?;
        let tls = match &endpoint {
            Endpoint::Tls {
                certfile,
                keyfile,
                cafile,
                ..
            } => Some(
                tls::load(
                    server_name,
                    certfile,
                    keyfile,
                    cafile.as_deref(),
                    server.password.is_some(),
                    base_dir,
                )
                .map_err(wrap)?,
            ),
            _ => None,
        };
        let device = Arc::new(SimDevice::build(device_name, device_cfg, &options.actions).map_err(wrap)?);

        let context = match server.device_id {
            Some(id) => ServerContext::multi().with_device(id, device.clone()),
            None => ServerContext::single(device.clone()),
        };
        let mut identity = Identity::new();
        if let Some(id) = &server.identity {
            let set = |ident: Identity, f: fn(Identity, &str) -> Identity, v: &Option<String>| match v {
                Some(v) => f(ident, v),
                None => ident,
            };
            identity = set(identity, Identity::vendor_name, &id.VendorName);
            identity = set(identity, Identity::product_code, &id.ProductCode);
            identity = set(identity, Identity::major_minor_revision, &id.MajorMinorRevision);
            identity = set(identity, Identity::vendor_url, &id.VendorUrl);
            identity = set(identity, Identity::product_name, &id.ProductName);
            identity = set(identity, Identity::model_name, &id.ModelName);
            identity = set(identity, Identity::user_application_name, &id.UserApplicationName);
        }
        let engine_options = EngineOptions {
            ignore_missing_devices: server.ignore_missing_devices.or(server.ignore_missing_slaves),
            broadcast_enable: server.broadcast_enable.unwrap_or(false),
        };
        let monitor = Arc::new(Monitor::new());
        let engine = Arc::new(
            Engine::builder(context)
                .identity(identity)
                .options(engine_options)
                .hook(monitor.clone())
                .build(),
        );
        let inner = Arc::new(Inner {
            server_name: server_name.to_owned(),
            device_name: device_name.to_owned(),
            endpoint,
            tls,
            device,
            engine,
            monitor,
            options,
            modbus: Mutex::new(Modbus::default()),
            shutdown: watch::Sender::new(false),
            http_running: watch::Sender::new(false),
            http_addr: Mutex::new(None),
            created: Instant::now(),
        });
        Ok(Self { config, inner })
    }

    /// The whole parsed configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Name of the server entry served.
    pub fn server_name(&self) -> &str {
        &self.inner.server_name
    }

    /// Name of the device entry served.
    pub fn device_name(&self) -> &str {
        &self.inner.device_name
    }

    /// Where the server serves.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The simulated device (read and set registers, list them).
    pub fn device(&self) -> &Arc<SimDevice> {
        &self.inner.device
    }

    /// The engine serving the device.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// The call monitor, faults, counters and log (the engine's hook).
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.inner.monitor
    }

    /// The options given.
    pub fn options(&self) -> &SimulatorOptions {
        &self.inner.options
    }

    /// A human description of the endpoint, e.g. `Modbus/TCP on 127.0.0.1:5020`.
    pub fn describe(&self, local: Option<SocketAddr>) -> String {
        self.inner.describe(local)
    }

    /// Opens the Modbus server (and the HTTP server when an HTTP address is
    /// configured) and serves in spawned tasks; returns at once with a
    /// handle. Needs a tokio runtime.
    pub async fn start(&self) -> Result<SimulatorHandle, SimError> {
        self.inner.shutdown.send_replace(false);
        let local_addr = self.inner.start_modbus(None).await?;
        let http_addr = match http::address(&self.inner.options) {
            Some((host, port)) => match http::start(self.inner.clone(), &host, port).await {
                Ok(addr) => Some(addr),
                Err(e) => {
                    self.inner.stop_all();
                    return Err(e);
                }
            },
            None => None,
        };
        Ok(SimulatorHandle {
            inner: self.inner.clone(),
            local_addr,
            http_addr,
        })
    }

    /// Serves until [`Simulator::stop`] (or the handle) stops it.
    pub async fn run_forever(&self) -> Result<(), SimError> {
        let handle = self.start().await?;
        handle.stopped().await;
        Ok(())
    }

    /// Stops the simulator (Modbus and HTTP), if running; returns at once.
    pub fn stop(&self) {
        self.inner.stop_all();
    }
}

impl Inner {
    /// A human description of the endpoint, e.g. `Modbus/TCP on 127.0.0.1:5020`.
    pub fn describe(&self, local: Option<SocketAddr>) -> String {
        let kind = |f: config::FramerName, t: &str| match f {
            config::FramerName::Rtu => format!("Modbus RTU over {t}"),
            config::FramerName::Ascii => format!("Modbus ASCII over {t}"),
            _ => format!("Modbus/{t}"),
        };
        let at = |host: &str, port: u16| local.map_or_else(|| format!("{host}:{port}"), |a| a.to_string());
        match &self.endpoint {
            Endpoint::Tcp { host, port, framer } => format!("{} on {}", kind(*framer, "TCP"), at(host, *port)),
            Endpoint::Udp { host, port, framer } => format!("{} on {}", kind(*framer, "UDP"), at(host, *port)),
            Endpoint::Tls { host, port, cafile, .. } => match cafile {
                Some(_) => format!("Modbus/TCP Security on {}", at(host, *port)),
                None => format!(
                    "Modbus/TCP over server-only TLS (no client certificates) on {}",
                    at(host, *port)
                ),
            },
            Endpoint::Serial {
                port,
                framer,
                baudrate,
                bytesize,
                parity,
                stopbits,
                ..
            } => format!(
                "{} on {port} at {baudrate} {bytesize}{parity}{stopbits}",
                kind(*framer, "serial")
            ),
        }
    }

    async fn resolve(host: &str, port: u16) -> Result<SocketAddr, SimError> {
        let mut addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| SimError::Unsupported(format!("cannot resolve host {host:?}: {e}")))?;
        addrs
            .next()
            .ok_or_else(|| SimError::Unsupported(format!("host {host:?} has no address")))
    }

    /// Opens the Modbus server (on `reuse`, the address of an earlier run,
    /// if given) and serves it in a spawned task.
    pub(crate) async fn start_modbus(&self, reuse: Option<SocketAddr>) -> Result<Option<SocketAddr>, SimError> {
        let engine = self.engine.clone();
        let (handle, local_addr, stats) = match &self.endpoint {
            Endpoint::Tcp { host, port, framer } => {
                let addr = match reuse {
                    Some(a) => a,
                    None => Self::resolve(host, *port).await?,
                };
                let config = TcpServerConfig {
                    framing: framing(*framer),
                    ..TcpServerConfig::new(addr)
                };
                let server = TcpServer::new(engine, config);
                let local = server.bind()?;
                let handle = server.handle();
                let stats = Some(Stats::Tcp(server.stats().clone()));
                tokio::spawn(async move {
                    if let Err(e) = server.serve_forever().await {
                        tracing::error!("simulator server failed: {e}");
                    }
                });
                (handle, Some(local), stats)
            }
            Endpoint::Udp { host, port, framer } => {
                let addr = match reuse {
                    Some(a) => a,
                    None => Self::resolve(host, *port).await?,
                };
                let config = UdpServerConfig {
                    framing: framing(*framer),
                    ..UdpServerConfig::new(addr)
                };
                let server = UdpServer::new(engine, config);
                let local = server.bind()?;
                let handle = server.handle();
                let stats = Some(Stats::Udp(server.stats().clone()));
                tokio::spawn(async move {
                    if let Err(e) = server.serve_forever().await {
                        tracing::error!("simulator server failed: {e}");
                    }
                });
                (handle, Some(local), stats)
            }
            Endpoint::Tls { host, port, .. } => {
                let Some(tls) = self.tls.clone() else {
                    return Err(SimError::Unsupported(format!(
                        "server_list.{}: TLS configuration not loaded",
                        self.server_name
                    )));
                };
                let addr = match reuse {
                    Some(a) => a,
                    None => Self::resolve(host, *port).await?,
                };
                if tls.is_server_only() {
                    // The page's log only: the TLS server warns on stderr itself.
                    self.monitor.remember(
                        "warn",
                        format!(
                            "server_list.{}: TLS without client certificates (no cafile): \
                             not Modbus/TCP Security, any client is served",
                            self.server_name
                        ),
                    );
                }
                let server = TlsServer::new(engine, TlsServerConfig::new(addr), tls);
                let local = server.bind()?;
                let handle = server.handle();
                let stats = Some(Stats::Tcp(server.stats().clone()));
                tokio::spawn(async move {
                    if let Err(e) = server.serve_forever().await {
                        tracing::error!("simulator server failed: {e}");
                    }
                });
                (handle, Some(local), stats)
            }
            Endpoint::Serial {
                port,
                framer,
                baudrate,
                bytesize,
                parity,
                stopbits,
                local_echo,
                reconnect_delay,
            } => {
                use coilwork_tokio::{Parity, SerialServer, SerialServerConfig};
                let config = SerialServerConfig {
                    framing: framing(*framer),
                    baud_rate: *baudrate,
                    data_bits: *bytesize,
                    parity: match parity {
                        'E' => Parity::Even,
                        'O' => Parity::Odd,
                        _ => Parity::None,
                    },
                    stop_bits: *stopbits,
                    local_echo: *local_echo,
                    reconnect_delay: std::time::Duration::from_secs_f64(*reconnect_delay),
                    ..SerialServerConfig::new(port.clone())
                };
                let server = SerialServer::new(engine, config);
                server.open()?;
                let handle = server.handle();
                tokio::spawn(async move {
                    if let Err(e) = server.serve_forever().await {
                        tracing::error!("simulator server failed: {e}");
                    }
                });
                (handle, None, None)
            }
        };
        let mut modbus = lock(&self.modbus);
        if let Some(old) = modbus.handle.replace(handle) {
            old.stop();
        }
        if let Some(old) = modbus.stats.take() {
            let t = old.traffic();
            modbus.base.connections_total += t.connections_total;
            modbus.base.bytes_in += t.bytes_in;
            modbus.base.bytes_out += t.bytes_out;
        }
        modbus.stats = stats;
        modbus.local_addr = local_addr;
        modbus.started = Some(Instant::now());
        drop(modbus);
        self.monitor
            .log("info", format!("serving {}", self.describe(local_addr)));
        Ok(local_addr)
    }

    /// Stops the Modbus server (the HTTP server stays) and waits until it has stopped.
    pub(crate) async fn stop_modbus(&self) -> bool {
        let handle = {
            let mut m = lock(&self.modbus);
            m.started = None;
            m.handle.take()
        };
        match handle {
            Some(h) => {
                h.shutdown().await;
                self.monitor.log("info", "Modbus server stopped".into());
                true
            }
            None => false,
        }
    }

    /// Stops the Modbus server if it runs and starts it again on the same address.
    pub(crate) async fn restart_modbus(&self) -> Result<Option<SocketAddr>, SimError> {
        let reuse = lock(&self.modbus).local_addr;
        self.stop_modbus().await;
        self.start_modbus(reuse).await
    }

    /// True while the Modbus server serves.
    pub(crate) fn modbus_running(&self) -> bool {
        lock(&self.modbus)
            .handle
            .as_ref()
            .is_some_and(|h| !h.is_stopped() && !h.is_stopping())
    }

    /// Connection and byte counters over every run.
    pub(crate) fn traffic(&self) -> Traffic {
        let m = lock(&self.modbus);
        let now = m.stats.as_ref().map(Stats::traffic).unwrap_or_default();
        Traffic {
            connections_total: m.base.connections_total + now.connections_total,
            connections_active: now.connections_active,
            bytes_in: m.base.bytes_in + now.bytes_in,
            bytes_out: m.base.bytes_out + now.bytes_out,
        }
    }

    /// Asks everything to stop.
    pub(crate) fn stop_all(&self) {
        self.shutdown.send_replace(true);
        if let Some(h) = lock(&self.modbus).handle.as_ref() {
            h.stop();
        }
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn set_http_running(&self, running: bool) {
        self.http_running.send_replace(running);
    }

    async fn stopped(&self) {
        if *self.http_running.borrow() || self.options.http_host.is_some() || self.options.http_port.is_some() {
            let mut rx = self.shutdown.subscribe();
            let _ = rx.wait_for(|s| *s).await;
            let handle = lock(&self.modbus).handle.clone();
            if let Some(h) = handle {
                h.stopped().await;
            }
            let mut rx = self.http_running.subscribe();
            let _ = rx.wait_for(|r| !*r).await;
        } else {
            let handle = lock(&self.modbus).handle.clone();
            if let Some(h) = handle {
                h.stopped().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coilwork_core::{RequestContext, Storage};
    use serde_json::{Value, json};

    fn base() -> Value {
        json!({
            "server_list": {"server": {"comm": "tcp", "host": "127.0.0.1", "port": 5020, "framer": "socket"}},
            "device_list": {"device": {
                "setup": {
                    "co size": 20, "di size": 20, "hr size": 20, "ir size": 20,
                    "shared blocks": true, "type exception": false,
                    "defaults": {
                        "value": {"bits": 0, "uint16": 0, "uint32": 0, "float32": 0.0, "float64": 0.0, "string": " "},
                        "action": {"bits": null, "uint16": null, "uint32": null, "float32": null, "float64": null, "string": null}
                    }
                },
                "invalid": [], "write": [], "repeat": []
            }}
        })
    }

    fn with(path: &[&str], value: Value) -> Value {
        let mut v = base();
        let mut cur = &mut v;
        for (i, k) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cur[*k] = value.clone();
            } else {
                cur = &mut cur[*k];
            }
        }
        v
    }

    fn build(v: &Value) -> Result<Simulator, SimError> {
        Simulator::from_json(&v.to_string(), SimulatorOptions::default())
    }

    fn err(v: &Value) -> String {
        match build(v) {
            Ok(_) => panic!("accepted: {v}"),
            Err(e) => e.to_string(),
        }
    }

    const DEV: [&str; 2] = ["device_list", "device"];

    fn dev(key: &str, value: Value) -> Value {
        with(&[DEV[0], DEV[1], key], value)
    }

    const APP: RequestContext<'static> = RequestContext::application(1);

    fn hr(sim: &Simulator, start: u16, n: usize) -> Result<Vec<u16>, ExceptionCode> {
        let mut out = vec![0; n];
        sim.device().read_holding_registers(&APP, start, &mut out)?;
        Ok(out)
    }

    #[test]
    fn default_config_builds() {
        let sim = Simulator::with_default_config(SimulatorOptions::default()).unwrap();
        assert_eq!(
            sim.endpoint(),
            &Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 5020,
                framer: config::FramerName::Socket
            }
        );
        assert_eq!(sim.device().decoded(10), Some(DecodedValue::Uint32(617001)));
        assert_eq!(
            sim.device().decoded(30),
            Some(DecodedValue::String("coilwork  ".into()))
        );
    }

    #[test]
    fn layout_words_big_endian() {
        let v = dev("uint32", json!([{"addr": [0, 1], "value": 0x1234_5678u32}]));
        let v = {
            let mut v = v;
            v["device_list"]["device"]["float32"] = json!([{"addr": [2, 3], "value": 1.0}]);
            v["device_list"]["device"]["float64"] = json!([{"addr": [4, 7], "value": 2.0}]);
            v["device_list"]["device"]["string"] = json!([{"addr": [8, 10], "value": "abc"}]);
            v["device_list"]["device"]["int16"] = json!([{"addr": 11, "value": -2}]);
            v
        };
        let sim = build(&v).unwrap();
        assert_eq!(
            hr(&sim, 0, 12).unwrap(),
            [
                0x1234, 0x5678, 0x3F80, 0, 0x4000, 0, 0, 0, 0x6162, 0x6320, 0x2020, 0xFFFE
            ]
        );
    }

    #[test]
    fn undefined_and_write_protection() {
        let mut v = dev("uint16", json!([[0, 3], {"addr": 5, "value": 9}]));
        v["device_list"]["device"]["write"] = json!([[2, 3]]);
        let sim = build(&v).unwrap();
        assert_eq!(hr(&sim, 4, 1), Err(ExceptionCode::IllegalDataAddress));
        assert_eq!(hr(&sim, 3, 3), Err(ExceptionCode::IllegalDataAddress));
        assert_eq!(hr(&sim, 5, 1).unwrap(), [9]);
        let d = sim.device();
        assert_eq!(
            d.write_holding_registers(&APP, 1, &[1]),
            Err(ExceptionCode::IllegalDataAddress)
        );
        // All or nothing: 2 is writable, 1 is not.
        assert_eq!(
            d.write_holding_registers(&APP, 1, &[7, 7]),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(hr(&sim, 2, 1).unwrap(), [0]);
        d.write_holding_registers(&APP, 2, &[7, 8]).unwrap();
        assert_eq!(hr(&sim, 0, 4).unwrap(), [0, 0, 7, 8]);
        // Past the end of the device.
        assert_eq!(hr(&sim, 19, 2), Err(ExceptionCode::IllegalDataAddress));
    }

    #[test]
    fn type_exception_whole_values() {
        let mut v = dev("uint32", json!([[0, 1], [2, 3]]));
        v["device_list"]["device"]["setup"]["type exception"] = json!(true);
        v["device_list"]["device"]["string"] = json!([{"addr": [4, 6], "value": "abcdef"}]);
        v["device_list"]["device"]["write"] = json!([[0, 1], 2]);
        let sim = build(&v).unwrap();
        assert!(hr(&sim, 0, 4).is_ok());
        assert_eq!(hr(&sim, 1, 2), Err(ExceptionCode::IllegalDataAddress));
        assert_eq!(hr(&sim, 0, 3), Err(ExceptionCode::IllegalDataAddress));
        assert!(hr(&sim, 4, 2).is_ok());
        assert_eq!(hr(&sim, 5, 1), Err(ExceptionCode::IllegalDataAddress));
        let d = sim.device();
        d.write_holding_registers(&APP, 0, &[1, 2]).unwrap();
        assert_eq!(
            d.write_holding_registers(&APP, 0, &[1]),
            Err(ExceptionCode::IllegalDataAddress)
        );
        // 3 is not writable: the value at 2 cannot be written whole.
        assert_eq!(
            d.write_holding_registers(&APP, 2, &[1, 2]),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn separate_blocks_and_bits() {
        let mut v = dev(
            "bits",
            json!([{"addr": 0, "value": 0x8001}, {"addr": 1, "value": 2}, {"addr": 2, "value": 4}]),
        );
        v["device_list"]["device"]["setup"]["shared blocks"] = json!(false);
        v["device_list"]["device"]["setup"]["co size"] = json!(1);
        v["device_list"]["device"]["setup"]["di size"] = json!(1);
        v["device_list"]["device"]["setup"]["ir size"] = json!(1);
        v["device_list"]["device"]["setup"]["hr size"] = json!(1);
        v["device_list"]["device"]["write"] = json!([0]);
        let sim = build(&v).unwrap();
        let d = sim.device();
        let mut bits = [false; 16];
        d.read_coils(&APP, 0, &mut bits).unwrap();
        assert!(bits[0] && bits[15] && !bits[1]);
        let mut one = [false; 2];
        d.read_discrete_inputs(&APP, 0, &mut one).unwrap();
        assert_eq!(one, [false, true]);
        let mut r = [0u16; 1];
        d.read_input_registers(&APP, 0, &mut r).unwrap();
        assert_eq!(r, [4]);
        // Coil 16 would be in the discrete input block: not a coil.
        assert_eq!(d.read_coils(&APP, 15, &mut one), Err(ExceptionCode::IllegalDataAddress));
        d.write_coils(&APP, 1, &[true]).unwrap();
        assert_eq!(sim.device().register(0).unwrap().value, 0x8003);
        assert_eq!(d.write_coils(&APP, 16, &[true]), Err(ExceptionCode::IllegalDataAddress));
        // Holding register 0 is cell 3, undefined.
        assert_eq!(hr(&sim, 0, 1), Err(ExceptionCode::IllegalDataAddress));
    }

    #[test]
    fn increment_and_reset_actions() {
        let mut v = dev(
            "uint16",
            json!([{"addr": 0, "value": 65534, "action": "increment"},
                   {"addr": 1, "value": 50, "action": "increment", "parameters": {"minval": 45, "maxval": 51}},
                   {"addr": 2, "value": 5}, {"addr": 3, "action": "reset"}]),
        );
        v["device_list"]["device"]["write"] = json!([2]);
        let sim = build(&v).unwrap();
        assert_eq!(hr(&sim, 0, 2).unwrap(), [65535, 51]);
        assert_eq!(hr(&sim, 0, 2).unwrap(), [0, 45]);
        sim.device().write_holding_registers(&APP, 2, &[99]).unwrap();
        assert_eq!(hr(&sim, 2, 1).unwrap(), [99]);
        assert_eq!(hr(&sim, 3, 1), Err(ExceptionCode::ServerDeviceFailure));
        assert_eq!(hr(&sim, 2, 1).unwrap(), [5]);
        assert_eq!(hr(&sim, 0, 1).unwrap(), [65535]);
    }

    #[test]
    fn repeat_copies_cyclically() {
        let mut v = dev("uint16", json!([{"addr": 0, "value": 1}, {"addr": 1, "value": 2}]));
        v["device_list"]["device"]["repeat"] = json!([{"addr": [0, 1], "to": [4, 8]}]);
        let sim = build(&v).unwrap();
        assert_eq!(hr(&sim, 4, 5).unwrap(), [1, 2, 1, 2, 1]);
    }

    #[test]
    fn custom_action() {
        let v = dev("uint16", json!([{"addr": 0, "action": "double", "value": 3}]));
        let opts = SimulatorOptions::default().action("double", |ctx| {
            let c = &mut ctx.cells[ctx.index];
            c.value = c.value.wrapping_mul(2);
            Ok(())
        });
        let sim = Simulator::from_json(&v.to_string(), opts).unwrap();
        assert_eq!(hr(&sim, 0, 1).unwrap(), [6]);
        assert_eq!(hr(&sim, 0, 1).unwrap(), [12]);
    }

    // --- one test per configuration error ---

    #[test]
    fn error_bad_json() {
        let e = Simulator::from_json("{", SimulatorOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("EOF"), "{e}");
    }

    #[test]
    fn error_unknown_server_key() {
        let e = err(&with(&["server_list", "server", "hots"], json!("x")));
        assert!(e.contains("unknown field `hots`"), "{e}");
    }

    #[test]
    fn error_unknown_identity_key() {
        let e = err(&with(&["server_list", "server", "identity"], json!({"Vendor": "x"})));
        assert!(e.contains("unknown field `Vendor`"), "{e}");
    }

    #[test]
    fn error_unknown_device_section() {
        let e = err(&dev("uint64", json!([])));
        assert!(e.contains("unknown field `uint64`"), "{e}");
    }

    #[test]
    fn error_bad_comm_and_framer() {
        let e = err(&with(&["server_list", "server", "comm"], json!("http")));
        assert!(e.contains("unknown variant `http`"), "{e}");
        let e = err(&with(&["server_list", "server", "framer"], json!("tls")));
        assert!(
            e.contains("server_list.server.framer = tls: comm tcp needs framer"),
            "{e}"
        );
        let mut v = base();
        v["server_list"]["server"] = json!({"comm": "serial", "port": "/dev/null", "framer": "socket"});
        assert!(err(&v).contains("comm serial needs framer rtu or ascii"));
    }

    #[test]
    fn error_bad_port_and_host() {
        let e = err(&with(&["server_list", "server", "port"], json!(70000)));
        assert!(
            e.contains("server_list.server.port = 70000: expected a port number"),
            "{e}"
        );
        let mut v = base();
        v["server_list"]["server"].as_object_mut().unwrap().remove("host");
        assert!(err(&v).contains("server_list.server.host = (missing)"));
        let mut v = base();
        v["server_list"]["server"] = json!({"comm": "serial", "port": 3, "framer": "rtu"});
        assert!(err(&v).contains("server_list.server.port = 3: a serial server needs a device path"));
        let mut v = base();
        v["server_list"]["server"] = json!({"comm": "serial", "port": "/dev/x", "framer": "rtu", "parity": "X"});
        assert!(err(&v).contains("server_list.server.parity = \"X\""));
    }

    #[test]
    fn error_missing_setup_key() {
        let mut v = base();
        v["device_list"]["device"]["setup"]
            .as_object_mut()
            .unwrap()
            .remove("hr size");
        let e = err(&v);
        assert!(e.contains("missing field `hr size`"), "{e}");
    }

    #[test]
    fn error_size_exceeded() {
        let e = err(&with(&[DEV[0], DEV[1], "setup", "hr size"], json!(70000)));
        assert!(
            e.contains("device_list.device.setup.hr size = 70000: more than 65536"),
            "{e}"
        );
    }

    #[test]
    fn error_address_outside_device() {
        let e = err(&dev("uint16", json!([[18, 20]])));
        assert!(
            e.contains("device_list.device.uint16[0].addr = [18, 20]: outside the device (20 registers"),
            "{e}"
        );
        assert!(err(&dev("invalid", json!([25]))).contains("device_list.device.invalid[0] = 25: outside"));
        assert!(err(&dev("write", json!([[0, 30]]))).contains("device_list.device.write[0] = [0, 30]: outside"));
        let e = err(&dev("repeat", json!([{"addr": [0, 1], "to": [10, 40]}])));
        assert!(e.contains("device_list.device.repeat[0].to = [10, 40]: outside"), "{e}");
    }

    #[test]
    fn error_overlap() {
        let mut v = dev("uint16", json!([[0, 3]]));
        v["device_list"]["device"]["uint32"] = json!([[2, 3]]);
        let e = err(&v);
        assert!(
            e.contains("device_list.device.uint32[0].addr = [2, 3]: register 2 is already defined as uint16"),
            "{e}"
        );
    }

    #[test]
    fn error_write_undefined() {
        let e = err(&dev("write", json!([4])));
        assert!(
            e.contains("device_list.device.write[0] = 4: register 4 is not defined"),
            "{e}"
        );
    }

    #[test]
    fn error_bad_addresses() {
        let e = err(&dev("uint16", json!([[5, 2]])));
        assert!(e.contains("ends before it starts"), "{e}");
        let e = err(&dev("uint16", json!([-1])));
        assert!(e.contains("non-negative integers, found -1"), "{e}");
        let e = err(&dev("uint16", json!([{"value": 1}])));
        assert!(e.contains("missing \"addr\""), "{e}");
        let e = err(&dev("uint32", json!([[0, 2]])));
        assert!(e.contains("3 registers are not a whole number of uint32 values"), "{e}");
    }

    #[test]
    fn error_bad_values() {
        let e = err(&dev("uint16", json!([{"addr": 0, "value": 70000}])));
        assert!(
            e.contains("device_list.device.uint16[0].value = 70000: out of range 0..=65535"),
            "{e}"
        );
        let e = err(&dev("uint32", json!([{"addr": [0, 1], "value": "x"}])));
        assert!(e.contains("uint32[0].value = \"x\": uint32 needs an integer"), "{e}");
        let e = err(&dev("float32", json!([{"addr": [0, 1], "value": 1e300}])));
        assert!(e.contains("out of range for float32"), "{e}");
        let e = err(&dev("string", json!([{"addr": [0, 1], "value": "too long"}])));
        assert!(
            e.contains("string[0].value = \"too long\": 8 bytes do not fit in 2 registers"),
            "{e}"
        );
        let e = err(&dev("string", json!([{"addr": [0, 1], "value": 3}])));
        assert!(e.contains("a string needs a string value"), "{e}");
    }

    #[test]
    fn error_missing_default_value() {
        let mut v = dev("uint16", json!([0]));
        v["device_list"]["device"]["setup"]["defaults"]["value"] = json!({});
        let e = err(&v);
        assert!(e.contains("setup.defaults.value.uint16 = (missing)"), "{e}");
    }

    #[test]
    fn error_unknown_action() {
        let e = err(&dev("uint16", json!([{"addr": 0, "action": "jump"}])));
        assert!(
            e.contains("device_list.device.uint16[0].action = \"jump\": unknown action"),
            "{e}"
        );
        let e = err(&with(
            &[DEV[0], DEV[1], "setup", "defaults", "action", "bits"],
            json!("jump"),
        ));
        assert!(
            e.contains("setup.defaults.action.bits = \"jump\": unknown action"),
            "{e}"
        );
    }

    #[test]
    fn error_action_misuse() {
        let e = err(&dev("string", json!([{"addr": [0, 1], "action": "increment"}])));
        assert!(e.contains("cannot run on a string"), "{e}");
        let e = err(&dev(
            "uint16",
            json!([{"addr": 0, "action": "increment", "parameters": {"min": 1}}]),
        ));
        assert!(
            e.contains("takes parameters \"minval\" and \"maxval\", not \"min\""),
            "{e}"
        );
        let e = err(&dev(
            "uint16",
            json!([{"addr": 0, "action": "random", "parameters": {"minval": 9, "maxval": 1}}]),
        ));
        assert!(e.contains("minval 9 is above maxval 1"), "{e}");
    }

    #[test]
    fn error_unknown_server_or_device_name() {
        let e = Simulator::from_json(&base().to_string(), SimulatorOptions::default().server("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("modbus_server = \"nope\": no such entry (there are: server)"),
            "{e}"
        );
        let e = Simulator::from_json(&base().to_string(), SimulatorOptions::default().device("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("modbus_device = \"nope\""), "{e}");
        let e = Simulator::from_json(r#"{"server_list": {}, "device_list": {}}"#, SimulatorOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("modbus_server = (none given): the list has no entries"),
            "{e}"
        );
    }

    #[test]
    fn error_tls_files() {
        let tls = |extra: Value| {
            let mut server = json!({"comm": "tls", "host": "127.0.0.1", "port": 0, "framer": "tls"});
            for (k, v) in extra.as_object().unwrap() {
                server[k] = v.clone();
            }
            with(&["server_list", "server"], server)
        };
        let e = err(&tls(json!({"keyfile": "k"})));
        assert!(
            e.contains("server_list.server.certfile = (missing): a TLS server needs"),
            "{e}"
        );
        let e = err(&tls(json!({"certfile": "c"})));
        assert!(e.contains("server_list.server.keyfile = (missing)"), "{e}");
        let e = err(&tls(json!({"certfile": "c", "keyfile": "k", "cafile": ""})));
        assert!(
            e.contains("server_list.server.cafile = \"\": a TLS server needs"),
            "{e}"
        );
        // Checked before anything is opened: the file is read at load.
        let e = err(&tls(json!({"certfile": "no-such-cert.pem", "keyfile": "k"})));
        assert!(
            e.contains("server_list.server.certfile = \"no-such-cert.pem\": cannot read no-such-cert.pem"),
            "{e}"
        );
        // Not PEM.
        let e = err(&tls(json!({"certfile": "Cargo.toml", "keyfile": "k"})));
        assert!(
            e.contains("server_list.server.certfile = \"Cargo.toml\": Cargo.toml: no PEM certificate"),
            "{e}"
        );
    }
}
