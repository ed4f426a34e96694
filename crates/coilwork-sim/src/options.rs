//! What a simulator runs: the server and device chosen, custom actions and
//! the HTTP settings.

use crate::actions::{ActionContext, CustomAction};
use coilwork_core::ExceptionCode;
use coilwork_core::engine::Authorizer;
use std::path::PathBuf;
use std::sync::Arc;

/// Which server and device to run, custom actions, and the HTTP settings.
#[derive(Clone, Default)]
pub struct SimulatorOptions {
    /// Name in `server_list` (default `server`, or the only one).
    pub modbus_server: Option<String>,
    /// More entries of `server_list` to serve at once (with `modbus_server`'s
    /// place taken by the first); empty: just `modbus_server`.
    pub servers: Vec<String>,
    /// Serve every entry of `server_list` at once.
    pub all_servers: bool,
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
    /// Save register values here when they change and at stop; restore them at start.
    pub state_file: Option<PathBuf>,
    /// Read the device from this CSV register map instead of `device_list`.
    pub register_map: Option<PathBuf>,
    /// Simulated seconds per real second for time-based actions (`None`: 1;
    /// 0 stops simulated time).
    pub time_scale: Option<f64>,
    /// Who may do what on the TLS servers (`--roles`): checked before every
    /// request, a denied one answers exception 01. Every chosen server must be TLS.
    pub roles: Option<Arc<dyn Authorizer>>,
    pub(crate) actions: Vec<(String, CustomAction)>,
}

impl std::fmt::Debug for SimulatorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorOptions")
            .field("modbus_server", &self.modbus_server)
            .field("servers", &self.servers)
            .field("all_servers", &self.all_servers)
            .field("modbus_device", &self.modbus_device)
            .field("http_host", &self.http_host)
            .field("http_port", &self.http_port)
            .field("web_app_path", &self.web_app_path)
            .field("time_scale", &self.time_scale)
            .field("register_map", &self.register_map)
            .field("state_file", &self.state_file)
            .field("http_token", &self.http_token.as_ref().map(|_| "<set>"))
            .field("http_allow_hosts", &self.http_allow_hosts)
            .field("roles", &self.roles.as_ref().map(|_| "<set>"))
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

    /// Runs simulated time `scale` times as fast as real time (0: stopped).
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = Some(scale);
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
