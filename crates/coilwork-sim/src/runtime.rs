//! The runtime of a simulated server: the Modbus server's lifecycle (start,
//! stop, restart on the same address), its traffic counters, and the stop
//! switch shared with the HTTP server.

use crate::config::{self, Endpoint};
use crate::device::SimDevice;
use crate::error::SimError;
use crate::monitor::Monitor;
use crate::options::SimulatorOptions;
use crate::sync::lock;
use coilwork_core::metrics::{Metrics, Source};
use coilwork_core::{Engine, Framing, ServerStats};
use coilwork_tokio::{
    ServerHandle, TcpServer, TcpServerConfig, TcpStats, TlsConfig, TlsServer, TlsServerConfig, UdpServer,
    UdpServerConfig, UdpStats,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// A running simulator: its addresses and its stop switch.
#[derive(Debug, Clone)]
pub struct SimulatorHandle {
    pub(crate) servers: Vec<Arc<Inner>>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) local_addrs: Vec<Option<SocketAddr>>,
    pub(crate) http_addr: Option<SocketAddr>,
}

/// The Prometheus exposition of `servers` (each labelled `server="<name>"`).
pub(crate) fn prometheus(servers: &[&Inner]) -> String {
    let stats: Vec<Option<Arc<ServerStats>>> = servers.iter().map(|s| s.server_stats()).collect();
    let sources: Vec<Source<'_>> = servers
        .iter()
        .zip(&stats)
        .map(|(s, stats)| Source {
            name: &s.server_name,
            metrics: Some(&s.metrics),
            stats: stats.as_deref(),
        })
        .collect();
    coilwork_core::metrics::render(&sources)
}

impl SimulatorHandle {
    /// The Prometheus text exposition of every server served (requests,
    /// exceptions, latency, dropped frames, connections, bytes); see docs/metrics.md.
    pub fn prometheus(&self) -> String {
        prometheus(&self.servers.iter().map(|s| &**s).collect::<Vec<_>>())
    }

    /// The Modbus server's bound address (network servers).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// `(server name, bound address)` of every server served, in order.
    pub fn local_addrs(&self) -> Vec<(String, Option<SocketAddr>)> {
        self.servers
            .iter()
            .zip(&self.local_addrs)
            .map(|(s, a)| (s.server_name.clone(), *a))
            .collect()
    }

    /// `(server name, description of its endpoint)` of every server served, in order.
    pub fn describe_all(&self) -> Vec<(String, String)> {
        self.servers
            .iter()
            .zip(&self.local_addrs)
            .map(|(s, a)| (s.server_name.clone(), s.describe(*a)))
            .collect()
    }

    /// The HTTP server's bound address, when HTTP is served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Asks the simulator (Modbus and HTTP) to stop; returns at once.
    pub fn stop(&self) {
        self.servers.iter().for_each(|s| s.stop_all());
    }

