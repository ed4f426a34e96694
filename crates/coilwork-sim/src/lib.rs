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
//!
//! Modules, each importing only those listed before it: `error`, `sync`;
//! `config` (the JSON format); `csv` (register maps in CSV); `model` (register types and value
//! encoding); `mirror` (register values read without a lock); `generators` (time-based values); `actions`; `layout` (configuration to registers); `device`
//! (the `Storage` the engine serves); `monitor` (calls, faults, log);
//! `options`; `state` (`--state-file`); `runtime` (the Modbus server's lifecycle); `http` (REST API
//! and page); this file ties them into a [`Simulator`].
#![forbid(unsafe_code)]

pub mod actions;
pub mod config;
mod counters;
pub mod csv;
pub mod device;
mod error;
mod generators;
pub mod http;
mod layout;
mod mirror;
pub mod model;
pub mod monitor;
mod options;
mod runtime;
mod state;
mod sync;
mod tls;

pub use actions::{ActionContext, CustomAction};
pub use config::{Endpoint, SimConfig};
pub use device::{Cell, CellType, DecodedValue, RegisterInfo, SimDevice};
pub use error::{ConfigError, SimError};
pub use monitor::{Call, CallFilter, Fault, FaultKind, FaultSpec, LogEntry, Monitor};
pub use options::SimulatorOptions;
pub(crate) use runtime::Inner;
use runtime::Modbus;
pub use runtime::{SimulatorHandle, Traffic};
pub(crate) use sync::lock;

use coilwork_core::storage::ServerContext;
use coilwork_core::{Engine, EngineOptions, Identity};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// The configuration `coilwork simulate` runs without `--json-file`: a TCP
/// server on 127.0.0.1:5020 and one device with a few registers of each type.
pub const DEFAULT_CONFIG: &str = include_str!("default.json");