    /// Waits until the simulator has stopped: without HTTP, when the Modbus
    /// server stops; with HTTP, after a stop of the whole simulator (a
    /// Modbus stop from the API leaves the HTTP server up for a restart).
    pub async fn stopped(&self) {
        for s in &self.servers {
            s.stopped().await;
        }
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
    /// A serial line's bytes (it has no connections).
    Serial(Arc<ServerStats>),
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
            Self::Udp(s) | Self::Serial(s) => Traffic {
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

/// A started server: its handle, bound address and counters.
type Started = (ServerHandle, Option<SocketAddr>, Option<Stats>);

fn report<E: std::fmt::Display>(result: Result<(), E>) {
    if let Err(e) = result {
        tracing::error!("simulator server failed: {e}");
    }
}

/// What the simulator and its HTTP handlers share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) server_name: String,
    pub(crate) device_name: String,
    pub(crate) endpoint: Endpoint,
    /// The loaded TLS configuration of a `comm: "tls"` server.
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) device: Arc<SimDevice>,
    /// With `device_ids`: every unit id and its device (the first's is `device`); else empty.
    pub(crate) units: Vec<(u8, Arc<SimDevice>)>,
    pub(crate) engine: Arc<Engine>,
    /// The engine's metrics (requests, latency, dropped frames).
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) monitor: Arc<Monitor>,
    pub(crate) options: SimulatorOptions,
    pub(crate) modbus: Mutex<Modbus>,
    /// True once the whole simulator is asked to stop.
    pub(crate) shutdown: watch::Sender<bool>,
    /// True while the HTTP server runs.
    pub(crate) http_running: watch::Sender<bool>,
    pub(crate) http_addr: Mutex<Option<SocketAddr>>,
    pub(crate) created: Instant,
    /// The `--state-file` saver, awaited at stop for its last save.
    pub(crate) saver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn framing(f: config::FramerName) -> Framing {
    match f {
        config::FramerName::Rtu => Framing::Rtu,
        config::FramerName::Ascii => Framing::Ascii,
        config::FramerName::Socket | config::FramerName::Tls => Framing::Mbap,
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
        let addr = |host: String, port: u16| async move {
            match reuse {
                Some(a) => Ok(a),
                None => Self::resolve(&host, port).await,
            }
        };
        let started = match &self.endpoint {
            Endpoint::Tcp { host, port, framer } => self.start_tcp(addr(host.clone(), *port).await?, *framer)?,
            Endpoint::Udp { host, port, framer } => self.start_udp(addr(host.clone(), *port).await?, *framer)?,
            Endpoint::Tls { host, port, .. } => {
                let tls = self.tls.clone().ok_or_else(|| {
                    SimError::Unsupported(format!(
                        "server_list.{}: TLS configuration not loaded",
                        self.server_name
                    ))
                })?;
                self.start_tls(addr(host.clone(), *port).await?, tls)?
            }
            Endpoint::Serial { .. } => self.start_serial()?,
        };
        let local_addr = self.record_start(started);
        self.monitor
            .log("info", format!("serving {}", self.describe(local_addr)));
        Ok(local_addr)
    }

    fn start_tcp(&self, addr: SocketAddr, framer: config::FramerName) -> Result<Started, SimError> {
        let config = TcpServerConfig {
            framing: framing(framer),
            ..TcpServerConfig::new(addr)
        };
        let server = TcpServer::new(self.engine.clone(), config);
        let local = server.bind()?;
        let started = (server.handle(), Some(local), Some(Stats::Tcp(server.stats().clone())));
        tokio::spawn(async move { report(server.serve_forever().await) });
        Ok(started)
    }

    fn start_udp(&self, addr: SocketAddr, framer: config::FramerName) -> Result<Started, SimError> {
        let config = UdpServerConfig {
            framing: framing(framer),
            ..UdpServerConfig::new(addr)
        };
        let server = UdpServer::new(self.engine.clone(), config);
        let local = server.bind()?;
        let started = (server.handle(), Some(local), Some(Stats::Udp(server.stats().clone())));
        tokio::spawn(async move { report(server.serve_forever().await) });
        Ok(started)
    }

    fn start_tls(&self, addr: SocketAddr, tls: TlsConfig) -> Result<Started, SimError> {
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
        let server = TlsServer::new(self.engine.clone(), TlsServerConfig::new(addr), tls);
        let local = server.bind()?;
        let started = (server.handle(), Some(local), Some(Stats::Tcp(server.stats().clone())));
        tokio::spawn(async move { report(server.serve_forever().await) });
        Ok(started)
    }

    fn start_serial(&self) -> Result<Started, SimError> {
        use coilwork_tokio::{Parity, SerialServer, SerialServerConfig};
        let Endpoint::Serial {
            port,
            framer,
            baudrate,
            bytesize,
            parity,
            stopbits,
            local_echo,
            reconnect_delay,
        } = &self.endpoint
        else {
            return Err(SimError::Unsupported("not a serial server".into()));
        };
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
        let server = SerialServer::new(self.engine.clone(), config);
        server.open()?;
        let handle = server.handle();
        let stats = Stats::Serial(Arc::clone(server.server_stats()));
        tokio::spawn(async move { report(server.serve_forever().await) });
        Ok((handle, None, Some(stats)))
    }

    /// Keeps the new server's handle and counters (adding the old run's to the totals).
    fn record_start(&self, (handle, local_addr, stats): Started) -> Option<SocketAddr> {
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
        local_addr
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

    /// The running (or last) network server's counters.
    pub(crate) fn server_stats(&self) -> Option<Arc<ServerStats>> {
        match lock(&self.modbus).stats.as_ref()? {
            Stats::Tcp(s) | Stats::Udp(s) | Stats::Serial(s) => Some(Arc::clone(s)),
        }
    }

    /// This server's families of the Prometheus exposition, labelled with its name.
    pub(crate) fn prometheus(&self) -> String {
        prometheus(&[self])
    }

    /// What `--state-file` keeps of this server: its device, or with
    /// `device_ids` each unit's, named `SERVER:UNIT`.
    pub(crate) fn kept(&self) -> Vec<crate::state::Kept> {
        if self.units.is_empty() {
            return vec![(self.server_name.clone(), self.device_name.clone(), self.device.clone())];
        }
        self.units
            .iter()
            .map(|(id, d)| {
                (
                    format!("{}:{id}", self.server_name),
                    self.device_name.clone(),
                    d.clone(),
                )
            })
            .collect()
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

    pub(crate) async fn stopped(&self) {
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
        // Nothing serves any more: the state saver saves a last time and ends.
        self.shutdown.send_replace(true);
        let saver = lock(&self.saver).take();
        if let Some(saver) = saver {
            let _ = saver.await;
        }
    }
}