/// A device from `device_list` served by a server from `server_list`.
pub struct Simulator {
    config: SimConfig,
    /// The first server (what the single-server accessors show).
    inner: Arc<Inner>,
    /// Every server served, the first included.
    servers: Vec<Arc<Inner>>,
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

/// The identity (FC43/14) a server entry gives.
fn identity(server: &config::ServerConfig) -> Identity {
    let mut identity = Identity::new();
    let Some(id) = &server.identity else { return identity };
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
    set(identity, Identity::user_application_name, &id.UserApplicationName)
}

/// The engine serving `device` as the server entry says, with the monitor as
/// its observer and (for faults) its hook, its metrics, and the role policy (if any) as its authorizer.
fn engine(
    server: &config::ServerConfig,
    device: Arc<SimDevice>,
    units: &[(u8, Arc<SimDevice>)],
    monitor: Arc<Monitor>,
    metrics: Arc<coilwork_core::Metrics>,
    roles: Option<&Arc<dyn coilwork_core::engine::Authorizer>>,
) -> Arc<Engine> {
    let context = match server.device_id {
        _ if !units.is_empty() => units
            .iter()
            .fold(ServerContext::multi(), |c, (id, d)| c.with_device(*id, d.clone())),
        Some(id) => ServerContext::multi().with_device(id, device),
        None => ServerContext::single(device),
    };
    let engine_options = EngineOptions {
        ignore_missing_devices: server.ignore_missing_devices.or(server.ignore_missing_slaves),
        broadcast_enable: server.broadcast_enable.unwrap_or(false),
    };
    let mut builder = Engine::builder(context)
        .identity(identity(server))
        .options(engine_options)
        .observer(monitor.clone())
        .hook(monitor)
        .metrics(metrics);
    if let Some(roles) = roles {
        builder = builder.authorizer(roles.clone());
    }
    Arc::new(builder.build())
}

/// A role policy is for TLS servers (roles come from client certificates;
/// without a `cafile` every client gets the policy's "no role" entry): with
/// one, every chosen server must be a TLS entry.
fn check_roles(config: &SimConfig, names: &[String], options: &SimulatorOptions) -> Result<(), SimError> {
    if options.roles.is_none() {
        return Ok(());
    }
    for name in names {
        let endpoint = config
            .server_list
            .get(name)
            .map(|s| s.endpoint(name))
            .transpose()
            .map_err(wrap)?;
        if !matches!(endpoint, Some(Endpoint::Tls { .. })) {
            return Err(SimError::Unsupported(format!(
                "--roles: server_list.{name} is not a TLS server (\"comm\": \"tls\"); \
                 roles come from client certificates"
            )));
        }
    }
    Ok(())
}

fn wrap(error: ConfigError) -> SimError {
    SimError::Config {
        origin: "configuration".to_owned(),
        error,
    }
}

/// The server entries to serve: every one with `all`, else those of
/// `servers`, else the one of `modbus_server` (default `server`, or the only one).
fn server_names(config: &SimConfig, options: &SimulatorOptions) -> Result<Vec<String>, SimError> {
    if options.all_servers {
        return Ok(config.server_list.keys().cloned().collect());
    }
    let mut wanted: Vec<&str> = options.servers.iter().map(String::as_str).collect();
    if wanted.is_empty() {
        let (name, _) = pick(
            &config.server_list,
            options.modbus_server.as_deref(),
            "server",
            "modbus_server",
        )
        .map_err(wrap)?;
        wanted.push(name);
    }
    let mut names: Vec<String> = Vec::new();
    for w in wanted {
        let (name, _) = pick(&config.server_list, Some(w), "server", "modbus_server").map_err(wrap)?;
        if names.iter().any(|n| n == name) {
            return Err(wrap(ConfigError::new(
                "modbus_server",
                format!("{name:?}"),
                "chosen twice",
            )));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// The checked `time_scale` option.
fn time_scale(options: &SimulatorOptions) -> Result<f64, SimError> {
    let time_scale = options.time_scale.unwrap_or(1.0);
    if !time_scale.is_finite() || time_scale < 0.0 {
        return Err(SimError::Unsupported(format!(
            "time_scale = {time_scale}: must be a number, 0 or more (1: real time)"
        )));
    }
    Ok(time_scale)
}

/// The device of a CSV register map, named after the file.
fn csv_device(path: &Path, options: &SimulatorOptions) -> Result<(String, SimDevice), SimError> {
    let map = csv::RegisterMap::read(path).map_err(SimError::RegisterMap)?;
    let name = path
        .file_stem()
        .map_or_else(|| "device".to_owned(), |s| s.to_string_lossy().into_owned());
    let device = SimDevice::build_in(
        &name,
        &map.device,
        &options.actions,
        path.parent(),
        time_scale(options)?,
    )
    .map_err(|e| SimError::RegisterMap(map.locate(path, &e)))?;
    Ok((name, device.with_names(map.names)))
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
        for (name, server) in &config.server_list {
            server.endpoint(name).map_err(wrap)?;
            server.unit_ids(name).map_err(wrap)?;
        }
        let names = server_names(&config, &options)?;
        check_roles(&config, &names, &options)?;
        let mut servers = Vec::with_capacity(names.len());
        for name in &names {
            servers.push(Self::build_server(&config, name, &options, base_dir)?);
        }
        let inner = servers
            .first()
            .cloned()
            .ok_or_else(|| wrap(ConfigError::new("server_list", "(none chosen)", "no server to serve")))?;
        if let Some(path) = &options.state_file {
            let kept: Vec<state::Kept> = servers.iter().flat_map(|s| s.kept()).collect();
            let served: Vec<state::Served<'_>> = kept.iter().map(|(s, n, d)| (s.as_str(), n.as_str(), &**d)).collect();
            state::restore(path, &served)?;
        }
        Ok(Self { config, inner, servers })
    }

    /// The server entry `server_name` with its device, ready to start.
    fn build_server(
        config: &SimConfig,
        server_name: &str,
        options: &SimulatorOptions,
        base_dir: Option<&Path>,
    ) -> Result<Arc<Inner>, SimError> {
        let server = config.server_list.get(server_name).ok_or_else(|| {
            wrap(ConfigError::new(
                "modbus_server",
                format!("{server_name:?}"),
                "no such entry",
            ))
        })?;
        let make_device = || match &options.register_map {
            Some(path) => csv_device(path, options),
            None => {
                let wanted = server.device.as_deref().or(options.modbus_device.as_deref());
                let key = if server.device.is_some() {
                    format!("server_list.{server_name}.device")
                } else {
                    "modbus_device".to_owned()
                };
                let (name, cfg) = pick(&config.device_list, wanted, "device", &key).map_err(wrap)?;
                let device =
                    SimDevice::build_in(name, cfg, &options.actions, base_dir, time_scale(options)?).map_err(wrap)?;
                Ok((name.to_owned(), device))
            }
        };
        let (device_name, device) = make_device()?;
        let device = Arc::new(device);
        // `device_ids`: the first unit serves `device`, each other one a copy of its own.
        let mut units = Vec::new();
        for (i, id) in server
            .unit_ids(server_name)
            .map_err(wrap)?
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let copy = if i == 0 {
                device.clone()
            } else {
                Arc::new(make_device()?.1)
            };
            units.push((id, copy));
        }
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
        let monitor = Arc::new(Monitor::new());
        let metrics = Arc::new(coilwork_core::Metrics::new());
        let engine = engine(
            server,
            device.clone(),
            &units,
            monitor.clone(),
            Arc::clone(&metrics),
            options.roles.as_ref(),
        );
        Ok(Arc::new(Inner {
            server_name: server_name.to_owned(),
            device_name,
            endpoint,
            tls,
            device,
            units,
            engine,
            metrics,
            monitor,
            options: options.clone(),
            modbus: Mutex::new(Modbus::default()),
            shutdown: watch::Sender::new(false),
            http_running: watch::Sender::new(false),
            http_addr: Mutex::new(None),
            created: Instant::now(),
            saver: Mutex::new(None),
        }))
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
        let mut local_addrs = Vec::with_capacity(self.servers.len());
        for inner in &self.servers {
            inner.shutdown.send_replace(false);
            match inner.start_modbus(None).await {
                Ok(addr) => local_addrs.push(addr),
                Err(e) => {
                    // Never a partial start.
                    self.servers.iter().for_each(|s| s.stop_all());
                    return Err(e);
                }
            }
        }
        if let Some(path) = &self.inner.options.state_file {
            let devices = self.servers.iter().flat_map(|s| s.kept()).collect();
            let saver = state::keep_saved(path.clone(), devices, self.inner.monitor.clone(), self.all_stopped());
            *lock(&self.inner.saver) = Some(tokio::spawn(saver));
        }
        let http_addr = match http::address(&self.inner.options) {
            Some((host, port)) => match http::start(self.servers.clone(), &host, port).await {
                Ok(addr) => Some(addr),
                Err(e) => {
                    self.servers.iter().for_each(|s| s.stop_all());
                    return Err(e);
                }
            },
            None => None,
        };
        Ok(SimulatorHandle {
            servers: self.servers.clone(),
            local_addr: local_addrs.first().copied().flatten(),
            local_addrs,
            http_addr,
        })
    }

    /// Completes once the simulator is asked to stop and every Modbus
    /// server has stopped (no request can change a register any more).
    fn all_stopped(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut shutdown = self.inner.shutdown_signal();
        let servers = self.servers.clone();
        async move {
            let _ = shutdown.wait_for(|s| *s).await;
            for s in &servers {
                let handle = lock(&s.modbus).handle.clone();
                if let Some(h) = handle {
                    h.stopped().await;
                }
            }
        }
    }

    /// Serves until [`Simulator::stop`] (or the handle) stops it.
    pub async fn run_forever(&self) -> Result<(), SimError> {
        let handle = self.start().await?;
        handle.stopped().await;
        Ok(())
    }

    /// Stops the simulator (Modbus and HTTP), if running; returns at once.
    pub fn stop(&self) {
        self.servers.iter().for_each(|s| s.stop_all());
    }

    /// `(server, device, description)` of every server served, the first
    /// being the one [`Simulator::server_name`] and the others accessors show.
    pub fn servers(&self) -> Vec<(String, String, Arc<SimDevice>)> {
        self.servers
            .iter()
            .map(|s| (s.server_name.clone(), s.device_name.clone(), s.device.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
